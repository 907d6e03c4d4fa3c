"""Disputes (chargebacks) in the sandbox, over real HTTP: the control API opens and resolves them, each PSP announces
them in its own words, signed like its other webhooks, and our verifiers read them; push-payment PSPs have none."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from psp.base import PspPayment, PspRequestRejected, WebhookEvent
from psp.http_connector import HttpPspConnector
from tests.psp.psp_testkit import (
    RunningSandbox,
    WebhookReceiver,
    captured_payment,
    refund_request,
    start_payment,
    verified,
    wait_for_webhooks,
)

DISPUTING_PSPS = ["card", "card_b", "ewallet", "ewallet_b"]
# The chargeback fee each charges when a dispute is lost (psp/sandbox/fees.py), for EUR.
CHARGEBACK_FEE_MINOR = {"card": 1500, "card_b": 2000, "ewallet": 1500, "ewallet_b": 1200}
# Each family's word for each stage, where its webhook says it.
RAW_WORDS = {
    "card": ("type", {"opened": "dispute.opened", "won": "dispute.won", "lost": "dispute.lost"}),
    "card_b": ("type", {"opened": "dispute.opened", "won": "dispute.won", "lost": "dispute.lost"}),
    "ewallet": ("eventType", {"opened": "NOTIFICATION_OF_CHARGEBACK", "won": "CHARGEBACK_REVERSED",
                              "lost": "SECOND_CHARGEBACK"}),
    "ewallet_b": ("notification", {"opened": {"topic": "claim.claim_open"}, "won": {"topic": "claim.claim_rejected"},
                                   "lost": {"topic": "claim.claim_accepted"}}),
}


async def open_dispute(
    http: httpx.AsyncClient, sandbox: RunningSandbox, psp: str, payment_id: str, amount: str = "50.00",
    reason_code: str = "10.4",
) -> httpx.Response:
    body = {"payment_id": payment_id, "amount": amount, "reason_code": reason_code}
    return await http.post(f"{sandbox.url}/control/{psp}/disputes", json=body)


async def resolve(
    http: httpx.AsyncClient, sandbox: RunningSandbox, psp: str, dispute_id: str, outcome: Any
) -> httpx.Response:
    return await http.post(f"{sandbox.url}/control/{psp}/disputes/{dispute_id}/resolve", json={"outcome": outcome})


async def dispute_events(
    connector: HttpPspConnector, receiver: WebhookReceiver, payment_id: str, count: int
) -> list[WebhookEvent]:
    """The payment's dispute webhooks, verified by our verifier for the PSP (its payment webhooks left out)."""
    await wait_for_webhooks(receiver, payment_id, count=count)
    return [e for e in verified(connector, receiver, payment_id) if e.kind == "dispute"]


@pytest.mark.parametrize("psp", DISPUTING_PSPS)
@pytest.mark.parametrize("outcome", ["won", "lost"])
async def test_a_dispute_opens_and_resolves_with_webhooks_in_the_psps_words(
    psp: str, outcome: str, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox,
    receiver: WebhookReceiver,
) -> None:
    connector = every_psp[psp]
    payment = await captured_payment(psp, connector, http)
    await wait_for_webhooks(receiver, payment.payment_id)  # the capture's

    opened = await open_dispute(http, sandbox, psp, payment.payment_id, "30.00", "10.4")

    assert opened.status_code == 201
    dispute_id = opened.json()["dispute_id"]
    assert dispute_id.startswith(f"{psp}_dp_") and opened.json() == {"dispute_id": dispute_id}
    [first] = await dispute_events(connector, receiver, payment.payment_id, count=2)
    resolved = await resolve(http, sandbox, psp, dispute_id, outcome)
    assert (resolved.status_code, resolved.json()) == (200, {"dispute_id": dispute_id, "status": outcome})
    [_, last] = await dispute_events(connector, receiver, payment.payment_id, count=3)

    common = dict(psp=psp, payment_id=payment.payment_id, psp_reference=payment.psp_reference, amount_minor=3000,
                  currency="EUR", kind="dispute", dispute_id=dispute_id, reason_code="10.4")
    assert first == WebhookEvent(**common, event_id=first.event_id, status="opened", occurred_at=first.occurred_at)
    fee_minor = CHARGEBACK_FEE_MINOR[psp] if outcome == "lost" else None
    assert last == WebhookEvent(**common, event_id=last.event_id, status=outcome, occurred_at=last.occurred_at,
                                fee_minor=fee_minor)
    where, words = RAW_WORDS[psp]
    raw = [r.json[where] for r in receiver.for_payment(payment.payment_id)][1:]
    if psp == "ewallet_b":  # the topic inside the notification envelope
        raw = [{"topic": r["topic"]} for r in raw]
    assert raw == [words["opened"], words[outcome]]


@pytest.mark.parametrize("psp", DISPUTING_PSPS)
async def test_resolving_twice_is_a_conflict_and_sends_nothing_more(
    psp: str, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox,
    receiver: WebhookReceiver,
) -> None:
    payment = await captured_payment(psp, every_psp[psp], http)
    dispute_id = (await open_dispute(http, sandbox, psp, payment.payment_id)).json()["dispute_id"]
    assert (await resolve(http, sandbox, psp, dispute_id, "lost")).status_code == 200
    await dispute_events(every_psp[psp], receiver, payment.payment_id, count=3)

    for outcome in ("lost", "won"):
        again = await resolve(http, sandbox, psp, dispute_id, outcome)
        assert again.status_code == 409
        assert again.json()["error"] == "dispute_already_resolved"


@pytest.mark.parametrize("psp", ["paybybank", "paybybank_b", "crypto", "crypto_b"])
async def test_push_payments_have_no_disputes(
    psp: str, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox,
    receiver: WebhookReceiver,
) -> None:
    payment = await captured_payment(psp, every_psp[psp], http)

    refused = await open_dispute(http, sandbox, psp, payment.payment_id)

    assert refused.status_code == 409 and refused.json()["error"] == "disputes_not_supported"
    assert not [e for e in verified(every_psp[psp], receiver, payment.payment_id) if e.kind == "dispute"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"amount": "50.01"}, 422, "amount_exceeds_captured"),
        ({"amount": "0.00"}, 422, "invalid_amount"),
        ({"amount": "-5.00"}, 422, "invalid_amount"),
        ({"amount": "10.001"}, 422, "amount_precision"),
        ({"amount": 10}, 422, "invalid_request"),  # a decimal string, never a number
        ({"reason_code": ""}, 422, "invalid_request"),
        ({"reason_code": "x" * 51}, 422, "invalid_request"),
        ({"payment_id": "pay_never_created"}, 404, "payment_not_found"),
        ({"colour": "blue"}, 422, "invalid_request"),
    ],
)
async def test_a_dispute_the_sandbox_cannot_open_is_refused_with_a_clear_error(
    body: dict[str, Any], status: int, error: str, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient,
    sandbox: RunningSandbox,
) -> None:
    payment = await captured_payment("card", every_psp["card"], http)
    request = {"payment_id": payment.payment_id, "amount": "50.00", "reason_code": "10.4"} | body

    refused = await http.post(f"{sandbox.url}/control/card/disputes", json=request)

    assert refused.status_code == status
    assert refused.json()["error"] == error and refused.json()["message"]


async def test_only_a_captured_payment_can_be_disputed_and_no_more_than_is_left(
    every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    payment_id, _ = await start_payment("card", every_psp["card"], http, "lost")  # pending forever
    refused = await open_dispute(http, sandbox, "card", payment_id)
    assert (refused.status_code, refused.json()["error"]) == (409, "payment_not_captured")

    payment = await captured_payment("card", every_psp["card"], http)
    assert (await open_dispute(http, sandbox, "card", payment.payment_id, "40.00")).status_code == 201
    refused = await open_dispute(http, sandbox, "card", payment.payment_id, "10.01")
    assert (refused.status_code, refused.json()["error"]) == (422, "amount_exceeds_captured")
    assert (await open_dispute(http, sandbox, "card", payment.payment_id, "10.00")).status_code == 201


async def test_unknown_psps_disputes_and_outcomes_are_refused(http: httpx.AsyncClient, sandbox: RunningSandbox,
                                                              every_psp: dict[str, HttpPspConnector]) -> None:
    refused = await open_dispute(http, sandbox, "nopsp", "pay_1")
    assert (refused.status_code, refused.json()["error"]) == (404, "unknown_psp")
    refused = await resolve(http, sandbox, "card", "card_dp_0000", "lost")
    assert (refused.status_code, refused.json()["error"]) == (404, "dispute_not_found")
    payment = await captured_payment("card", every_psp["card"], http)
    dispute_id = (await open_dispute(http, sandbox, "card", payment.payment_id)).json()["dispute_id"]
    refused = await resolve(http, sandbox, "card_b", dispute_id, "lost")  # card's dispute, not card_b's
    assert (refused.status_code, refused.json()["error"]) == (404, "dispute_not_found")
    for outcome in ("accepted", None, "WON"):
        refused = await resolve(http, sandbox, "card", dispute_id, outcome)
        assert (refused.status_code, refused.json()["error"]) == (422, "invalid_request")


async def test_a_disputed_amount_cannot_be_refunded_until_the_merchant_wins(
    every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    connector = every_psp["ewallet"]
    payment: PspPayment = await captured_payment("ewallet", connector, http)
    dispute_id = (await open_dispute(http, sandbox, "ewallet", payment.payment_id, "30.00")).json()["dispute_id"]

    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_refund(refund_request(payment, 2001))

    assert rejected.value.code == "refund_exceeds_captured"
    assert (await resolve(http, sandbox, "ewallet", dispute_id, "won")).status_code == 200
    assert (await connector.create_refund(refund_request(payment, 5000))).status == "pending"
