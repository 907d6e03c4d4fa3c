"""Converted deposits and payouts in the ledger: both legs through the FX accounts, every currency summing to zero,
booked once however often the step runs; the margin report reads the spread."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import InvalidTransfer, Ledger, assert_invariants, credit_deposit, margin, record_payment
from ledger.fx import FxConversion, conversion, fx_account, fx_margin_account, payout_hold, post_converted_payout
from tests.ledger.money_helpers import T0, balance, payment

DEPOSIT = FxConversion(reference="pay_fx", kind="deposit", player_id="p1", from_currency="USD", from_minor=10000,
                       to_currency="EUR", to_minor=9163, mid_minor=9210, margin_minor=47, rate="0.9210",
                       spread_bps=50, source="sandbox-fx", rate_id="fxq_1", expires_at="2026-12-01T12:01:00+00:00",
                       method="card", psp="card")
PAYOUT = FxConversion(reference="po_fx", kind="payout", player_id="p1", from_currency="USD", from_minor=5000,
                      to_currency="EUR", to_minor=4629, mid_minor=4605, margin_minor=24, rate="0.9210",
                      spread_bps=50, source="sandbox-fx", rate_id="fxq_2", expires_at="2026-12-01T12:01:00+00:00")


async def credit(ledger: Ledger) -> str | None:
    return await credit_deposit(ledger, payment_id="pay_fx", player_id="p1", psp="card", method="card",
                                currency="USD", captured_minor=10000, credit_minor=10000, fee_minor=None, now=T0,
                                conversion=DEPOSIT)


async def test_a_converted_deposit_and_payout_book_both_legs_once(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    await record_payment(engine, payment("pay_fx", currency="USD", amount=10000))
    assert await credit(ledger) == await credit(ledger) == "deposit:pay_fx:credit"  # a retried credit books once
    assert await balance(ledger, "player:p1:EUR") == (9163, 0, 0)
    assert await balance(ledger, "player:p1:USD") == (0, 0, 0)
    assert await balance(ledger, fx_account("USD")) == (10000, 0, 0)
    assert await balance(ledger, fx_account("EUR")) == (-9210, 0, 0)
    assert await balance(ledger, fx_margin_account("EUR")) == (47, 0, 0)
    assert await conversion(engine, "deposit", "pay_fx") == DEPOSIT
    await assert_invariants(engine)

    await ledger.hold(payout_hold(PAYOUT))
    assert await balance(ledger, "player:p1:EUR") == (9163, 4629, 0)
    await post_converted_payout(ledger, PAYOUT, T0)
    await post_converted_payout(ledger, PAYOUT, T0)  # a retried posting books once
    assert await balance(ledger, "player:p1:EUR") == (9163 - 4629, 0, 0)
    assert await balance(ledger, fx_account("EUR")) == (-9210 + 4605, 0, 0)
    assert await balance(ledger, fx_account("USD")) == (10000 - 5000, 0, 0)
    assert await balance(ledger, "house:payouts:USD") == (5000, 0, 0)
    assert await balance(ledger, fx_margin_account("EUR")) == (47 + 24, 0, 0)
    await assert_invariants(engine)

    rows = await margin(engine, created_from=T0 - timedelta(days=1), created_to=T0 + timedelta(days=1))
    assert [(r.currency, r.psp, r.fx_margin_minor) for r in rows if r.fx_margin_minor] == [("EUR", None, 24),
                                                                                          ("EUR", "card", 47)]


async def test_a_conversion_of_another_amount_is_refused(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    await record_payment(engine, payment("pay_fx", currency="USD", amount=10000))
    with pytest.raises(InvalidTransfer, match="not of this credit"):
        await credit_deposit(ledger, payment_id="pay_fx", player_id="p1", psp="card", method="card", currency="USD",
                             captured_minor=10000, credit_minor=10000, fee_minor=None, now=T0,
                             conversion=replace(DEPOSIT, from_minor=9000))
    assert await balance(ledger, fx_account("USD")) == (0, 0, 0)
