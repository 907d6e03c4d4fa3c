"""Refunds and chargebacks of a converted deposit on SQLite and PostgreSQL: the player gives back the credit's
share in the wallet currency at the deposit's locked rate, the house gives up the margin's share, the payment
currency leaves through house:fx; a deposit given back in full leaves the FX accounts where they were."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    InsufficientFunds,
    Ledger,
    RefundRefused,
    TransferRequest,
    assert_invariants,
    check_invariants,
    credit_deposit,
    house_account,
    open_dispute,
    record_payment,
    request_refund,
    resolve_dispute,
    settle_refund,
)
from ledger.fx import SHORTFALL_RETURN_KIND, FxConversion, fx_account, fx_conversions, fx_margin_account
from tests.fx.test_ledger_legs import DEPOSIT
from tests.ledger.money_helpers import T0, balance, payment, snapshot

WALLET, RECEIVABLES = "player:p1:EUR", "house:player_receivables:EUR"


async def converted(ledger: Ledger, engine: AsyncEngine, c: FxConversion = DEPOSIT) -> None:
    """A USD 100.00 deposit credited to the EUR wallet as 91.63 (mid 92.10, margin 0.47)."""
    await record_payment(engine, payment(c.reference, currency="USD", amount=c.from_minor))
    await credit_deposit(ledger, payment_id=c.reference, player_id="p1", psp="card", method="card", currency="USD",
                         captured_minor=c.from_minor, credit_minor=c.from_minor, fee_minor=None, now=T0,
                         conversion=c)


async def refund(ledger: Ledger, refund_id: str, amount: int, *, allow_shortfall: bool = False) -> object:
    return await request_refund(ledger, refund_id=refund_id, payment_id="pay_fx", client_id="c1", amount_minor=amount,
                                currency="USD", reason=None, funding="player", allow_shortfall=allow_shortfall, now=T0)


async def settle(ledger: Ledger, refund_id: str, outcome: str) -> None:
    await settle_refund(ledger, refund_id, outcome=outcome, psp_refund_reference=f"psp-{refund_id}",
                        failure_code=None if outcome == "succeeded" else "declined", fee_minor=None, method="card",
                        now=T0)


async def spend(ledger: Ledger, amount: int) -> None:
    await ledger.post_transfer(TransferRequest(f"bet:{amount}", WALLET, house_account("games", "EUR"), amount, "EUR",
                                               "bet", "round"))


async def fx_position(ledger: Ledger) -> dict[str, int]:
    return {name: (await balance(ledger, account))[0] for name, account in (
        ("wallet", WALLET), ("fx_usd", fx_account("USD")), ("fx_eur", fx_account("EUR")),
        ("margin", fx_margin_account("EUR")), ("psp_usd", "psp:card:USD"), ("receivables", RECEIVABLES))}


async def test_partial_then_full_refunds_give_back_the_credit_at_the_locked_rate(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    await converted(ledger, engine)
    before = await fx_position(ledger)
    assert before == {"wallet": 9163, "fx_usd": 10000, "fx_eur": -9210, "margin": 47, "psp_usd": -10000,
                      "receivables": 0}

    # 30.00 USD of 100.00: 27.49 EUR from the wallet (27.489 rounded up), 0.15 of the margin (0.141 up).
    first = await refund(ledger, "r1", 3000)
    assert first == await refund(ledger, "r1", 3000)  # the same request again holds nothing more
    assert await balance(ledger, WALLET) == (9163, 2749, 0)
    assert await balance(ledger, fx_account("USD")) == (10000, 3000, 0)
    await assert_invariants(engine)
    await settle(ledger, "r1", "succeeded")
    assert await fx_position(ledger) == {"wallet": 6414, "fx_usd": 7000, "fx_eur": -9210 + 2749 + 15, "margin": 32,
                                         "psp_usd": -7000, "receivables": 0}

    # A refused refund gives its share back to the pool; the last refund takes exactly what is left.
    await refund(ledger, "r2", 1000)
    await settle(ledger, "r2", "failed")
    assert await balance(ledger, WALLET) == (6414, 0, 0)
    await refund(ledger, "r3", 7000)
    assert await balance(ledger, WALLET) == (6414, 6414, 0)
    await settle(ledger, "r3", "succeeded")
    assert await fx_position(ledger) == {"wallet": 0, "fx_usd": 0, "fx_eur": 0, "margin": 0, "psp_usd": 0,
                                         "receivables": 0}
    with pytest.raises(RefundRefused) as refused:
        await refund(ledger, "r4", 1)
    assert refused.value.code == "refund_exceeds_refundable"
    await assert_invariants(engine)


async def test_a_short_wallet_is_refused_or_becomes_a_receivable_in_the_wallet_currency(
        engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    await converted(ledger, engine)
    await spend(ledger, 9000)
    untouched = await snapshot(engine)
    with pytest.raises(InsufficientFunds):
        await refund(ledger, "r1", 5000)  # 45.82 EUR asked of 1.63
    assert await snapshot(engine) == untouched

    short = await refund(ledger, "r1", 5000, allow_shortfall=True)
    # The row splits the USD refund as the wallet share is split: 1.63 of 45.82 EUR held, the rest owed.
    assert (short.held_minor, short.shortfall_minor) == (5000 * 163 // 4582, 5000 - 5000 * 163 // 4582)
    assert await balance(ledger, WALLET) == (163, 163, 0)
    assert await balance(ledger, RECEIVABLES) == (0, 4419, 0)
    assert await balance(ledger, "player:p1:USD") == (0, 0, 0)
    await settle(ledger, "r1", "succeeded")
    assert await balance(ledger, RECEIVABLES) == (-4419, 0, 0)
    assert await balance(ledger, WALLET) == (0, 0, 0)
    await assert_invariants(engine)


async def test_a_lost_chargeback_takes_the_share_and_a_won_one_gives_it_back(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    await converted(ledger, engine)
    await converted(ledger, engine, replace(DEPOSIT, reference="pay_fx2", rate_id="fxq_3"))
    await spend(ledger, 9163 * 2 - 7163)  # 71.63 EUR left of 183.26

    async def dispute(dispute_id: str, payment_id: str, outcome: str) -> None:
        await open_dispute(ledger, psp="card", dispute_id=dispute_id, payment_id=payment_id, amount_minor=10000,
                           currency="USD", reason_code="10.4", now=T0)
        await open_dispute(ledger, psp="card", dispute_id=dispute_id, payment_id=payment_id, amount_minor=10000,
                           currency="USD", reason_code="10.4", now=T0)  # a redelivered event moves nothing
        await assert_invariants(engine)
        await resolve_dispute(ledger, psp="card", dispute_id=dispute_id, outcome=outcome, fee_minor=None,
                              method="card", now=T0 + timedelta(days=30))

    await dispute("d1", "pay_fx", "won")
    # Held from the wallet while open, all of it back when won; the receivable reversed.
    assert await fx_position(ledger) == {"wallet": 7163, "fx_usd": 20000, "fx_eur": -18420, "margin": 94,
                                         "psp_usd": -20000, "receivables": 0}
    await dispute("d2", "pay_fx2", "lost")
    assert await fx_position(ledger) == {"wallet": 0, "fx_usd": 10000, "fx_eur": -9210, "margin": 47,
                                         "psp_usd": -10000, "receivables": -2000}
    for account in ("house:disputes:USD", "house:chargebacks:USD", "house:chargebacks:EUR"):
        assert (await balance(ledger, account))[0] == 0, account
    await assert_invariants(engine)


async def test_the_fx_invariant_finds_a_tampered_conversion_a_stray_move_and_an_excess_return(
        engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    await converted(ledger, engine)
    await refund(ledger, "r1", 3000)
    await settle(ledger, "r1", "succeeded")
    await assert_invariants(engine)

    async def violations() -> list[str]:
        return (await check_invariants(engine)).violations

    conversion = fx_conversions.c
    tampered = conversion.reference == "pay_fx"
    async with engine.begin() as conn:  # the same mid value, split otherwise than booked
        await conn.execute(update(fx_conversions).where(tampered).values(
            to_minor=conversion.to_minor - 1, margin_minor=conversion.margin_minor + 1))
    assert await violations() == ["fx conversion deposit pay_fx: its legs differ from it",
                                  "house:fx_margin:EUR: posted 32, its conversions and returns explain 33"]
    async with engine.begin() as conn:
        await conn.execute(update(fx_conversions).where(tampered).values(
            to_minor=conversion.to_minor + 1, margin_minor=conversion.margin_minor - 1))
    await assert_invariants(engine)

    await ledger.post_transfer(TransferRequest("stray", fx_account("EUR"), house_account("games", "EUR"), 100, "EUR",
                                               "bet", "round"))
    assert await violations() == ["house:fx:EUR: posted -6546, its conversions and returns explain -6446"]
    await ledger.post_transfer(TransferRequest("stray-back", house_account("games", "EUR"), fx_account("EUR"), 100,
                                               "EUR", "bet", "round"))
    await ledger.post_transfer(TransferRequest("fx:refund:forged:shortfall", RECEIVABLES, fx_account("EUR"), 6415,
                                               "EUR", SHORTFALL_RETURN_KIND, "pay_fx"))  # 1 more than is left
    assert await violations() == ["fx conversion deposit pay_fx: its refunds and chargebacks gave back other than "
                                  "its share"]
