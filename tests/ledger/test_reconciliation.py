"""Reconciliation on SQLite and PostgreSQL: ledger items made with the ledger's own functions, settlement lines
written by hand; every class, the settlement postings, re-runs, cases and their resolutions, the report. The
invariants hold at the end of every scenario."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import (
    AlreadyFinal,
    Ledger,
    PayoutRecord,
    ReconRun,
    RecordNotFound,
    RematchFailed,
    TransferRequest,
    assert_invariants,
    bank_account,
    book_fee,
    check_invariants,
    classify_lines,
    close_run,
    fail_run,
    fee_account,
    get_case,
    get_run,
    house_account,
    list_cases,
    list_runs,
    open_dispute,
    open_run,
    recon_adjustments_account,
    recon_write_offs_account,
    record_payment,
    record_payout,
    request_refund,
    resolve_case,
    resolve_dispute,
    run_id_for,
    settle_refund,
    settlement_report,
    transfer_ids,
)
from ledger.models import (
    payments,
    recon_cases,
    recon_lines,
    recon_runs,
    recon_settlements,
)
from ledger.reconciliation import AlreadySettled, ReconCase, case_id_for
from payloop.settlement import SettlementLine, SettlementTerms
from tests.ledger.money_helpers import (
    CLEARING,
    PSP,
    T0,
    balance,
    credited,
    payment,
    snapshot,
)

DAY = T0.date()  # 2026-12-01; T0 is its noon
TERMS = SettlementTerms(sla_days=2, fee_tolerance_minor=5)
BANK = bank_account("EUR")
FEES = fee_account(PSP, "EUR")
PAYOUTS = house_account("payouts", "EUR")
RECON_TABLES = (recon_runs, recon_lines, recon_settlements, recon_cases)
END_OF_SLA = datetime(2026, 12, 4, tzinfo=UTC)  # DAY + 2 days, at its end


def line(line_id: str, kind: str, reference: str | None, gross: int, fee: int = 0, *, currency: str = "EUR",
         psp_reference: str | None = None, booked_on: date = DAY) -> SettlementLine:
    return SettlementLine(psp=PSP, line_id=line_id, kind=kind, merchant_reference=reference,
                          psp_reference=psp_reference or f"ref-{reference}", currency=currency, gross_minor=gross,
                          fee_minor=fee, booked_on=booked_on)


async def reconcile(ledger: Ledger, lines: Sequence[SettlementLine], *, day: date = DAY,
                    as_of: datetime | None = None, chunk: int = 1000, terms: SettlementTerms = TERMS) -> ReconRun:
    """A run as the workflow drives it: open, the report in chunks, close."""
    now = datetime.combine(day, datetime.min.time(), UTC) + timedelta(days=1, hours=6)
    run = await open_run(ledger.engine, psp=PSP, day=day, as_of=as_of, now=now)
    for first in range(0, len(lines), chunk):
        await classify_lines(ledger, run.run_id, lines[first:first + chunk], terms=terms, now=now)
    return await close_run(ledger, run.run_id, terms=terms, now=now)


async def classes(engine: AsyncEngine, run_id: str) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(recon_lines.c.line_key, recon_lines.c["class"])
                                  .where(recon_lines.c.run_id == run_id))
        return dict(rows.all())


async def open_case_classes(engine: AsyncEngine) -> dict[str, str]:
    return {c.line_key: c.class_ for c in await list_cases(engine, state="open", limit=500)}


async def everything(engine: AsyncEngine) -> dict[str, Any]:
    """Every row of the money tables, the ledger and reconciliation's tables."""
    async with engine.connect() as conn:
        recon = {t.name: sorted(tuple(map(str, r)) for r in await conn.execute(select(t))) for t in RECON_TABLES}
    return await snapshot(engine) | recon


# ---- ledger items -------------------------------------------------------------------------------------------


async def a_refund(ledger: Ledger, engine: AsyncEngine, refund_id: str, payment_id: str, amount: int, fee: int,
                   outcome: str | None = "succeeded") -> None:
    await request_refund(ledger, refund_id=refund_id, payment_id=payment_id, client_id="c1", amount_minor=amount,
                         currency="EUR", reason=None, funding="player", allow_shortfall=False, now=T0)
    if outcome is not None:
        await settle_refund(ledger, refund_id, outcome=outcome, psp_refund_reference=f"ref-{refund_id}",
                            failure_code=None, fee_minor=fee, method="card", now=T0 + timedelta(hours=1))


async def a_payout(ledger: Ledger, engine: AsyncEngine, payout_id: str, amount: int, fee: int,
                   status: str = "paid") -> None:
    hold = transfer_ids.payout_hold(payout_id)
    await ledger.hold(TransferRequest(hold, "player:p1:EUR", PAYOUTS, amount, "EUR", "payout", payout_id))
    if status == "paid":
        await ledger.post_hold(hold)
        await book_fee(ledger, operation="payout", reference=payout_id, psp=PSP, method="card", currency="EUR",
                       fee_minor=fee, now=T0)
    await record_payout(engine, PayoutRecord(
        payout_id=payout_id, client_id="c1", player_id="p1", currency="EUR", amount_minor=amount, status=status,
        created_at=T0, updated_at=T0 + timedelta(hours=2), method="card", psp=PSP, fee_minor=fee))


async def a_dispute(ledger: Ledger, dispute_id: str, payment_id: str, amount: int, outcome: str | None,
                    fee: int | None = None) -> None:
    await open_dispute(ledger, psp=PSP, dispute_id=dispute_id, payment_id=payment_id, amount_minor=amount,
                       currency="EUR", reason_code="10.4", now=T0)
    if outcome is not None:
        await resolve_dispute(ledger, psp=PSP, dispute_id=dispute_id, outcome=outcome, fee_minor=fee,
                              method="card", now=T0 + timedelta(hours=3))


# ---- the payments' capture day ------------------------------------------------------------------------------


async def test_captured_at_is_the_first_recorded_capture(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, amount=5000)
    await credited(ledger, engine, amount=5000, at=T0 + timedelta(days=3))  # a replay, days later
    async with engine.connect() as conn:
        captured_at = (await conn.execute(select(payments.c.captured_at))).scalar_one()
    assert captured_at == T0 + timedelta(seconds=1)
    await record_payment(engine, payment("pay_2"))  # not captured
    async with engine.connect() as conn:
        assert (await conn.execute(select(payments.c.captured_at).where(payments.c.payment_id == "pay_2"))
                ).scalar_one() is None


# ---- a clean day --------------------------------------------------------------------------------------------


async def test_a_clean_day_matches_every_line_and_brings_the_clearing_back(ledger: Ledger,
                                                                           engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=10000, fee=250)
    await credited(ledger, engine, "pay_2", amount=6000, fee=150)
    await credited(ledger, engine, "pay_3", amount=4000, fee=100)
    await a_refund(ledger, engine, "rf_1", "pay_1", 3000, fee=20)
    await a_payout(ledger, engine, "po_1", 2000, fee=40)
    await a_dispute(ledger, "d_won", "pay_2", 6000, "won")
    await a_dispute(ledger, "d_lost", "pay_3", 4000, "lost", fee=1500)
    lines = [
        line("L1", "capture", "pay_1", 10000, 250), line("L2", "capture", "pay_2", 6000, 150),
        line("L3", "capture", "pay_3", 4000, 100), line("L4", "refund", "rf_1", -3000, 20),
        line("L5", "payout", "po_1", -2000, 40),
        line("L6", "chargeback", "pay_2", -6000, psp_reference="d_won"),
        line("L7", "chargeback_reversal", "pay_2", 6000, psp_reference="d_won"),
        line("L8", "chargeback", "pay_3", -4000, psp_reference="d_lost"),
        line("L9", "chargeback_fee", "pay_3", 0, 1500, psp_reference="d_lost"),
    ]
    run = await reconcile(ledger, lines, chunk=4)
    assert run.state == "completed" and run.run_id == "card-2026-12-01" and run.evaluated_at == run.started_at
    assert set((await classes(engine, run.run_id)).values()) == {"matched"}
    assert run.counts == {"matched": {"count": 9, "sums_minor": {"EUR": 10000 + 6000 + 4000 + 3000 + 2000
                                                                  + 6000 * 2 + 4000}}}
    assert await list_cases(engine) == []
    # Every settled item's clearing nets to zero, the payouts' house account too; the bank holds the net.
    assert await balance(ledger, CLEARING) == (0, 0, 0)
    assert await balance(ledger, PAYOUTS) == (0, 0, 0)
    assert await balance(ledger, BANK) == (-sum(x.net_minor for x in lines), 0, 0)
    payout = await ledger.get_transfer("settlement:payout:po_1:paid_out")
    assert payout is not None and (payout.debit_account, payout.credit_account, payout.amount) == (
        PAYOUTS, CLEARING, 2000)
    capture = await ledger.get_transfer("settlement:capture:pay_1")
    assert capture is not None and (capture.debit_account, capture.credit_account, capture.amount,
                                    capture.reference) == (BANK, CLEARING, 9750, "pay_1")
    await assert_invariants(engine)


async def test_an_item_found_by_the_psp_reference(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000)
    await a_refund(ledger, engine, "rf_1", "pay_1", 1000, fee=0)
    run = await reconcile(ledger, [line("L1", "capture", None, 5000, psp_reference="ref-pay_1"),
                                   line("L2", "refund", None, -1000, psp_reference="ref-rf_1")])
    assert await classes(engine, run.run_id) == {"line:L1": "matched", "line:L2": "matched"}
    assert await balance(ledger, CLEARING) == (0, 0, 0)
    await assert_invariants(engine)


# ---- every class --------------------------------------------------------------------------------------------


async def test_every_class(ledger: Ledger, engine: AsyncEngine) -> None:
    for payment_id in ("pay_ok", "pay_amount", "pay_currency", "pay_fee_in", "pay_fee_out", "pay_dup", "pay_gone"):
        await credited(ledger, engine, payment_id, amount=5000, fee=100)
    await record_payment(engine, payment("pay_failed", status="failed"))  # never captured
    await a_refund(ledger, engine, "rf_pending", "pay_ok", 500, fee=0, outcome=None)
    await a_payout(ledger, engine, "po_failed", 700, fee=0, status="failed")
    lines = [
        line("ok", "capture", "pay_ok", 5000, 100),
        line("amount", "capture", "pay_amount", 4900, 100),
        line("currency", "capture", "pay_currency", 5000, 100, currency="USD"),
        line("fee_in", "capture", "pay_fee_in", 5000, 103),  # 3 over, within the tolerance of 5
        line("fee_out", "capture", "pay_fee_out", 5000, 106),
        line("dup_1", "capture", "pay_dup", 5000, 100), line("dup_2", "capture", "pay_dup", 5000, 100),
        line("orphan", "capture", None, 777, 7, psp_reference="psp-unknown"),
        line("failed", "capture", "pay_failed", 5000, 100),
        line("pending", "refund", "rf_pending", -500),
        line("po", "payout", "po_failed", -700),
    ]
    run = await reconcile(ledger, lines, as_of=END_OF_SLA)
    assert await classes(engine, run.run_id) == {
        "line:ok": "matched", "line:amount": "amount_mismatch", "line:currency": "currency_mismatch",
        "line:fee_in": "matched", "line:fee_out": "fee_variance", "line:dup_1": "matched", "line:dup_2": "duplicate",
        "line:orphan": "missing_in_ledger", "line:failed": "status_mismatch", "line:pending": "status_mismatch",
        "line:po": "status_mismatch", "ledger:capture:pay_gone": "missing_at_psp",
    }
    cases = await open_case_classes(engine)
    assert cases == {key: class_ for key, class_ in (await classes(engine, run.run_id)).items()
                     if class_ != "matched"}
    assert run.counts is not None and run.counts["amount_mismatch"] == {"count": 1, "sums_minor": {"EUR": 4900}}
    assert run.counts["currency_mismatch"] == {"count": 1, "sums_minor": {"USD": 5000}}
    # The fee within tolerance is booked as the PSP's: the item's clearing still comes back to zero.
    difference = await ledger.get_transfer("settlement:capture:pay_fee_in:fee_difference")
    assert difference is not None and (difference.debit_account, difference.credit_account, difference.amount) == (
        FEES, CLEARING, 3)
    gone = await get_case(engine, case_id_for(PSP, "ledger:capture:pay_gone"))
    assert gone is not None and (gone.payment_id, gone.ledger_gross_minor, gone.ledger_fee_minor, gone.line_id) == (
        "pay_gone", 5000, 100, None)
    failed = await get_case(engine, case_id_for(PSP, "line:failed"))
    assert failed is not None and (failed.payment_id, failed.gross_minor, failed.psp_reference) == (
        "pay_failed", 5000, "ref-pay_failed")
    await assert_invariants(engine)


async def test_expected_until_the_end_of_the_sla_then_missing_at_psp(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000)
    within = await reconcile(ledger, [], as_of=END_OF_SLA - timedelta(microseconds=1))
    assert await classes(engine, within.run_id) == {"ledger:capture:pay_1": "expected"}
    assert within.counts == {"expected": {"count": 1, "sums_minor": {"EUR": 5000}}}
    assert await list_cases(engine) == []
    after = await reconcile(ledger, [], as_of=END_OF_SLA)
    assert after.run_id == "card-2026-12-01-asof-20261204T000000Z"
    assert await classes(engine, after.run_id) == {"ledger:capture:pay_1": "missing_at_psp"}
    later = await reconcile(ledger, [], as_of=END_OF_SLA + timedelta(days=5))
    [case] = await list_cases(engine)
    assert (case.class_, case.first_run_id, case.last_run_id) == ("missing_at_psp", after.run_id, later.run_id)
    # Another PSP's or day's items are not this run's.
    await credited(ledger, engine, "pay_2", amount=100, psp="card_b")
    await credited(ledger, engine, "pay_3", amount=100, at=T0 + timedelta(days=1))
    assert set(await classes(engine, (await reconcile(ledger, [], as_of=END_OF_SLA + timedelta(days=6))).run_id)
               ) == {"ledger:capture:pay_1"}
    await assert_invariants(engine)


async def test_a_capture_recorded_before_captured_at_is_dated_by_its_creation(ledger: Ledger,
                                                                                engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000)
    async with engine.begin() as conn:
        await conn.execute(update(payments).values(captured_at=None))
    run = await reconcile(ledger, [])
    assert await classes(engine, run.run_id) == {"ledger:capture:pay_1": "expected"}


async def test_settled_late_expected_on_day_one_matched_on_day_two(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_late", amount=5000, fee=100)
    day_one = await reconcile(ledger, [])
    assert await classes(engine, day_one.run_id) == {"ledger:capture:pay_late": "expected"}
    day_two = await reconcile(ledger, [line("late", "capture", "pay_late", 5000, 100, booked_on=DAY + timedelta(1))],
                              day=DAY + timedelta(days=1))
    assert await classes(engine, day_two.run_id) == {"line:late": "matched"}
    # Day one again, after its SLA: the item another run's line settled counts as matched.
    again = await reconcile(ledger, [], as_of=END_OF_SLA + timedelta(days=1))
    assert await classes(engine, again.run_id) == {"ledger:capture:pay_late": "matched"}
    assert await list_cases(engine) == [] and await balance(ledger, CLEARING) == (0, 0, 0)
    await assert_invariants(engine)


async def test_a_second_line_in_another_run_is_a_duplicate(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000)
    await reconcile(ledger, [line("first", "capture", "pay_1", 5000)])
    second = await reconcile(ledger, [line("again", "capture", "pay_1", 5000, booked_on=DAY + timedelta(days=1))],
                             day=DAY + timedelta(days=1))
    assert await classes(engine, second.run_id) == {"line:again": "duplicate"}
    assert await balance(ledger, BANK) == (-5000, 0, 0)
    await assert_invariants(engine)


async def test_concurrent_runs_settle_an_item_once(fresh_db: Any) -> None:
    engines = [fresh_db.engine(), fresh_db.engine()]
    ledgers = [Ledger(e) for e in engines]
    await credited(ledgers[0], engines[0], "pay_1", amount=5000)
    days = [DAY, DAY + timedelta(days=1)]
    runs = await asyncio.gather(*(reconcile(ledgers[n], [line(f"L{n}", "capture", "pay_1", 5000, booked_on=days[n])],
                                            day=days[n]) for n in range(2)))
    found = {class_ for run in runs for class_ in (await classes(engines[0], run.run_id)).values()}
    assert found == {"matched", "duplicate"}
    assert await balance(ledgers[0], BANK) == (-5000, 0, 0)
    await assert_invariants(engines[0])
    for engine in engines:
        await engine.dispose()


# ---- re-runs ------------------------------------------------------------------------------------------------


def _mixed_day_lines() -> list[SettlementLine]:
    return [line("ok", "capture", "pay_ok", 5000, 100), line("amount", "capture", "pay_amount", 4000, 100),
            line("orphan", "capture", None, 300, psp_reference="psp-x"), line("fee_in", "capture", "pay_fee", 5000, 98)]


async def _mixed_day(ledger: Ledger, engine: AsyncEngine) -> None:
    for payment_id in ("pay_ok", "pay_amount", "pay_fee", "pay_gone"):
        await credited(ledger, engine, payment_id, amount=5000, fee=100)


async def test_re_running_a_run_changes_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await _mixed_day(ledger, engine)
    first = await reconcile(ledger, _mixed_day_lines(), as_of=END_OF_SLA)
    before = await everything(engine)
    again = await reconcile(ledger, _mixed_day_lines(), as_of=END_OF_SLA, chunk=1)
    assert again == first
    assert await everything(engine) == before
    counts = await classify_lines(ledger, first.run_id, _mixed_day_lines(), terms=TERMS, now=T0)
    assert counts == {"already_classified": 4}
    # A line the completed run never saw: its report changed, which is a run of its own.
    with pytest.raises(AlreadyFinal):
        await classify_lines(ledger, first.run_id, [line("new", "capture", "pay_gone", 5000, 100)], terms=TERMS,
                             now=T0)
    assert await everything(engine) == before
    await assert_invariants(engine)


async def test_a_run_interrupted_and_run_again_classifies_as_one_in_one_go(ledger: Ledger,
                                                                            engine: AsyncEngine) -> None:
    await _mixed_day(ledger, engine)
    run = await open_run(engine, psp=PSP, day=DAY, as_of=END_OF_SLA, now=T0)
    await classify_lines(ledger, run.run_id, _mixed_day_lines()[:2], terms=TERMS, now=T0)
    await fail_run(engine, run.run_id, "worker lost", T0)  # say the report's second page did not come
    again = await reconcile(ledger, _mixed_day_lines(), as_of=END_OF_SLA)
    assert again.run_id == run.run_id and again.evaluated_at == END_OF_SLA
    assert await classes(engine, run.run_id) == {
        "line:ok": "matched", "line:amount": "amount_mismatch", "line:orphan": "missing_in_ledger",
        "line:fee_in": "matched", "ledger:capture:pay_gone": "missing_at_psp"}
    assert await balance(ledger, BANK) == (-(4900 + 4902), 0, 0)
    await assert_invariants(engine)


async def test_re_running_a_day_with_another_as_of_updates_the_same_cases(ledger: Ledger,
                                                                          engine: AsyncEngine) -> None:
    await _mixed_day(ledger, engine)
    first = await reconcile(ledger, _mixed_day_lines())
    cases = await open_case_classes(engine)
    assert cases == {"line:amount": "amount_mismatch", "line:orphan": "missing_in_ledger"}
    transfers_before, bank_before = (await snapshot(engine))["ledger_transfers"], await balance(ledger, BANK)
    later = await reconcile(ledger, _mixed_day_lines(), as_of=END_OF_SLA)
    assert later.run_id != first.run_id
    assert await classes(engine, later.run_id) == (await classes(engine, first.run_id)) | {
        "ledger:capture:pay_gone": "missing_at_psp"}
    assert await open_case_classes(engine) == cases | {"ledger:capture:pay_gone": "missing_at_psp"}
    assert {c.last_run_id for c in await list_cases(engine)} == {later.run_id}
    assert (await snapshot(engine))["ledger_transfers"] == transfers_before
    assert await balance(ledger, BANK) == bank_before
    await assert_invariants(engine)


async def test_a_resolved_case_stays_resolved_on_a_re_run(ledger: Ledger, engine: AsyncEngine) -> None:
    await _mixed_day(ledger, engine)
    await reconcile(ledger, _mixed_day_lines())
    case_id = case_id_for(PSP, "line:amount")
    resolved = await resolve_case(ledger, case_id, action="accept", note="PSP corrects it tomorrow",
                                  resolved_by="ops@casino", now=T0)
    later = await reconcile(ledger, _mixed_day_lines(), as_of=END_OF_SLA)
    after = await get_case(engine, case_id)
    assert after is not None and (after.state, after.resolved_at, after.last_run_id) == (
        "resolved", resolved.resolved_at, later.run_id)
    await assert_invariants(engine)


async def test_runs_open_fail_reopen_and_list(ledger: Ledger, engine: AsyncEngine) -> None:
    now = T0 + timedelta(days=1)
    run = await open_run(engine, psp=PSP, day=DAY, as_of=None, now=now)
    assert (run.state, run.evaluated_at, run.as_of) == ("running", now, None)
    failed = await fail_run(engine, run.run_id, "report header unreadable", now + timedelta(minutes=1))
    assert (failed.state, failed.failure_reason) == ("failed", "report header unreadable")
    with pytest.raises(AlreadyFinal):
        await classify_lines(ledger, run.run_id, [], terms=TERMS, now=now)
    reopened = await open_run(engine, psp=PSP, day=DAY, as_of=None, now=now + timedelta(hours=1))
    assert (reopened.state, reopened.evaluated_at, reopened.failure_reason) == ("running", now, None)
    done = await close_run(ledger, run.run_id, terms=TERMS, now=now)
    with pytest.raises(AlreadyFinal):
        await fail_run(engine, run.run_id, "too late", now)
    as_of = datetime(2026, 12, 10, 8, 30, 15, tzinfo=UTC)
    other = await open_run(engine, psp=PSP, day=DAY, as_of=as_of, now=now + timedelta(hours=2))
    assert (other.run_id, other.evaluated_at) == ("card-2026-12-01-asof-20261210T083015Z", as_of)
    assert run_id_for(PSP, DAY, as_of) == other.run_id
    assert [r.run_id for r in await list_runs(engine, psp=PSP, day=DAY)] == [other.run_id, done.run_id]
    assert [r.run_id for r in await list_runs(engine, limit=1, before=other.run_id)] == [done.run_id]
    assert await list_runs(engine, psp="card_b") == []
    assert await get_run(engine, "nope") is None
    with pytest.raises(RecordNotFound):
        await list_runs(engine, before="nope")
    with pytest.raises(ValueError):
        await classify_lines(ledger, other.run_id, [replace(line("x", "capture", "p", 1), psp="card_b")],
                             terms=TERMS, now=now)


# ---- resolutions --------------------------------------------------------------------------------------------


async def _resolve(ledger: Ledger, key: str, action: str, **kwargs: Any) -> Any:
    return await resolve_case(ledger, case_id_for(PSP, key), action=action, note="checked with the PSP",
                              resolved_by="ops@casino", now=T0 + timedelta(days=2), **kwargs)


async def test_accept_moves_nothing_and_a_replay_returns_the_case(ledger: Ledger, engine: AsyncEngine) -> None:
    await _mixed_day(ledger, engine)
    await reconcile(ledger, _mixed_day_lines())
    before = (await snapshot(engine))["ledger_transfers"]
    accepted = await _resolve(ledger, "line:amount", "accept")
    assert (accepted.state, accepted.resolution_action, accepted.resolution_transfer_ids, accepted.resolved_by) == (
        "resolved", "accept", [], "ops@casino")
    assert await _resolve(ledger, "line:amount", "accept") == accepted
    with pytest.raises(AlreadyFinal):
        await _resolve(ledger, "line:amount", "write_off")
    with pytest.raises(RecordNotFound):
        await resolve_case(ledger, "rc_nope", action="accept", note="", resolved_by="x", now=T0)
    for bad in ({"action": "forgive"}, {"action": "adjust"}, {"action": "adjust", "amount_minor": 0},
                {"action": "accept", "amount_minor": 5}, {"action": "rematch"}):
        with pytest.raises(ValueError):
            await _resolve(ledger, "line:orphan", **bad)
    assert (await snapshot(engine))["ledger_transfers"] == before
    await assert_invariants(engine)


async def test_adjust_settles_the_line_and_moves_the_amount(ledger: Ledger, engine: AsyncEngine) -> None:
    await _mixed_day(ledger, engine)
    await reconcile(ledger, _mixed_day_lines())
    clearing_before = (await balance(ledger, CLEARING))[0]
    # The PSP paid 4000 - 100 for a capture of 5000 (fee 100): it owes us 1000 more.
    adjusted = await _resolve(ledger, "line:amount", "adjust", amount_minor=1000)
    assert adjusted.resolution_amount_minor == 1000
    assert adjusted.resolution_transfer_ids == [transfer_ids.recon(adjusted.case_id, "settlement"),
                                                transfer_ids.recon(adjusted.case_id, "adjustment")]
    assert await balance(ledger, CLEARING) == (clearing_before + 3900 - 1000, 0, 0)
    assert await balance(ledger, recon_adjustments_account("EUR")) == (1000, 0, 0)
    assert await _resolve(ledger, "line:amount", "adjust", amount_minor=1000) == adjusted
    with pytest.raises(AlreadyFinal):
        await _resolve(ledger, "line:amount", "adjust", amount_minor=999)
    # The line settled its item (by the adjustment): a re-run of the day finds it matched and posts nothing.
    bank = await balance(ledger, BANK)
    later = await reconcile(ledger, _mixed_day_lines(), as_of=END_OF_SLA)
    assert (await classes(engine, later.run_id))["line:amount"] == "matched"
    assert await balance(ledger, BANK) == bank
    await assert_invariants(engine)


async def test_write_off_brings_each_kind_of_case_back_to_zero(ledger: Ledger, engine: AsyncEngine) -> None:
    await _mixed_day(ledger, engine)
    await credited(ledger, engine, "pay_usd", amount=5000, fee=100)
    lines = [*_mixed_day_lines(), line("usd", "capture", "pay_usd", 5000, 100, currency="USD")]
    await reconcile(ledger, lines, as_of=END_OF_SLA)
    write_offs = recon_write_offs_account("EUR")
    amount = await _resolve(ledger, "line:amount", "write_off")  # paid 3900 of 4900 booked: -1000
    orphan = await _resolve(ledger, "line:orphan", "write_off")  # paid 300 for nothing: +300
    gone = await _resolve(ledger, "ledger:capture:pay_gone", "write_off")  # never paid 4900
    currency = await _resolve(ledger, "line:usd", "write_off")
    assert (amount.resolution_amount_minor, orphan.resolution_amount_minor, gone.resolution_amount_minor,
            currency.resolution_amount_minor) == (-1000, 300, -4900, 4900)
    # What we lose is the write-offs' expense (negative, like a fee); what we gain, their income.
    assert await balance(ledger, write_offs) == (-1000 + 300 - 4900 - 4900, 0, 0)
    assert await balance(ledger, recon_write_offs_account("USD")) == (4900, 0, 0)
    # Every item of the day is settled, matched or written off: its PSP's clearing is back to zero.
    assert await balance(ledger, CLEARING) == (0, 0, 0)
    assert await balance(ledger, "psp:card:USD") == (0, 0, 0)
    assert await open_case_classes(engine) == {}
    await assert_invariants(engine)


async def test_rematch_settles_a_line_against_the_item_named(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000, fee=100)
    await credited(ledger, engine, "pay_2", amount=7000, fee=100)
    await reconcile(ledger, [line("typo", "capture", "pay_l", 5000, 102), line("off", "capture", "pay_x", 6000)])
    with pytest.raises(RematchFailed) as refused:
        await _resolve(ledger, "line:off", "rematch", rematch_with="pay_2")
    assert refused.value.would_be_class == "amount_mismatch"
    with pytest.raises(RematchFailed) as unknown:
        await _resolve(ledger, "line:off", "rematch", rematch_with="pay_unknown")
    assert unknown.value.would_be_class == "missing_in_ledger"
    with pytest.raises(RematchFailed):  # 2 over the fee booked, beyond the default tolerance of 0
        await _resolve(ledger, "line:typo", "rematch", rematch_with="pay_1")
    rematched = await _resolve(ledger, "line:typo", "rematch", rematch_with="pay_1", terms=TERMS)
    assert (rematched.state, rematched.resolution_rematch_with) == ("resolved", "pay_1")
    settlement = await ledger.get_transfer(transfer_ids.recon(rematched.case_id, "settlement"))
    assert settlement is not None and (settlement.amount, settlement.reference) == (4898, rematched.case_id)
    with pytest.raises(RematchFailed) as twice:  # the item is settled now
        await _resolve(ledger, "line:off", "rematch", rematch_with="pay_1")
    assert twice.value.would_be_class == "duplicate"
    assert await balance(ledger, CLEARING) == (-7000 + 100, 0, 0)  # only pay_2 is left unsettled
    again = await reconcile(ledger, [], as_of=END_OF_SLA)
    assert await classes(engine, again.run_id) == {"ledger:capture:pay_1": "matched",
                                                   "ledger:capture:pay_2": "missing_at_psp"}
    with pytest.raises(ValueError):  # a ledger item's case has no line to rematch
        await _resolve(ledger, "ledger:capture:pay_2", "rematch", rematch_with="pay_1")
    await assert_invariants(engine)


# ---- the report, the lists, the invariants -------------------------------------------------------------------


async def test_settlement_report(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=10000, fee=250)
    await credited(ledger, engine, "pay_2", amount=6000, fee=150, method="ewallet")
    await credited(ledger, engine, "pay_3", amount=4000, fee=100)
    await a_refund(ledger, engine, "rf_1", "pay_1", 3000, fee=20)
    await a_payout(ledger, engine, "po_1", 2000, fee=40)
    await a_dispute(ledger, "d_lost", "pay_3", 4000, "lost", fee=1500)
    await reconcile(ledger, [
        line("L1", "capture", "pay_1", 10000, 250), line("L2", "capture", "pay_2", 6000, 150),
        line("L3", "capture", "pay_3", 4000, 100), line("L4", "refund", "rf_1", -3000, 20),
        line("L5", "payout", "po_1", -2000, 40), line("L8", "chargeback", "pay_3", -4000, psp_reference="d_lost"),
        line("L9", "chargeback_fee", "pay_3", 0, 1500, psp_reference="d_lost"),
        line("L10", "capture", None, 500, psp_reference="orphan"),
    ])
    rows = await settlement_report(engine, from_day=DAY, to_day=DAY)
    by_method = {row.method: row for row in rows}
    assert set(by_method) == {"card", "ewallet", None}
    card = by_method["card"]
    assert (card.captures, card.captures_gross_minor, card.fees_minor, card.refunds_minor, card.payouts_minor,
            card.chargebacks_minor, card.net_settled_minor) == (
        2, 14000, 250 + 100 + 20 + 40 + 1500, -3000, -2000, -4000, 14000 - 9000 - 1910)
    assert (by_method["ewallet"].captures, by_method["ewallet"].net_settled_minor) == (1, 5850)
    orphan = by_method[None]
    assert (orphan.open_cases, orphan.open_differences_minor, orphan.captures) == (1, 500, 0)
    assert await settlement_report(engine, from_day=DAY + timedelta(days=1), to_day=DAY + timedelta(days=9)) == []


async def test_case_list_pages_and_filters(ledger: Ledger, engine: AsyncEngine) -> None:
    for n in range(5):
        await credited(ledger, engine, f"pay_{n}", amount=100 + n)
    await reconcile(ledger, [line(f"L{n}", "capture", f"pay_{n}", 1) for n in range(3)] + [
        line("orphan", "capture", None, 5, psp_reference="x")], as_of=END_OF_SLA)
    everything_ = await list_cases(engine)
    assert len(everything_) == 6
    assert [c.case_id for c in everything_] == sorted((c.case_id for c in everything_), reverse=True)
    page = await list_cases(engine, limit=4)
    rest = await list_cases(engine, limit=4, before=page[-1].case_id)
    assert [c.case_id for c in page + rest] == [c.case_id for c in everything_]
    assert len(await list_cases(engine, class_="amount_mismatch")) == 3
    assert len(await list_cases(engine, psp=PSP, state="open", class_="missing_at_psp")) == 2
    assert await list_cases(engine, psp="card_b") == []
    with pytest.raises(RecordNotFound):
        await list_cases(engine, before="rc_nope")
    with pytest.raises(ValueError):
        await list_cases(engine, limit=0)


async def test_the_invariants_notice_a_settlement_without_its_money(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000)
    await reconcile(ledger, [line("L1", "capture", "pay_1", 5000)])
    async with engine.begin() as conn:
        await conn.execute(update(recon_settlements).values(gross_minor=4000, net_minor=4000))
    report = await check_invariants(engine)
    assert any("settlement card capture pay_1" in v for v in report.violations)
    assert any("house:bank:EUR" in v for v in report.violations)
    async with engine.begin() as conn:
        await conn.execute(update(recon_settlements).values(gross_minor=5000, net_minor=5000))
        await conn.execute(recon_settlements.delete())
    report = await check_invariants(engine)
    assert any("settlement transfers for 0 settlement rows" in v for v in report.violations)


async def test_the_invariants_notice_a_case_without_its_money(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000)
    await reconcile(ledger, [line("L1", "capture", None, 300, psp_reference="x")])
    case = await _resolve(ledger, "line:L1", "write_off")
    async with engine.begin() as conn:
        await conn.execute(update(recon_cases).values(resolution_amount_minor=299))
    report = await check_invariants(engine)
    assert report.violations == [f"case {case.case_id} (resolved): its transfers differ from its resolution"]
    async with engine.begin() as conn:
        count = (await conn.execute(select(func.count()).select_from(recon_cases))).scalar_one()
    assert count == 1


async def test_resolving_payouts_refunds_and_currencies(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=10000, fee=100)
    await a_refund(ledger, engine, "rf_gone", "pay_1", 1000, fee=10)
    await a_payout(ledger, engine, "po_gone", 2000, fee=20)
    await a_payout(ledger, engine, "po_usd", 3000, fee=0)
    await reconcile(ledger, [line("L1", "capture", "pay_1", 10000, 100), line("L2", "refund", "rf_gone", -1000, 10),
                             line("L3", "payout", "po_usd", -3000, currency="USD")], as_of=END_OF_SLA)
    await reconcile(ledger, [line("L2b", "refund", "rf_gone", -1000, 10, booked_on=DAY + timedelta(days=1))],
                    day=DAY + timedelta(days=1))
    assert await open_case_classes(engine) == {"ledger:payout:po_gone": "missing_at_psp",
                                               "line:L3": "currency_mismatch", "line:L2b": "duplicate"}
    # The PSP never took the payout it said it paid: it is settled as booked (house:payouts → clearing) and what
    # the clearing then holds for it (the PSP owes us its amount and fee) is adjusted as owed.
    adjusted = await _resolve(ledger, "ledger:payout:po_gone", "adjust", amount_minor=2020)
    assert len(adjusted.resolution_transfer_ids) == 2
    # The USD line is real money at the bank, in USD; the payout it is about stays unsettled in EUR.
    usd = await _resolve(ledger, "line:L3", "adjust", amount_minor=-3000)
    assert await balance(ledger, bank_account("USD")) == (3000, 0, 0)
    assert await balance(ledger, "psp:card:USD") == (0, 0, 0)
    duplicate = await _resolve(ledger, "line:L2b", "write_off")  # the refund taken twice: a loss
    assert duplicate.resolution_amount_minor == -1010
    assert await balance(ledger, CLEARING) == (0, 0, 0)
    assert await balance(ledger, PAYOUTS) == (3000, 0, 0)  # po_usd, paid from there when a EUR line settles it
    assert usd.state == "resolved"
    await assert_invariants(engine)


# ---- a line settles once ------------------------------------------------------------------------------------


async def test_a_line_settled_by_a_resolution_is_not_settled_again_when_its_item_turns_valid(
        ledger: Ledger, engine: AsyncEngine) -> None:
    await record_payment(engine, payment("pay_p", status="pending"))  # not captured yet
    await credited(ledger, engine, "pay_r", amount=5000)
    await a_refund(ledger, engine, "rf_p", "pay_r", 500, fee=0, outcome=None)  # not refunded yet
    lines = [line("L", "capture", "pay_p", 5000), line("R", "refund", "rf_p", -500),
             line("C", "capture", "pay_r", 5000)]
    run = await reconcile(ledger, lines)
    assert await classes(engine, run.run_id) == {"line:L": "status_mismatch", "line:R": "status_mismatch",
                                                 "line:C": "matched"}
    # The PSP's lines are real money: ops post them (under the lines' own keys).
    await _resolve(ledger, "line:L", "adjust", amount_minor=5000)
    await _resolve(ledger, "line:R", "write_off")
    bank = await balance(ledger, BANK)
    # Meanwhile the deposit is captured and its refund succeeds: the items are valid now, the lines not new.
    await credited(ledger, engine, "pay_p", amount=5000)
    await settle_refund(ledger, "rf_p", outcome="succeeded", psp_refund_reference="ref-rf_p", failure_code=None,
                        fee_minor=0, method="card", now=T0 + timedelta(hours=1))
    later = await reconcile(ledger, lines, as_of=END_OF_SLA)
    assert await ledger.get_transfer(transfer_ids.settlement("capture", "pay_p")) is None
    assert await ledger.get_transfer(transfer_ids.settlement("refund", "rf_p")) is None
    assert await balance(ledger, BANK) == bank
    # The lines settled something else: duplicates at best, their cases resolved as they were; the items they
    # name, unsettled, are found as the ledger's own.
    assert await classes(engine, later.run_id) == {
        "line:L": "duplicate", "line:R": "duplicate", "line:C": "matched", "ledger:capture:pay_p": "missing_at_psp",
        "ledger:refund:rf_p": "missing_at_psp"}
    assert {c.line_key: c.state for c in await list_cases(engine)} == {
        "line:L": "resolved", "line:R": "resolved", "ledger:capture:pay_p": "open", "ledger:refund:rf_p": "open"}
    await assert_invariants(engine)


async def test_a_line_matched_on_a_re_run_closes_its_stale_case(ledger: Ledger, engine: AsyncEngine) -> None:
    await record_payment(engine, payment("pay_p", status="pending"))
    await credited(ledger, engine, "pay_gone", amount=3000)
    await reconcile(ledger, [line("L", "capture", "pay_p", 5000)], as_of=END_OF_SLA)
    assert await open_case_classes(engine) == {"line:L": "status_mismatch",
                                               "ledger:capture:pay_gone": "missing_at_psp"}
    await credited(ledger, engine, "pay_p", amount=5000)
    later = await reconcile(ledger, [line("L", "capture", "pay_p", 5000)], as_of=END_OF_SLA + timedelta(days=1))
    # pay_gone is settled by a line of another day's report.
    next_day = await reconcile(ledger, [line("G", "capture", "pay_gone", 3000, booked_on=DAY + timedelta(days=1))],
                               day=DAY + timedelta(days=1))
    assert (await classes(engine, later.run_id))["line:L"] == "matched"
    assert await open_case_classes(engine) == {}
    stale = await get_case(engine, case_id_for(PSP, "line:L"))
    gone = await get_case(engine, case_id_for(PSP, "ledger:capture:pay_gone"))
    assert stale is not None and gone is not None
    assert (stale.state, stale.resolution_action, stale.resolved_by, stale.resolution_transfer_ids) == (
        "resolved", "auto_matched", "reconciliation", [])
    assert stale.resolution_note == f"settled by line L (run {later.run_id})"
    assert (gone.resolution_action, gone.resolution_note) == (
        "auto_matched", f"settled by line G (run {next_day.run_id})")
    bank = await balance(ledger, BANK)
    assert bank == (-8000, 0, 0)
    # Writing off what the lines settled would post them again: the cases are closed.
    for key in ("line:L", "ledger:capture:pay_gone"):
        with pytest.raises(AlreadyFinal):
            await _resolve(ledger, key, "write_off")
    assert await balance(ledger, BANK) == bank
    await assert_invariants(engine)


async def test_a_case_rematched_or_adjusted_onto_an_item_closes_the_items_case(ledger: Ledger,
                                                                                 engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000)
    await credited(ledger, engine, "pay_2", amount=7000)
    await reconcile(ledger, [], as_of=END_OF_SLA)
    await reconcile(ledger, [line("typo", "capture", "pay_l", 5000), line("short", "capture", "pay_2", 6500)],
                    day=DAY + timedelta(days=1))
    await _resolve(ledger, "line:typo", "rematch", rematch_with="pay_1")
    await _resolve(ledger, "line:short", "adjust", amount_minor=500)
    for payment_id, line_id, action in (("pay_1", "typo", "rematch"), ("pay_2", "short", "adjust")):
        item_case = await get_case(engine, case_id_for(PSP, f"ledger:capture:{payment_id}"))
        assert item_case is not None and (item_case.state, item_case.resolution_action) == ("resolved",
                                                                                           "auto_matched")
        assert item_case.resolution_note == (
            f"settled by line {line_id} (case {case_id_for(PSP, f'line:{line_id}')}, {action})")
    assert await open_case_classes(engine) == {}
    await assert_invariants(engine)


async def test_money_moves_no_more_for_a_case_whose_item_is_settled(ledger: Ledger, engine: AsyncEngine) -> None:
    await record_payment(engine, payment("pay_p", status="pending"))
    await reconcile(ledger, [line("early", "capture", "pay_p", 5000)])
    await credited(ledger, engine, "pay_p", amount=5000)
    await reconcile(ledger, [line("late", "capture", "pay_p", 5000, booked_on=DAY + timedelta(days=1))],
                    day=DAY + timedelta(days=1))
    assert await open_case_classes(engine) == {"line:early": "status_mismatch"}
    bank = await balance(ledger, BANK)
    for action, kwargs in (("write_off", {}), ("adjust", {"amount_minor": 100}),
                           ("rematch", {"rematch_with": "pay_p"})):
        with pytest.raises(AlreadySettled) as refused:
            await _resolve(ledger, "line:early", action, **kwargs)
        assert (refused.value.case_id, refused.value.code) == (case_id_for(PSP, "line:early"),
                                                               "recon_already_settled")
    assert await balance(ledger, BANK) == bank
    accepted = await _resolve(ledger, "line:early", "accept")  # the explanation is still welcome
    assert accepted.state == "resolved"
    await assert_invariants(engine)


async def test_a_line_settles_once_the_database_and_the_invariants_say_so(ledger: Ledger,
                                                                          engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=5000)
    await reconcile(ledger, [line("L1", "capture", "pay_1", 5000)])
    async with engine.connect() as conn:
        [row] = (await conn.execute(select(recon_settlements))).mappings().all()
    twice = dict(row) | {"item_key": "line:L1"}
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(recon_settlements.insert().values(twice))
    async with engine.begin() as conn:
        await conn.execute(text("DROP INDEX uq_recon_settlements_psp_line_id"))
        await conn.execute(recon_settlements.insert().values(twice | {"gross_minor": 0, "net_minor": 0}))
    report = await check_invariants(engine)
    assert f"line {PSP} L1: settled 2 times" in report.violations


# ---- items a line's case no longer holds ------------------------------------------------------------------------


async def test_an_item_is_left_to_a_lines_case_only_while_it_is_open_about_it(ledger: Ledger,
                                                                              engine: AsyncEngine) -> None:
    for payment_id in ("pay_accepted", "pay_usd", "pay_typo", "pay_open"):
        await credited(ledger, engine, payment_id, amount=5000)
    await credited(ledger, engine, "pay_right", amount=4000)
    lines = [line("accepted", "capture", "pay_accepted", 4000), line("usd", "capture", "pay_usd", 5000, currency="USD"),
             line("typo", "capture", "pay_typo", 4000), line("open", "capture", "pay_open", 4900)]
    await reconcile(ledger, lines)
    await _resolve(ledger, "line:accepted", "accept")
    await _resolve(ledger, "line:usd", "adjust", amount_minor=-5000)  # the USD line's own money, not the item
    await _resolve(ledger, "line:typo", "rematch", rematch_with="pay_right")
    later = await reconcile(ledger, [], as_of=END_OF_SLA)
    # Each item no open case is about is the ledger's own again, missing at the PSP after its SLA.
    assert await classes(engine, later.run_id) == {
        "ledger:capture:pay_accepted": "missing_at_psp", "ledger:capture:pay_usd": "missing_at_psp",
        "ledger:capture:pay_typo": "missing_at_psp", "ledger:capture:pay_right": "matched"}
    assert await open_case_classes(engine) == {
        "line:open": "amount_mismatch", "ledger:capture:pay_accepted": "missing_at_psp",
        "ledger:capture:pay_usd": "missing_at_psp", "ledger:capture:pay_typo": "missing_at_psp"}
    await assert_invariants(engine)


# ---- the report counts what lines settled -----------------------------------------------------------------------


async def test_the_report_counts_no_capture_a_resolution_settled_without_a_line(ledger: Ledger,
                                                                                engine: AsyncEngine) -> None:
    await credited(ledger, engine, "pay_1", amount=10000, fee=250)
    await credited(ledger, engine, "pay_gone", amount=3000)
    await credited(ledger, engine, "pay_usd", amount=2000)
    await reconcile(ledger, [line("L1", "capture", "pay_1", 10000, 250),
                             line("usd", "capture", "pay_usd", 2000, currency="USD")], as_of=END_OF_SLA)
    await _resolve(ledger, "ledger:capture:pay_gone", "write_off")
    await _resolve(ledger, "line:usd", "write_off")
    rows = {row.currency: row for row in await settlement_report(engine, from_day=DAY, to_day=DAY)}
    assert set(rows) == {"EUR", "USD"}
    eur, usd = rows["EUR"], rows["USD"]
    assert (eur.captures, eur.captures_gross_minor, eur.fees_minor, eur.net_settled_minor, eur.open_cases) == (
        1, 10000, 250, 9750, 0)
    assert (usd.captures, usd.captures_gross_minor, usd.net_settled_minor) == (1, 2000, 2000)


# ---- the audit in the resolving transaction ---------------------------------------------------------------------


async def test_on_resolved_runs_in_the_resolving_transaction_once(ledger: Ledger, engine: AsyncEngine) -> None:
    await _mixed_day(ledger, engine)
    await reconcile(ledger, _mixed_day_lines())
    case_id = case_id_for(PSP, "line:orphan")
    seen: list[tuple[str, str | None]] = []

    async def audit(conn: AsyncConnection, rc: ReconCase) -> None:
        # Inside the transaction: the case reads resolved there, before the commit.
        state = (await conn.execute(select(recon_cases.c.state).where(recon_cases.c.case_id == rc.case_id))
                 ).scalar_one()
        seen.append((state, rc.resolution_action))

    async def failing(conn: AsyncConnection, rc: ReconCase) -> None:
        raise RuntimeError("the audit log is down")

    before = await everything(engine)
    with pytest.raises(RuntimeError):
        await _resolve(ledger, "line:orphan", "write_off", on_resolved=failing)
    assert await everything(engine) == before  # the resolution rolled back with its audit
    resolved = await _resolve(ledger, "line:orphan", "write_off", on_resolved=audit)
    assert seen == [("resolved", "write_off")] and resolved.case_id == case_id
    assert await _resolve(ledger, "line:orphan", "write_off", on_resolved=audit) == resolved  # a replay
    assert seen == [("resolved", "write_off")]
    await assert_invariants(engine)
