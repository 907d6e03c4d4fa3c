"""The payments record (facts and money), deposit credits with their fees, the ops list, payout fees and the margin
report, on SQLite and PostgreSQL; the invariants hold at the end of every scenario."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    CaptureConflict,
    InvalidAccount,
    InvalidTransfer,
    Ledger,
    PaymentFilter,
    PaymentMoney,
    PaymentNotFound,
    PayoutRecord,
    TransferConflict,
    TransferRequest,
    assert_invariants,
    book_fee,
    chargebacks_account,
    check_invariants,
    credit_deposit,
    disputes_account,
    fee_account,
    list_payments,
    open_dispute,
    parse_account,
    payment_money,
    player_receivables_account,
    record_payment,
    record_payout,
    record_uncredited_capture,
    request_refund,
    transfer_ids,
)
from ledger.models import payments, psp_fees
from tests.ledger.money_helpers import CLEARING, P1, PSP, T0, balance, credited, payment, row_counts, snapshot

FEES = fee_account(PSP, "EUR")


# ---- accounts ---------------------------------------------------------------------------------------------------


def test_the_new_house_accounts() -> None:
    assert fee_account("card_b", "EUR") == "house:fees:card_b:EUR"
    assert parse_account("house:fees:card_b:EUR") == ("house", "fees:card_b", "EUR", None)
    assert (chargebacks_account("JPY"), disputes_account("JPY"), player_receivables_account("JPY")) == (
        "house:chargebacks:JPY", "house:disputes:JPY", "house:player_receivables:JPY")
    # Four parts only for house fees; every other id keeps three.
    for bad in ("player:fees:p1:EUR", "psp:fees:card:EUR", "house:other:card:EUR", "house:fees:a:b:EUR",
                "house:fees::EUR", "house:fees:" + "a" * 124 + ":EUR"):
        with pytest.raises(InvalidAccount):
            parse_account(bad)
    assert parse_account("house:fees:" + "a" * 123 + ":EUR").owner == "fees:" + "a" * 123


# ---- the facts --------------------------------------------------------------------------------------------------


async def test_record_payment_upserts_facts_newer_wins(engine: AsyncEngine) -> None:
    first = payment(status="pending", psp=None)
    await record_payment(engine, first)
    later = replace(first, status="in_review", review_reason="psp_status_unknown", psp="card", psp_reference="r9",
                    updated_at=T0 + timedelta(minutes=5))
    await record_payment(engine, later)
    older = replace(first, status="pending", updated_at=T0 + timedelta(minutes=1))
    await record_payment(engine, older)  # arrives late: changes nothing
    rows = await list_payments(engine, PaymentFilter())
    assert [(r.facts.status, r.facts.review_reason, r.facts.psp, r.facts.psp_reference, r.facts.updated_at)
            for r in rows] == [
        ("in_review", "psp_status_unknown", "card", "r9", T0 + timedelta(minutes=5))]
    await record_payment(engine, later)  # the same write again
    assert (await list_payments(engine, PaymentFilter()))[0].facts.status == "in_review"
    assert await payment_money(engine, "pay_1") == PaymentMoney(0, 0, None, 0, 0, 0, 0, 0)
    assert await payment_money(engine, "nope") is None
    await assert_invariants(engine)


async def test_record_payment_never_touches_money_and_keeps_the_capture_psp(
    ledger: Ledger, engine: AsyncEngine
) -> None:
    await credited(ledger, engine, fee=100)
    before = await payment_money(engine, "pay_1")
    later = replace(payment(), status="credited", psp="card_b", psp_reference="other",
                    updated_at=T0 + timedelta(hours=1))
    await record_payment(engine, later)
    row = (await list_payments(engine, PaymentFilter()))[0]
    assert (row.facts.psp, row.facts.psp_reference, row.facts.updated_at) == (PSP, "ref-pay_1", T0 + timedelta(hours=1))
    assert row.money == before == PaymentMoney(5000, 5000, "deposit:pay_1:credit", 0, 0, 0, 0, 100)
    await assert_invariants(engine)


def test_refundable_is_floored_at_zero() -> None:
    assert PaymentMoney(5000, 5000, None, 1000, 500, 700, 0, 0).refundable_minor == 2800
    assert PaymentMoney(5000, 5000, None, 0, 0, 4000, 3000, 0).refundable_minor == 0


# ---- credits ----------------------------------------------------------------------------------------------------


async def test_credit_deposit_credits_books_the_fee_and_replays(ledger: Ledger, engine: AsyncEngine) -> None:
    transfer_id = await credited(ledger, engine, fee=150)
    assert transfer_id == transfer_ids.deposit_credit("pay_1")
    assert await balance(ledger, P1) == (5000, 0, 0)
    assert await balance(ledger, CLEARING) == (-5000 + 150, 0, 0)  # the PSP settles the net
    assert await balance(ledger, FEES) == (-150, 0, 0)
    fee = await ledger.get_transfer("fee:capture:pay_1")
    assert fee is not None and (fee.debit_account, fee.credit_account, fee.amount, fee.kind) == (
        FEES, CLEARING, 150, "fee")
    async with engine.connect() as conn:
        fee_rows = [tuple(r) for r in await conn.execute(select(
            psp_fees.c.operation, psp_fees.c.reference, psp_fees.c.psp, psp_fees.c.method, psp_fees.c.fee_minor,
            psp_fees.c.transfer_id))]
    assert fee_rows == [("capture", "pay_1", PSP, "card", 150, "fee:capture:pay_1")]
    assert await payment_money(engine, "pay_1") == PaymentMoney(5000, 5000, transfer_id, 0, 0, 0, 0, 150)

    before = await snapshot(engine)
    again = await credit_deposit(ledger, payment_id="pay_1", player_id="p1", psp=PSP, method="card",
                                 currency="EUR", captured_minor=5000, credit_minor=5000, fee_minor=150, now=T0)
    assert again == transfer_id
    assert await snapshot(engine) == before
    await assert_invariants(engine)


async def test_credit_deposit_finds_a_credit_the_old_activity_posted(ledger: Ledger, engine: AsyncEngine) -> None:
    """The deposit activity posted the credit on its own before: the same transfer body, so a replay."""
    await record_payment(engine, payment())
    await ledger.post_transfer(TransferRequest(transfer_ids.deposit_credit("pay_1"), CLEARING, P1, 5000, "EUR",
                                               "deposit", "pay_1"))
    await credit_deposit(ledger, payment_id="pay_1", player_id="p1", psp=PSP, method="card", currency="EUR",
                         captured_minor=5000, credit_minor=5000, fee_minor=0, now=T0)
    assert await balance(ledger, P1) == (5000, 0, 0)
    assert (await row_counts(engine))["ledger_transfers"] == 1
    await assert_invariants(engine)


async def test_a_partial_credit_and_a_zero_credit(ledger: Ledger, engine: AsyncEngine) -> None:
    await record_payment(engine, payment("pay_1"))
    await credit_deposit(ledger, payment_id="pay_1", player_id="p1", psp=PSP, method="card", currency="EUR",
                         captured_minor=5000, credit_minor=3000, fee_minor=None, now=T0)
    await record_payment(engine, payment("pay_2"))
    none = await credit_deposit(ledger, payment_id="pay_2", player_id="p1", psp=PSP, method="card", currency="EUR",
                                captured_minor=5000, credit_minor=0, fee_minor=0, now=T0)
    assert none is None
    assert await balance(ledger, P1) == (3000, 0, 0)
    assert await payment_money(engine, "pay_2") == PaymentMoney(5000, 0, None, 0, 0, 0, 0, 0)
    assert (await row_counts(engine))["psp_fees"] == 0
    await assert_invariants(engine)


async def test_credit_deposit_refusals_write_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, fee=150)
    await record_payment(engine, payment("pay_2"))
    before = await snapshot(engine)
    calls = {
        "missing": (PaymentNotFound, dict(payment_id="nope")),
        "over": (InvalidTransfer, dict(payment_id="pay_2", credit_minor=5001)),
        "other credit": (CaptureConflict, dict(credit_minor=4000)),
        "other capture": (CaptureConflict, dict(captured_minor=6000, credit_minor=5000)),
        "other psp": (CaptureConflict, dict(psp="card_b")),
        "other player": (CaptureConflict, dict(player_id="p2")),
        "other currency": (CaptureConflict, dict(payment_id="pay_2", currency="USD")),
        "other fee": (TransferConflict, dict(fee_minor=151)),
    }
    for name, (error, changes) in calls.items():
        args = dict(payment_id="pay_1", player_id="p1", psp=PSP, method="card", currency="EUR",
                    captured_minor=5000, credit_minor=5000, fee_minor=150, now=T0) | changes
        with pytest.raises(error):
            await credit_deposit(ledger, **args)
        assert await snapshot(engine) == before, name
    await assert_invariants(engine)


async def test_an_uncredited_capture_books_only_its_fee(ledger: Ledger, engine: AsyncEngine) -> None:
    await record_payment(engine, payment(status="rejected"))
    for _ in range(2):  # a retry moves nothing twice
        await record_uncredited_capture(ledger, payment_id="pay_1", psp=PSP, method="card", currency="EUR",
                                        captured_minor=5000, fee_minor=90, now=T0)
    assert await payment_money(engine, "pay_1") == PaymentMoney(5000, 0, None, 0, 0, 0, 0, 90)
    assert await balance(ledger, CLEARING) == (90, 0, 0)
    assert await balance(ledger, P1) == (0, 0, 0)
    with pytest.raises(CaptureConflict):
        await record_uncredited_capture(ledger, payment_id="pay_1", psp=PSP, method="card", currency="EUR",
                                        captured_minor=4000, fee_minor=90, now=T0)
    await assert_invariants(engine)


# ---- the ops list -----------------------------------------------------------------------------------------------


async def test_list_payments_filters_newest_first_and_pages(engine: AsyncEngine) -> None:
    statuses = ["credited", "failed", "in_review", "credited", "pending"]
    for i in range(10):
        await record_payment(engine, payment(
            f"pay_{i:02d}", player=f"p{i % 3}", psp=["card", "ewallet"][i % 2], method=["card", "ewallet"][i % 2],
            status=statuses[i % 5], at=T0 + timedelta(minutes=i // 2),  # pairs share a created_at: ties
            review_reason="psp_status_unknown" if statuses[i % 5] == "in_review" else None))
    everything = await list_payments(engine, PaymentFilter())
    assert [p.facts.payment_id for p in everything] == [f"pay_{i:02d}" for i in reversed(range(10))]
    pages, before = [], None
    while page := await list_payments(engine, PaymentFilter(), limit=3, before=before):
        pages.append([p.facts.payment_id for p in page])
        before = page[-1].facts.payment_id
    assert sum(pages, []) == [p.facts.payment_id for p in everything] and len(pages) == 4

    def ids(rows: list) -> list[str]:
        return [r.facts.payment_id for r in rows]

    assert ids(await list_payments(engine, PaymentFilter(status="credited"))) == ["pay_08", "pay_05", "pay_03",
                                                                                  "pay_00"]
    assert ids(await list_payments(engine, PaymentFilter(player_id="p1"))) == ["pay_07", "pay_04", "pay_01"]
    assert ids(await list_payments(engine, PaymentFilter(psp="ewallet", method="ewallet"))) == [
        "pay_09", "pay_07", "pay_05", "pay_03", "pay_01"]
    assert ids(await list_payments(engine, PaymentFilter(review_reason="psp_status_unknown"))) == ["pay_07",
                                                                                                   "pay_02"]
    assert ids(await list_payments(engine, PaymentFilter(psp_reference="ref-pay_04"))) == ["pay_04"]
    assert ids(await list_payments(engine, PaymentFilter(psp_reference="ref-pay_04", status="failed"))) == []
    window = PaymentFilter(created_from=T0 + timedelta(minutes=1), created_to=T0 + timedelta(minutes=3))
    assert ids(await list_payments(engine, window)) == ["pay_05", "pay_04", "pay_03", "pay_02"]
    assert ids(await list_payments(engine, PaymentFilter(status="credited"), limit=2, before="pay_05")) == [
        "pay_03", "pay_00"]
    with pytest.raises(PaymentNotFound):
        await list_payments(engine, PaymentFilter(), before="nope")
    with pytest.raises(ValueError):
        await list_payments(engine, PaymentFilter(), limit=0)


# ---- payout fees and payouts -----------------------------------------------------------------


async def test_a_payout_fee_and_the_payout_record(ledger: Ledger, engine: AsyncEngine) -> None:
    for _ in range(2):
        fee_id = await book_fee(ledger, operation="payout", reference="po_1", psp=PSP, method="card",
                                currency="EUR", fee_minor=75, now=T0)
    assert fee_id == "fee:payout:po_1"
    assert await book_fee(ledger, operation="payout", reference="po_2", psp=PSP, method="card", currency="EUR",
                          fee_minor=0, now=T0) is None
    with pytest.raises(TransferConflict):
        await book_fee(ledger, operation="payout", reference="po_1", psp=PSP, method="card", currency="EUR",
                       fee_minor=80, now=T0)
    assert await balance(ledger, FEES) == (-75, 0, 0)
    assert (await row_counts(engine))["psp_fees"] == 1

    paid = PayoutRecord("po_1", "c1", "p1", "EUR", 2000, "processing", T0, T0, method="card", psp=PSP)
    await record_payout(engine, paid)
    await record_payout(engine, replace(paid, status="paid", fee_minor=75, updated_at=T0 + timedelta(minutes=2)))
    await record_payout(engine, replace(paid, updated_at=T0 + timedelta(minutes=1)))  # late: ignored
    async with engine.connect() as conn:
        status = (await conn.execute(text("SELECT status, fee_minor FROM payouts"))).one()
    assert tuple(status) == ("paid", 75)
    await assert_invariants(engine)


# ---- invariants -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("corruption", "expected"), [
    ("UPDATE payments SET refund_pending_minor = 0", "refunded/pending 0/0 != its refunds 0/1000"),
    ("UPDATE payments SET credited_minor = 4000", "credit transfer posted 5000"),
    ("UPDATE refunds SET status = 'succeeded'", "refund r1 (succeeded)"),
    ("UPDATE disputes SET state = 'won'", "dispute card:d1 (won)"),
    ("DELETE FROM psp_fees", "fee transfer fee:capture:pay_1: no psp_fees row"),
    ("UPDATE psp_fees SET fee_minor = 151", "differs from its psp_fees row"),
], ids=["pending", "credit", "refund-hold", "dispute", "fee-row", "fee-amount"])
async def test_invariants_see_money_records_drift(
    ledger: Ledger, engine: AsyncEngine, corruption: str, expected: str
) -> None:
    await credited(ledger, engine, fee=150)
    await request_refund(ledger, refund_id="r1", payment_id="pay_1", client_id="c1", amount_minor=1000,
                         currency="EUR", reason=None, funding="player", allow_shortfall=False, now=T0)
    await open_dispute(ledger, psp=PSP, dispute_id="d1", payment_id="pay_1", amount_minor=500, currency="EUR",
                       reason_code=None, now=T0)
    assert (await check_invariants(engine)).ok
    async with engine.begin() as conn:
        await conn.execute(text(corruption))
    report = await check_invariants(engine)
    assert any(expected in v for v in report.violations), report.violations


async def test_money_columns_have_database_guards(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    for statement in ("UPDATE payments SET refunded_minor = 5001", "UPDATE payments SET fees_minor = -1",
                      "UPDATE payments SET refunded_minor = 3000, refund_pending_minor = 2001"):
        with pytest.raises(Exception, match="(?i)check"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    async with engine.connect() as conn:
        assert (await conn.execute(select(payments.c.refunded_minor))).scalar_one() == 0
    await assert_invariants(engine)
