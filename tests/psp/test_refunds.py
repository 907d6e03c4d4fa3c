"""Refunds at every sandbox PSP, end to end over real HTTP: connector → sandbox PSP (its own wire format) → signed
refund webhook → our verifier; the scenarios, partial and repeated refunds, over-refunds and idempotent replays."""

from __future__ import annotations

import functools
import operator

from dataclasses import replace

import httpx
import pytest

from psp.base import PspConnector, PspNotFound, PspPayment, PspRefund, PspRequestRejected, PspTransientError
from psp.http_connector import HttpPspConnector
from psp.scenarios import PSPS
from tests.psp.psp_testkit import (
    RunningSandbox,
    WebhookReceiver,
    captured_payment,
    eventually,
    psp_mode,
    refund_request,
    start_payment,
    stays,
    verified,
    wait_for_webhooks,
)

# What each PSP reports as its fee for refunding (any amount of) a EUR payment (psp/sandbox/fees.py): pay-by-bank
# and crypto report none.
REFUND_FEE_MINOR = {"card": 10, "card_b": 15, "ewallet": 20, "ewallet_b": 25, "paybybank": None,
                    "paybybank_b": None, "crypto": None, "crypto_b": None}
# Why a `decline` refund fails, in each family's words.
REFUND_FAILURE_CODE = {
    "card": "refund_declined", "card_b": "refund_declined", "ewallet": "wallet_closed",
    "ewallet_b": "payer_wallet_closed", "paybybank": "beneficiary_account_closed",
    "paybybank_b": "creditor_account_closed", "crypto": "refund_address_rejected",
    "crypto_b": "refund_address_rejected",
}
# Each PSP's raw webhook for a succeeded refund: (where the refund's status sits in the body, its word there).
RAW_SUCCEEDED = {
    "card": (("type",), "refund.succeeded"), "card_b": (("type",), "refund.succeeded"),
    "ewallet": (("eventType",), "REFUND_STATUS"), "ewallet_b": (("notification", "topic"), "reversal.completed"),
    "paybybank": (("type",), "refund.executed"),
    "paybybank_b": (("Data", "Resource", "Status"), "AcceptedSettlementCompleted"),
    "crypto": (("event",), "refund.updated"), "crypto_b": (("event",), "refund.updated"),
}


Captured = tuple[HttpPspConnector, PspPayment]


@pytest.fixture(params=PSPS)
async def captured(request: pytest.FixtureRequest, every_psp: dict[str, HttpPspConnector],
                   http: httpx.AsyncClient) -> Captured:
    """A PSP's connector, and a 50.00 EUR payment captured there."""
    connector = every_psp[request.param]
    return connector, await captured_payment(request.param, connector, http)


async def _refund_is(connector: PspConnector, refund_id: str, status: str) -> PspRefund | None:
    refund = await connector.get_refund(refund_id)
    return refund if refund.status == status else None


# -- the scenarios --------------------------------------------------------------------------------


async def test_a_refund_is_pending_then_succeeds_with_a_signed_webhook_and_the_fee(
    captured: Captured, receiver: WebhookReceiver
) -> None:
    connector, payment = captured
    psp = connector.name
    req = refund_request(payment, 2000)

    created = await connector.create_refund(req)

    assert (created.psp, created.refund_id, created.status) == (psp, req.refund_id, "pending")
    assert created.psp_reference.startswith(f"{psp}_") and created.psp_reference != payment.psp_reference
    assert (created.amount_minor, created.currency, created.failure_code, created.fee_minor) == (
        2000, "EUR", None, None,
    )
    await wait_for_webhooks(receiver, req.refund_id)
    [event] = verified(connector, receiver, req.refund_id)
    assert (event.kind, event.payment_id, event.psp_reference, event.status) == (
        "refund", req.refund_id, created.psp_reference, "succeeded",
    )
    assert (event.amount_minor, event.currency, event.fee_minor) == (2000, "EUR", REFUND_FEE_MINOR[psp])
    assert (event.dispute_id, event.reason_code, event.failure_code) == (None, None, None)
    path, word = RAW_SUCCEEDED[psp]
    assert functools.reduce(operator.getitem, path, receiver.for_payment(req.refund_id)[0].json) == word
    looked_up = await connector.get_refund(req.refund_id)
    assert looked_up == PspRefund(
        psp=psp, refund_id=req.refund_id, psp_reference=created.psp_reference, status="succeeded",
        amount_minor=2000, currency="EUR", fee_minor=REFUND_FEE_MINOR[psp],
    )


async def test_decline_is_accepted_then_fails_with_the_psps_failure_code(
    captured: Captured, receiver: WebhookReceiver
) -> None:
    connector, payment = captured
    psp = connector.name
    req = refund_request(payment, scenario="decline")

    created = await connector.create_refund(req)

    assert created.status == "pending"
    await wait_for_webhooks(receiver, req.refund_id)
    [event] = verified(connector, receiver, req.refund_id)
    assert (event.kind, event.status, event.failure_code, event.fee_minor) == (
        "refund", "failed", REFUND_FAILURE_CODE[psp], None,
    )
    refund = await connector.get_refund(req.refund_id)
    assert (refund.status, refund.failure_code, refund.fee_minor) == ("failed", REFUND_FAILURE_CODE[psp], None)
    # A failed refund gave nothing back: the whole payment can still be refunded.
    again = await connector.create_refund(refund_request(payment))
    assert again.status == "pending"


async def test_lost_is_accepted_and_then_nothing_ever_happens(
    captured: Captured, receiver: WebhookReceiver, sandbox: RunningSandbox
) -> None:
    connector, payment = captured
    req = refund_request(payment, 1000, scenario="lost")

    created = await connector.create_refund(req)

    assert created.status == "pending"
    await stays(lambda: not receiver.for_payment(req.refund_id), duration=10 * sandbox.config.settle_delay_seconds)
    assert (await connector.get_refund(req.refund_id)).status == "pending"
    # Still pending, so it still counts against what is left to refund.
    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_refund(refund_request(payment, 4001))
    assert rejected.value.code == "refund_exceeds_captured"


async def test_no_webhook_succeeds_silently_and_the_look_up_knows(
    captured: Captured, receiver: WebhookReceiver
) -> None:
    connector, payment = captured
    psp = connector.name
    req = refund_request(payment, scenario="no_webhook")

    await connector.create_refund(req)

    refund = await eventually(lambda: _refund_is(connector, req.refund_id, "succeeded"))
    assert refund.fee_minor == REFUND_FEE_MINOR[psp]
    await stays(lambda: not receiver.for_payment(req.refund_id))


# -- amounts: partial, repeated, too much ---------------------------------------------------------


async def test_partial_and_repeated_refunds_up_to_the_captured_amount_and_not_a_cent_more(captured: Captured) -> None:
    connector, payment = captured
    first = await connector.create_refund(refund_request(payment, 3000))
    await eventually(lambda: _refund_is(connector, first.refund_id, "succeeded"))

    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_refund(refund_request(payment, 2001))

    assert rejected.value.code == "refund_exceeds_captured"
    second = await connector.create_refund(refund_request(payment, 1500))  # pending: counts at once
    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_refund(refund_request(payment, 501))
    assert rejected.value.code == "refund_exceeds_captured"
    last = await connector.create_refund(refund_request(payment, 500))
    assert (second.status, last.status, last.amount_minor) == ("pending", "pending", 500)
    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_refund(refund_request(payment, 1))
    assert rejected.value.code == "refund_exceeds_captured"


async def test_a_crypto_underpayment_refunds_what_was_received_not_the_price(
    every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient
) -> None:
    crypto = every_psp["crypto"]
    payment = await captured_payment("crypto", crypto, http, scenario="underpaid")  # 90 % of 50.00 received
    assert payment.amount_minor == 4500

    with pytest.raises(PspRequestRejected) as rejected:
        await crypto.create_refund(refund_request(payment, 4501))

    assert rejected.value.code == "refund_exceeds_captured"
    assert (await crypto.create_refund(refund_request(payment, 4500))).status == "pending"


# -- idempotency ----------------------------------------------------------------------------------


async def test_a_replayed_create_answers_the_same_refund_and_refunds_once(
    captured: Captured, receiver: WebhookReceiver
) -> None:
    connector, payment = captured
    req = refund_request(payment)

    first = await connector.create_refund(req)
    replayed = await connector.create_refund(req)

    assert replayed == first
    await wait_for_webhooks(receiver, req.refund_id)
    await stays(lambda: len(receiver.for_payment(req.refund_id)) == 1)
    # Our refund id with another body is refused, not taken as a second refund.
    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_refund(replace(req, amount_minor=100))
    assert rejected.value.code == "idempotency_key_reused"


# -- refusals -------------------------------------------------------------------------------------


async def test_a_payment_the_psp_cannot_refund_is_refused(
    captured: Captured, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient
) -> None:
    connector, payment = captured
    psp = connector.name
    _, uncaptured = await start_payment(psp, connector, http, "lost")  # never settles
    other = "card" if psp != "card" else "card_b"
    elsewhere = await captured_payment(other, every_psp[other], http)
    unknown = replace(payment, payment_id="pay_unknown", psp_reference=f"{psp}_0000000000000000")

    for refused in (uncaptured, elsewhere, unknown):
        with pytest.raises(PspRequestRejected) as rejected:
            await connector.create_refund(refund_request(refused, 100))
        assert rejected.value.code == "payment_not_refundable", refused
    with pytest.raises(PspRequestRejected) as rejected:  # the payment's currency, or nothing
        await connector.create_refund(replace(refund_request(payment, 100), currency="USD"))
    assert rejected.value.code == "currency_mismatch"
    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_refund(refund_request(payment, 100, scenario="out_of_order"))
    assert rejected.value.code == "unknown_scenario"


@pytest.mark.parametrize("psp", PSPS)
async def test_an_unknown_refund_is_not_found(psp: str, every_psp: dict[str, HttpPspConnector]) -> None:
    with pytest.raises(PspNotFound) as missing:
        await every_psp[psp].get_refund("rf_never_created")

    assert missing.value.code == "refund_not_found"


async def test_a_psp_that_is_down_is_a_transient_error_for_refunds_too(
    every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    ewallet = every_psp["ewallet"]
    payment = await captured_payment("ewallet", ewallet, http)
    req = refund_request(payment)

    async with psp_mode(http, sandbox, "ewallet", "down"):
        with pytest.raises(PspTransientError) as down:
            await ewallet.create_refund(req)
        with pytest.raises(PspTransientError):
            await ewallet.get_refund(req.refund_id)

    assert down.value.code == "psp_unavailable"
    assert (await ewallet.create_refund(req)).status == "pending"  # nothing was taken meanwhile
