"""The sandbox service itself: idempotency, cancel, control modes, validation, webhook retries and shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from psp.base import PspNotFound, PspRequestRejected, PspTransientError
from psp.sandbox import SandboxConfig, create_app
from psp.ewallet_connector import EwalletConnector
from psp.sandbox_connector import SandboxConnector
from tests.psp.psp_testkit import (
    WEBHOOK_SECRET,
    RunningSandbox,
    WebhookReceiver,
    bound_socket,
    deliveries,
    eventually,
    payment_request,
    psp_mode,
    serve,
    stays,
    verified,
)


def create_body(merchant_reference: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "merchant_reference": merchant_reference,
        "amount": "50.00",
        "currency": "EUR",
        "method": "card",
        "return_url": "https://casino.example/return",
        "customer_id": "player_1",
        "metadata": {"sandbox_scenario": "lost"},
    }
    return body | overrides


async def test_healthz(http: httpx.AsyncClient, sandbox: RunningSandbox) -> None:
    response = await http.get(f"{sandbox.url}/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# -- idempotency ----------------------------------------------------------------------------------


async def test_retried_create_returns_the_first_payment(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payment_request()

    first = await card.create_payment(req)
    second = await card.create_payment(req)

    assert second.psp_reference == first.psp_reference
    await eventually(lambda: receiver.for_payment(req.payment_id))
    await stays(lambda: len(receiver.for_payment(req.payment_id)) == 1, duration=0.2)


async def test_concurrent_slow_creates_with_one_key_make_one_payment(card: SandboxConnector) -> None:
    req = payment_request("slow")

    first, second = await asyncio.gather(card.create_payment(req), card.create_payment(req))

    assert first.psp_reference == second.psp_reference


async def test_idempotency_key_reused_with_another_body_is_422(
    http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    headers = {"Idempotency-Key": "key-reuse-1"}
    url = f"{sandbox.url}/card/v1/payments"
    assert (await http.post(url, json=create_body("pay_reuse_1"), headers=headers)).status_code == 201

    response = await http.post(url, json=create_body("pay_reuse_1", amount="60.00"), headers=headers)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"


async def test_same_merchant_reference_under_another_key_is_a_conflict(
    card: SandboxConnector, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = payment_request("lost")
    await card.create_payment(req)

    response = await http.post(
        f"{sandbox.url}/card/v1/payments", json=create_body(req.payment_id), headers={"Idempotency-Key": "other"}
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_merchant_reference"


# -- cancel ---------------------------------------------------------------------------------------


async def test_cancel_a_pending_payment_without_webhooks(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payment_request("lost")
    await card.create_payment(req)

    cancelled = await card.cancel_payment(req.payment_id)

    assert cancelled.status == "cancelled"
    assert (await card.cancel_payment(req.payment_id)).status == "cancelled"  # idempotent
    assert (await card.get_payment(req.payment_id)).status == "cancelled"
    await stays(lambda: not receiver.for_payment(req.payment_id), duration=0.2)


async def test_cancel_a_challenged_payment_sends_a_cancelled_webhook(
    card: SandboxConnector, receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    req = payment_request("challenge")
    created = await card.create_payment(req)

    cancelled = await card.cancel_payment(req.payment_id)

    assert cancelled.status == "cancelled" and cancelled.redirect_url is None
    await eventually(lambda: receiver.for_payment(req.payment_id))
    [delivery] = receiver.for_payment(req.payment_id)
    assert delivery.json["type"] == "payment.cancelled"
    [event] = verified(card, receiver, req.payment_id)
    assert event.status == "cancelled"
    assert created.redirect_url
    page = await http.get(created.redirect_url)
    assert "<form" not in page.text  # the challenge is closed


async def test_cancel_a_captured_payment_is_refused(card: SandboxConnector) -> None:
    req = payment_request("no_webhook")
    await card.create_payment(req)
    await eventually(lambda: _captured(card, req.payment_id))

    with pytest.raises(PspRequestRejected) as refused:
        await card.cancel_payment(req.payment_id)

    assert refused.value.code == "not_cancellable"


async def test_cancel_an_unknown_payment_is_not_found(card: SandboxConnector) -> None:
    with pytest.raises(PspNotFound):
        await card.cancel_payment("pay_never_created")


# -- control modes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "code"), [("down", "psp_unavailable"), ("error", "psp_internal_error")])
async def test_down_and_error_modes_are_transient_failures(
    mode: str,
    code: str,
    card: SandboxConnector,
    ewallet: EwalletConnector,
    http: httpx.AsyncClient,
    sandbox: RunningSandbox,
) -> None:
    existing = payment_request("lost")
    await card.create_payment(existing)

    async with psp_mode(http, sandbox, "card", mode):
        assert (await http.get(f"{sandbox.url}/control/card")).json()["mode"] == mode
        with pytest.raises(PspTransientError) as failed:
            await card.create_payment(payment_request())
        assert failed.value.code == code
        with pytest.raises(PspTransientError):
            await card.get_payment(existing.payment_id)
        with pytest.raises(PspTransientError):
            await card.cancel_payment(existing.payment_id)
        # Only that PSP is affected.
        assert (await ewallet.create_payment(payment_request("lost", method="ewallet"))).status == "pending"

    assert (await card.get_payment(existing.payment_id)).status == "pending"


async def test_slow_mode_delays_answers(
    card: SandboxConnector, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    async with (
        httpx.AsyncClient(timeout=sandbox.config.slow_seconds / 5) as impatient_http,
        psp_mode(http, sandbox, "card", "slow"),
    ):
        started = time.monotonic()
        created = await card.create_payment(payment_request("lost"))
        assert time.monotonic() - started >= sandbox.config.slow_seconds
        assert created.status == "pending"

        impatient = SandboxConnector("card", card.methods, f"{sandbox.url}/card", impatient_http)
        with pytest.raises(PspTransientError) as timed_out:
            await impatient.create_payment(payment_request("lost"))
        assert timed_out.value.code == "psp_timeout"


async def test_control_validates_psp_and_mode(http: httpx.AsyncClient, sandbox: RunningSandbox) -> None:
    unknown = await http.post(f"{sandbox.url}/control/bitcoin", json={"mode": "down"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_psp"
    bad_mode = await http.post(f"{sandbox.url}/control/card", json={"mode": "sideways"})
    assert bad_mode.status_code == 422
    assert (await http.get(f"{sandbox.url}/control/card")).json() == {"psp": "card", "mode": "up"}


# -- validation -----------------------------------------------------------------------------------


async def test_unknown_psp_is_a_json_404(http: httpx.AsyncClient, sandbox: RunningSandbox) -> None:
    for response in (
        await http.post(f"{sandbox.url}/bitcoin/v1/payments", json=create_body("pay_x")),
        await http.get(f"{sandbox.url}/bitcoin/v1/payments/pay_x"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_psp"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"amount": "50.001"}, "amount_precision"),
        ({"amount": "-5.00"}, "invalid_amount"),
        ({"amount": 50}, "invalid_request"),
        ({"currency": "XXX"}, "unsupported_currency"),
        ({"method": "ewallet"}, "unsupported_method"),
        ({"return_url": "javascript:alert(1)"}, "invalid_request"),
        ({"metadata": {"sandbox_scenario": "explode"}}, "unknown_scenario"),
        ({"unexpected_field": "x"}, "invalid_request"),
    ],
)
async def test_bad_create_bodies_are_422(
    overrides: dict[str, object], code: str, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    response = await http.post(f"{sandbox.url}/card/v1/payments", json=create_body("pay_invalid", **overrides))

    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


async def test_method_the_psp_does_not_take_is_rejected(card: SandboxConnector) -> None:
    with pytest.raises(PspRequestRejected) as rejected:
        await card.create_payment(payment_request(method="ewallet"))
    assert rejected.value.code == "unsupported_method"


async def test_challenge_routes_for_unknown_reference_are_404(
    http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    url = f"{sandbox.url}/card/challenge/card_nope"
    assert (await http.get(url)).status_code == 404
    assert (await http.post(url, data={"outcome": "success"})).status_code == 404


# -- webhook delivery -----------------------------------------------------------------------------


async def test_webhook_is_retried_until_2xx(
    card: SandboxConnector, receiver: WebhookReceiver, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = payment_request()
    receiver.fail_first[req.payment_id] = 2
    await card.create_payment(req)

    await eventually(lambda: receiver.for_payment(req.payment_id))

    log = await eventually(lambda: _log_with_outcome(http, sandbox, req.payment_id, "delivered"))
    assert [(d["attempt"], d["status_code"], d["outcome"]) for d in log] == [
        (1, 500, "retrying"), (2, 500, "retrying"), (3, 200, "delivered"),
    ]
    assert len({d["event_id"] for d in log}) == 1


async def test_webhook_delivery_gives_up_after_the_last_retry(
    card: SandboxConnector, receiver: WebhookReceiver, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = payment_request()
    receiver.fail_first[req.payment_id] = 1000
    await card.create_payment(req)

    log = await eventually(lambda: _log_with_outcome(http, sandbox, req.payment_id, "gave_up"))

    assert len(log) == 1 + len(sandbox.config.webhook_retry_delays)
    assert all(d["status_code"] == 500 for d in log)
    assert not receiver.for_payment(req.payment_id)


async def test_unreachable_webhook_endpoint_is_logged_and_shutdown_cancels_pending_retries(
    http: httpx.AsyncClient,
) -> None:
    closed_sock, dead_url = bound_socket()
    closed_sock.close()
    sock, url = bound_socket()
    config = SandboxConfig(
        webhook_url_template=dead_url + "/webhooks/{psp}",
        webhook_secret=WEBHOOK_SECRET,
        public_url=url,
        settle_delay_seconds=0.01,
        webhook_retry_delays=(60.0,),  # shutdown must not wait for this
    )
    app = create_app(config)
    card = SandboxConnector("card", frozenset({"card"}), f"{url}/card", http)
    req = payment_request()

    async with serve(app, sock):
        await card.create_payment(req)
        running = RunningSandbox(url, config)
        log = await eventually(lambda: _log_with_outcome(http, running, req.payment_id, "retrying"))
        assert log[0]["status_code"] is None and "ConnectError" in log[0]["error"]
        started = time.monotonic()
    assert time.monotonic() - started < 10


async def _captured(connector: SandboxConnector, payment_id: str) -> bool:
    return (await connector.get_payment(payment_id)).status == "captured"


async def _log_with_outcome(
    http: httpx.AsyncClient, sandbox: RunningSandbox, payment_id: str, outcome: str
) -> list[dict[str, Any]] | None:
    log = await deliveries(http, sandbox, payment_id)
    return log if log and log[-1]["outcome"] == outcome else None
