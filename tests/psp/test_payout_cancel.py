"""Payout cancel: `cancel_payout` in every connector (request, answer parsing and errors per wire format, on a mock
transport), and `POST /{psp}/v1/payouts/{merchant_reference}/cancel` at every sandbox PSP over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from psp.base import PspDeclined, PspError, PspNotFound, PspPayout, PspRequestRejected, PspTransientError
from psp.http_connector import HttpPspConnector
from psp.sandbox import SandboxConfig, create_app
from psp.sandbox.app import Sandbox
from psp.sandbox.formats import FORMATS, Order, Snapshot
from psp.scenarios import FAMILIES, PSPS
from tests.psp.psp_testkit import (
    CONNECTOR_CLASSES,
    PSP_METHOD,
    RETRY_DELAYS,
    WEBHOOK_SECRET,
    RunningSandbox,
    WebhookReceiver,
    bound_socket,
    eventually,
    make_connector,
    payment_request,
    payout_request,
    psp_mode,
    serve,
    stays,
    verified,
    wait_for_webhooks,
)

FAMILY_PSPS = ["card", "ewallet", "paybybank", "crypto"]
SETTLE_DELAY = 0.3  # the slow-settling sandbox: long enough to cancel an approved payout before it is paid


# -- the connectors, on a mock transport ----------------------------------------------------------


def answering(psp: str, response: httpx.Response) -> tuple[HttpPspConnector, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return CONNECTOR_CLASSES[psp](psp, frozenset({PSP_METHOD[psp]}), f"http://psp.test/{psp}", http), seen


def snapshot(merchant_reference: str, status: str, kind: str = "payout") -> Snapshot:
    return Snapshot(kind, f"ref_{merchant_reference}", merchant_reference, status, 5050, 5050, "EUR")


@pytest.mark.parametrize("psp", PSPS)
async def test_cancel_payout_posts_to_the_payouts_cancel_path_and_parses_the_answer(psp: str) -> None:
    # The answer in the sandbox's words for this PSP's family (psp/sandbox/formats.py, written independently).
    answer = FORMATS[psp].resource(snapshot("po/1 x", "cancelled"))
    connector, seen = answering(psp, httpx.Response(200, json=answer))

    payout = await connector.cancel_payout("po/1 x")

    [request] = seen
    assert (request.method, request.url.raw_path.decode()) == ("POST", f"/{psp}/v1/payouts/po%2F1%20x/cancel")
    assert request.content == b"" and "idempotency-key" not in request.headers
    assert payout == PspPayout(
        psp=psp, payout_id="po/1 x", psp_reference="ref_po/1 x", status="cancelled", amount_minor=5050,
        currency="EUR",
    )


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("status", ["pending", "paid", "failed"])
async def test_cancel_payout_reports_whatever_status_the_psp_answers(psp: str, status: str) -> None:
    connector, _ = answering(psp, httpx.Response(200, json=FORMATS[psp].resource(snapshot("po_1", status))))

    assert (await connector.cancel_payout("po_1")).status == status


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize(
    ("status", "code", "error", "expected_code"),
    [
        (409, "not_cancellable", PspRequestRejected, "not_cancellable"),
        (409, None, PspRequestRejected, "psp_http_409"),
        (404, "payout_not_found", PspNotFound, "payout_not_found"),
        (404, None, PspNotFound, "payout_not_found"),
        (503, "psp_unavailable", PspTransientError, "psp_unavailable"),
    ],
)
async def test_cancel_payout_errors_in_each_providers_shape(
    psp: str, status: int, code: str | None, error: type[PspError], expected_code: str
) -> None:
    body = FORMATS[psp].error(status, code, "no") if code else None
    connector, _ = answering(psp, httpx.Response(status, json=body) if body else httpx.Response(status))

    with pytest.raises(PspError) as raised:
        await connector.cancel_payout("po_1")

    assert type(raised.value) is error and raised.value.code == expected_code


@pytest.mark.parametrize("psp", PSPS)
async def test_cancel_payout_refuses_an_answer_about_something_else(psp: str) -> None:
    wrongs = [snapshot("po_someone_else", "cancelled")]
    if FAMILIES[psp] == "card":  # the card's answers do not name their kind: a payment shows by its status
        wrongs.append(snapshot("po_1", "captured", kind="payment"))
    else:
        wrongs.append(snapshot("po_1", "cancelled", kind="payment"))
    for wrong in wrongs:
        connector, _ = answering(psp, httpx.Response(200, json=FORMATS[psp].resource(wrong)))
        with pytest.raises(PspError) as raised:
            await connector.cancel_payout("po_1")
        assert type(raised.value) is PspError and raised.value.code == "bad_psp_response", wrong


# -- the sandbox, over real HTTP -------------------------------------------------------------------


@dataclass(frozen=True)
class SlowSandbox:
    url: str
    sandbox: Sandbox  # the app's state, to act between two steps of the event loop


@pytest.fixture(scope="module")
async def slow_sandbox(receiver: WebhookReceiver) -> AsyncIterator[SlowSandbox]:
    """A sandbox whose approved payouts stay pending for SETTLE_DELAY, so they can be cancelled with a webhook."""
    sock, url = bound_socket()
    config = SandboxConfig(
        webhook_url_template=receiver.url + "/webhooks/{psp}",
        webhook_secret=WEBHOOK_SECRET,
        public_url=url,
        settle_delay_seconds=SETTLE_DELAY,
        webhook_retry_delays=RETRY_DELAYS,
    )
    app = create_app(config)
    async with serve(app, sock):
        yield SlowSandbox(url, app.state.sandbox)


async def _payout_status_is(connector: HttpPspConnector, payout_id: str, status: str) -> bool:
    return (await connector.get_payout(payout_id)).status == status


@pytest.mark.parametrize("psp", PSPS)
async def test_cancel_a_pending_payout_announces_it_and_it_never_pays(
    psp: str, slow_sandbox: SlowSandbox, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = make_connector(psp, slow_sandbox.url, http)
    req = payout_request(method=PSP_METHOD[psp])
    created = await connector.create_payout(req)
    assert created.status == "pending"

    cancelled = await connector.cancel_payout(req.payout_id)

    assert cancelled == PspPayout(psp, req.payout_id, created.psp_reference, "cancelled", 5000, "EUR")
    assert await connector.cancel_payout(req.payout_id) == cancelled  # idempotent: the same answer again
    await wait_for_webhooks(receiver, req.payout_id)
    [event] = verified(connector, receiver, req.payout_id)
    assert (event.psp, event.payment_id, event.psp_reference, event.status) == (
        psp, req.payout_id, created.psp_reference, "cancelled",
    )
    # Past the settle delay: still cancelled, and no second webhook (the settlement saw the cancel and stopped).
    await stays(lambda: len(receiver.for_payment(req.payout_id)) == 1, duration=2 * SETTLE_DELAY)
    assert (await connector.get_payout(req.payout_id)).status == "cancelled"


@pytest.mark.parametrize("psp", FAMILY_PSPS)
async def test_a_payout_cancelled_before_its_settlement_first_runs_never_pays(
    psp: str, slow_sandbox: SlowSandbox, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    """The settle task is scheduled by the create but runs later: a cancel in between must still stop it."""
    sandbox = slow_sandbox.sandbox
    order = Order(f"po_race_{uuid.uuid4().hex[:16]}", 5000, "EUR", PSP_METHOD[psp], "player_1", None, {}, None, "{}")

    status, _ = sandbox.create_payout(psp, order, "approve")
    payout = sandbox.payouts.find(psp, order.merchant_reference)
    sandbox.cancel(payout)  # same step of the event loop: the settle task has not started yet

    assert (status, payout.status) == (201, "cancelled")
    connector = make_connector(psp, slow_sandbox.url, http)
    await wait_for_webhooks(receiver, order.merchant_reference)
    await asyncio.sleep(2 * SETTLE_DELAY)
    assert [e.status for e in verified(connector, receiver, order.merchant_reference)] == ["cancelled"]
    assert (await connector.get_payout(order.merchant_reference)).status == "cancelled"


@pytest.mark.parametrize("psp", PSPS)
async def test_cancel_a_silent_payout_sends_no_webhook(
    psp: str, sandbox: RunningSandbox, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = make_connector(psp, sandbox.url, http)
    req = payout_request("lost", method=PSP_METHOD[psp])
    await connector.create_payout(req)

    assert (await connector.cancel_payout(req.payout_id)).status == "cancelled"
    assert (await connector.cancel_payout(req.payout_id)).status == "cancelled"

    assert (await connector.get_payout(req.payout_id)).status == "cancelled"
    await stays(lambda: not receiver.for_payment(req.payout_id), duration=0.2)


@pytest.mark.parametrize("psp", PSPS)
async def test_cancel_a_paid_or_failed_payout_is_refused(
    psp: str, sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    connector = make_connector(psp, sandbox.url, http)
    paid = payout_request("no_webhook", method=PSP_METHOD[psp])
    await connector.create_payout(paid)
    await eventually(lambda: _payout_status_is(connector, paid.payout_id, "paid"))
    declined = payout_request("decline", method=PSP_METHOD[psp])
    with pytest.raises(PspDeclined):
        await connector.create_payout(declined)

    for payout_id, status in ((paid.payout_id, "paid"), (declined.payout_id, "failed")):
        with pytest.raises(PspRequestRejected) as refused:
            await connector.cancel_payout(payout_id)
        assert refused.value.code == "not_cancellable"
        assert (await connector.get_payout(payout_id)).status == status


@pytest.mark.parametrize("psp", PSPS)
async def test_cancel_an_unknown_payout_is_not_found(psp: str, sandbox: RunningSandbox, http: httpx.AsyncClient) -> None:
    connector = make_connector(psp, sandbox.url, http)
    payment = payment_request("lost", method=PSP_METHOD[psp])
    await connector.create_payment(payment)

    for unknown in ("po_never_created", payment.payment_id):  # a payment's reference is not a payout's
        with pytest.raises(PspNotFound) as not_found:
            await connector.cancel_payout(unknown)
        assert not_found.value.code == "payout_not_found"
    assert (await connector.get_payment(payment.payment_id)).status in {"pending", "requires_action"}


async def test_cancel_answers_and_refusals_are_each_providers_own(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    cancelled: dict[str, dict[str, Any]] = {}
    refused: dict[str, tuple[int, dict[str, Any]]] = {}
    for psp in FAMILY_PSPS:
        connector = make_connector(psp, sandbox.url, http)
        lost, paid = payout_request("lost", method=PSP_METHOD[psp]), payout_request("no_webhook", method=PSP_METHOD[psp])
        await connector.create_payout(lost)
        await connector.create_payout(paid)
        await eventually(lambda: _payout_status_is(connector, paid.payout_id, "paid"))  # noqa: B023
        base = f"{sandbox.url}/{psp}/v1/payouts"
        cancelled[psp] = (await http.post(f"{base}/{lost.payout_id}/cancel")).json()
        response = await http.post(f"{base}/{paid.payout_id}/cancel")
        refused[psp] = (response.status_code, response.json())

    assert cancelled["card"]["status"] == "cancelled"
    assert (cancelled["ewallet"]["status"], cancelled["ewallet"]["kind"]) == ("CANCELLED", "PAYOUT")
    assert (cancelled["paybybank"]["status"], cancelled["paybybank"]["object"]) == ("cancelled", "payout")
    assert (cancelled["crypto"]["state"], cancelled["crypto"]["type"]) == ("cancelled", "withdrawal")
    assert {status for status, _ in refused.values()} == {409}
    assert refused["card"][1]["error"]["code"] == "not_cancellable"
    assert refused["ewallet"][1]["errorCode"] == "not_cancellable"
    assert (refused["paybybank"][1]["error_code"], refused["paybybank"][1]["status"]) == ("not_cancellable", 409)
    assert (refused["crypto"][1]["status"], refused["crypto"][1]["reason"]) == ("error", "not_cancellable")


@pytest.mark.parametrize(("mode", "code"), [("down", "psp_unavailable"), ("error", "psp_internal_error")])
async def test_cancel_payout_at_a_degraded_psp_is_transient(
    mode: str, code: str, sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    connector = make_connector("ewallet", sandbox.url, http)
    req = payout_request("lost", method="ewallet")
    await connector.create_payout(req)

    async with psp_mode(http, sandbox, "ewallet", mode):
        with pytest.raises(PspTransientError) as failed:
            await connector.cancel_payout(req.payout_id)
        assert failed.value.code == code

    assert (await connector.get_payout(req.payout_id)).status == "pending"
