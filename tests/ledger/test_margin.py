"""The margin report on SQLite and PostgreSQL: each figure by its own row's time, per method, PSP and currency."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    Ledger,
    PayoutRecord,
    assert_invariants,
    book_fee,
    margin,
    open_dispute,
    record_payment,
    record_payout,
    record_uncredited_capture,
    request_refund,
    resolve_dispute,
    settle_refund,
)
from tests.ledger.money_helpers import PSP, T0, credited, payment


async def test_margin_per_method_psp_and_currency(ledger: Ledger, engine: AsyncEngine) -> None:
    day = timedelta(days=1)
    for i in range(4):  # four credited card deposits of 50.00, each with a 1.00 fee
        await credited(ledger, engine, f"pay_{i}", fee=100)
    await credited(ledger, engine, "pay_old", fee=100, at=T0 - 40 * day)  # outside the period
    await credited(ledger, engine, "pay_w", fee=35, psp="ewallet", method="ewallet")
    await record_payment(engine, payment("pay_rej", status="rejected"))
    await record_uncredited_capture(ledger, payment_id="pay_rej", psp=PSP, method="card", currency="EUR",
                                    captured_minor=3000, fee_minor=100, now=T0)
    for refund_id, payment_id, funding in (("r1", "pay_0", "player"), ("r2", "pay_rej", "uncredited")):
        await request_refund(ledger, refund_id=refund_id, payment_id=payment_id, client_id="c1",
                             amount_minor=1000 if funding == "player" else 3000, currency="EUR", reason=None,
                             funding=funding, allow_shortfall=False, now=T0)
        await settle_refund(ledger, refund_id, outcome="succeeded", psp_refund_reference="x", failure_code=None,
                            fee_minor=20, method="card", now=T0 + timedelta(hours=1))
    await open_dispute(ledger, psp=PSP, dispute_id="d1", payment_id="pay_1", amount_minor=5000, currency="EUR",
                       reason_code="10.4", now=T0)
    await resolve_dispute(ledger, psp=PSP, dispute_id="d1", outcome="lost", fee_minor=1500, method="card",
                          now=T0 + day)
    await book_fee(ledger, operation="payout", reference="po_1", psp=PSP, method="card", currency="EUR",
                   fee_minor=50, now=T0)
    await record_payout(engine, PayoutRecord("po_1", "c1", "p2", "EUR", 2000, "paid", T0, T0, method="card",
                                             psp=PSP))
    await record_payout(engine, PayoutRecord("po_2", "c1", "p2", "EUR", 9999, "failed", T0, T0, method="card",
                                             psp=PSP))

    rows = await margin(engine, created_from=T0 - 7 * day, created_to=T0 + 7 * day)
    card, wallet = rows
    assert (card.method, card.psp, card.currency) == ("card", PSP, "EUR")
    assert (card.deposits_count, card.deposits_minor) == (4, 20_000)
    assert (card.refunds_count, card.refunds_minor) == (1, 1000)  # the uncredited refund gave back no revenue
    assert (card.chargebacks_count, card.chargebacks_minor) == (1, 5000)
    assert card.fees_minor == 4 * 100 + 100 + 2 * 20 + 1500 + 50
    assert (card.payouts_count, card.payouts_minor) == (1, 2000)
    assert card.net_margin_minor == 20_000 - 1000 - 5000 - card.fees_minor - 2000
    assert card.chargeback_rate == "0.25"
    assert card.cost_per_deposit_minor == (2090 * 2 + 4) // 8 == 523  # 522.5 rounds half up
    assert (wallet.method, wallet.deposits_count, wallet.fees_minor, wallet.chargeback_rate,
            wallet.cost_per_deposit_minor) == ("ewallet", 1, 35, "0", 35)
    # Only the old deposit in its own period; a row without deposits has no rates.
    [old] = await margin(engine, created_from=T0 - 41 * day, created_to=T0 - 39 * day)
    assert (old.deposits_count, old.fees_minor, old.net_margin_minor) == (1, 100, 4900)
    [fees_only] = await margin(engine, created_from=T0 + day, created_to=T0 + 2 * day)
    assert (fees_only.deposits_count, fees_only.chargebacks_count, fees_only.fees_minor) == (0, 1, 1500)
    assert (fees_only.chargeback_rate, fees_only.cost_per_deposit_minor) == (None, None)
    await assert_invariants(engine)


