"""Fees the PSPs report: card, card_b and the e-wallet put their fee for every settled operation in their webhooks
and look-ups (their own wire format), computed from their price lists in integer minor units; pay-by-bank and crypto
report none, so their operations are priced with the routing file's cost model, which quotes the same lists."""

from __future__ import annotations

import httpx
import pytest

from payloop.money import MoneyError
from psp.base import PspDeclined
from psp.http_connector import HttpPspConnector, decimal_fee_minor
from psp.routing import default_routing_path, load_routing_file
from psp.sandbox.fees import (
    FEE_SCHEDULES,
    SETTLEMENT_FEE_SCHEDULES,
    fee_minor,
    settlement_fee_minor,
)
from psp.scenarios import PSPS
from tests.psp.psp_testkit import (
    PSP_METHOD,
    WebhookReceiver,
    captured_payment,
    eventually,
    payment_request,
    payout_request,
    start_payment,
    verified,
    wait_for_webhooks,
)

# For 50.00 EUR: card 1.4 % + 0.25, card_b 1.5 % + 0.30, e-wallet 2.5 %, ewallet_b 2.6 % + 0.10; payouts card 0.50,
# card_b 0.60, e-wallet 1 %, ewallet_b 1.2 %.
CAPTURE_FEE_MINOR = {"card": 95, "card_b": 105, "ewallet": 125, "ewallet_b": 140, "paybybank": None,
                     "paybybank_b": None, "crypto": None, "crypto_b": None}
PAYOUT_FEE_MINOR = {"card": 50, "card_b": 60, "ewallet": 50, "ewallet_b": 60, "paybybank": None, "paybybank_b": None,
                    "crypto": None, "crypto_b": None}


@pytest.mark.parametrize("psp", PSPS)
async def test_the_capture_fee_is_in_the_capture_webhook_and_the_look_up(
    psp: str, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    payment = await captured_payment(psp, every_psp[psp], http)

    assert payment.fee_minor == CAPTURE_FEE_MINOR[psp]
    connector = every_psp[psp]
    await eventually(lambda: any(e.status == "captured" for e in verified(connector, receiver, payment.payment_id)))
    events = verified(connector, receiver, payment.payment_id)
    # Only the capture is charged: a crypto payment's or pay-by-bank's earlier steps carry no fee either way.
    assert [(e.status, e.fee_minor) for e in events][-1] == ("captured", CAPTURE_FEE_MINOR[psp])
    assert all(e.fee_minor is None for e in events[:-1])


@pytest.mark.parametrize("psp", PSPS)
async def test_the_payout_fee_is_in_the_paid_webhook_and_the_look_up(
    psp: str, every_psp: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    req = payout_request(method=PSP_METHOD[psp])

    created = await every_psp[psp].create_payout(req)

    assert created.fee_minor is None  # nothing is charged before the money moved
    await wait_for_webhooks(receiver, req.payout_id)
    [event] = verified(every_psp[psp], receiver, req.payout_id)
    assert (event.kind, event.status, event.fee_minor) == ("payout", "paid", PAYOUT_FEE_MINOR[psp])
    assert (await every_psp[psp].get_payout(req.payout_id)).fee_minor == PAYOUT_FEE_MINOR[psp]


async def test_an_operation_that_did_not_settle_reports_no_fee(
    every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient
) -> None:
    lost_id, _ = await start_payment("card", every_psp["card"], http, "lost")
    declined = payment_request("decline")
    with pytest.raises(PspDeclined):
        await every_psp["card"].create_payment(declined)

    for payment_id, status in ((lost_id, "pending"), (declined.payment_id, "failed")):
        payment = await every_psp["card"].get_payment(payment_id)
        assert (payment.status, payment.fee_minor) == (status, None)


@pytest.mark.parametrize(
    ("psp", "amount_minor", "currency", "fee"),
    [
        ("card", 1001, "JPY", 44),  # 30 + 14.014 yen, rounded half-up
        ("card", 1050, "KWD", 265),  # 0.250 KWD + 14.7 fils → 265 fils
        ("ewallet", 1234, "EUR", 31),  # 30.85 cents → 31
        ("ewallet", 1230, "EUR", 31),  # 30.75 → 31
        ("ewallet", 1, "EUR", 0),  # a fee that rounds to nothing is reported as 0, not left out
    ],
)
async def test_fees_are_integer_minor_units_rounded_half_up_on_the_wire(
    psp: str, amount_minor: int, currency: str, fee: int, every_psp: dict[str, HttpPspConnector],
    http: httpx.AsyncClient,
) -> None:
    payment = await captured_payment(psp, every_psp[psp], http, amount_minor=amount_minor, currency=currency)

    assert (payment.amount_minor, payment.currency, payment.fee_minor) == (amount_minor, currency, fee)


def test_the_shipped_routing_file_quotes_the_psps_own_price_lists() -> None:
    """Where a PSP reports its fee the ledger books what it reports; the routing file's cost model (which also
    routes payments by price) says the same for the sandbox PSPs, so both agree to the cent. Pay-by-bank and crypto
    report none, but deduct theirs in their settlement: those price lists are the routing file's too."""
    routing = load_routing_file(default_routing_path())
    quoted = {
        "payment": lambda p: p.fee_minor, "payout": lambda p: p.payout_fee_minor,
        "refund": lambda p: p.refund_fee_minor, "dispute": lambda p: p.chargeback_fee_minor,
    }
    assert set(FEE_SCHEDULES) == {"card", "card_b", "ewallet", "ewallet_b"}
    assert set(SETTLEMENT_FEE_SCHEDULES) == set(PSPS)
    for psp, schedule in SETTLEMENT_FEE_SCHEDULES.items():
        config = routing.psp(psp)
        assert config is not None and set(schedule) <= set(quoted)
        for operation, fee_of in quoted.items():
            for currency in config.currencies:
                for amount_minor in (1, 999, 5000, 123_457, 10**13):
                    assert fee_of(config)(amount_minor, currency) == settlement_fee_minor(
                        psp, operation, amount_minor, currency), (psp, operation, currency)
                    if psp in FEE_SCHEDULES:
                        assert fee_minor(psp, operation, amount_minor, currency) == settlement_fee_minor(
                            psp, operation, amount_minor, currency)
    push_psps = ("paybybank", "paybybank_b", "crypto", "crypto_b")
    assert all(fee_minor(psp, "payment", 5000, "EUR") is None for psp in push_psps)
    # No chargebacks there, so no chargeback price either side.
    assert all("dispute" not in SETTLEMENT_FEE_SCHEDULES[psp] for psp in push_psps)
    # Refunds there: what a pay-by-bank credit transfer and a crypto send cost.
    assert (settlement_fee_minor("paybybank", "refund", 5000, "EUR"),
            settlement_fee_minor("crypto", "refund", 5000, "EUR")) == (20, 125)


@pytest.mark.parametrize(
    ("value", "currency", "fee"),
    [("0.95", "EUR", 95), ("0.00", "EUR", 0), ("0", "EUR", 0), ("0", "JPY", 0), ("30", "JPY", 30),
     ("0.001", "KWD", 1), ("15.00", "EUR", 1500)],
)
def test_a_decimal_fee_may_be_zero_unlike_an_amount(value: str, currency: str, fee: int) -> None:
    assert decimal_fee_minor(value, currency) == fee


@pytest.mark.parametrize(
    ("value", "currency"),
    [("-0.10", "EUR"), ("0.001", "EUR"), ("0.000", "EUR"), ("0.0", "JPY"), ("00", "EUR"), ("0.", "EUR"), ("", "EUR"),
     (0, "EUR"), (0.5, "EUR"), (None, "EUR"), ("1e3", "EUR"), ("0.95", "XXX")],
)
def test_a_malformed_decimal_fee_is_refused(value: object, currency: str) -> None:
    with pytest.raises((MoneyError, ValueError, TypeError)):
        decimal_fee_minor(value, currency)
