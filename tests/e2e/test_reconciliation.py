"""Reconciliation end to end on SQLite and PostgreSQL: the sandbox PSPs' settlement reports, fetched and parsed by the
connectors over HTTP, matched to the ledger by the reconciliation workflow, cases resolved through the ops API.

Each test books its PSPs' settlements on a day of its own (the sandbox's `book_on` control), so its report holds
only its own lines; the ledger dates its movements by our clock (today), so the movements no line settled are looked
at by a run of today, and asserted for this test's ids only. Every test ends with the ledger invariants.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from entrypoints.schedules import AML_SCHEDULE_ID, MONITOR_SCHEDULE_ID, ensure_schedules, recon_schedule_id
from ledger.models import ledger_transfers
from tests.e2e.conftest import Stack, eventually, new_player
from tests.e2e.test_money_after_payment import (
    open_dispute, refund, resolve_dispute, wait_dispute, wait_refund,
)
from tests.e2e.test_payouts import funded_player, payout, wait_payout
from workflows.reconciliation import ReconciliationWorkflow
from workflows.types import ActivityName, Alert, ErrorType, ReconInput, ReconRunSummary

CASE_CLASSES = {"missing_in_ledger", "missing_at_psp", "amount_mismatch", "currency_mismatch", "fee_variance",
                "duplicate", "status_mismatch"}
_days_taken: set[tuple[str, date]] = set()


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def own_day(stack: Stack, offset_days: int) -> date:
    """A settlement day no other test books on, nor on the days after it (a late line's); per backend, since each
    stack has its own sandbox and database."""
    day = utc_today() - timedelta(days=30 + 10 * offset_days)
    assert (stack.backend, day) not in _days_taken, "two tests on one settlement day"
    _days_taken.add((stack.backend, day))
    return day


@pytest.fixture
async def book_on(stack: Stack) -> AsyncIterator[Any]:
    """`await book_on(psp, day)`: that PSP settles on `day` (late ones the day after) until the test ends."""
    booked: set[str] = set()

    async def set_day(psp: str, day: date) -> None:
        response = await stack.sandbox.post(f"/control/{psp}/settlement", json={"book_on": day.isoformat()})
        assert response.status_code == 200, response.text
        booked.add(psp)

    yield set_day
    for psp in booked:
        response = await stack.sandbox.post(f"/control/{psp}/settlement", json={"book_on": None})
        assert response.status_code == 200, response.text


async def reconcile(stack: Stack, psp: str, day: date, as_of: datetime | None = None,
                    expect: tuple[int, ...] = (200, 202)) -> dict[str, Any]:
    """Start the run and wait for it to end; the run as the API shows it."""
    body: dict[str, Any] = {"psp": psp, "date": day.isoformat()}
    if as_of is not None:
        body["as_of"] = as_of.isoformat()
    response = await stack.api.post("/v1/ops/recon/runs", json=body)
    assert response.status_code in expect, response.text
    run_id = response.json()["run_id"]

    async def read() -> dict[str, Any]:
        response = await stack.api.get(f"/v1/ops/recon/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()

    run = await eventually(read, lambda r: r["state"] != "running", 60)
    assert run["state"] == "completed", run
    return run


def counts(run: dict[str, Any]) -> dict[str, int]:
    return {name: total["count"] for name, total in run["classes"].items() if total["count"]}


async def cases_of(stack: Stack, psp: str, ids: set[str], state: str | None = None) -> list[dict[str, Any]]:
    """The cases at `psp` about our ids (payment, refund, payout ids) or PSP references in `ids`."""
    params: dict[str, Any] = {"psp": psp, "limit": 200}
    if state:
        params["state"] = state
    response = await stack.api.get("/v1/ops/recon/cases", params=params)
    assert response.status_code == 200, response.text
    return [case for case in response.json()["cases"]
            if {case["item_key"], case["payment_id"], case["psp_reference"]} & ids]


async def deposit_at(stack: Stack, method: str, *, scenario: str | None = None, amount: str = "50.00",
                     player: str | None = None) -> dict[str, Any]:
    init = await stack.deposit(method=method, amount=amount, scenario=scenario, player_id=player or new_player())
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited", payment
    return payment


async def clearing_of(stack: Stack, account_id: str, references: set[str]) -> int:
    """What the ledger's transfers about `references` moved on a PSP clearing account (credits - debits)."""
    t = ledger_transfers
    async with stack.engine.connect() as conn:
        rows = await conn.execute(sa.select(t.c.debit_account_id, t.c.credit_account_id, t.c.amount)
                                  .where(t.c.status == "posted", t.c.reference.in_(references),
                                         sa.or_(t.c.debit_account_id == account_id,
                                                t.c.credit_account_id == account_id)))
        return sum(amount if credit == account_id else -amount for _debit, credit, amount in rows)


async def transfer_count(stack: Stack) -> int:
    async with stack.engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(ledger_transfers))).scalar_one()


def end_of(day: date, days_after: int = 0) -> datetime:
    return datetime.combine(day + timedelta(days=days_after + 1), time(), timezone.utc)


async def test_a_clean_day_matches_every_line_and_settles_the_receivable(stack: Stack, book_on: Any) -> None:
    """Captures, a refund, a payout, chargebacks won and lost, at the e-wallet and a card acquirer: every line
    matched, no case, and the PSP receivable of those movements back at zero."""
    day = own_day(stack, 0)
    for psp in ("ewallet", "card", "card_b"):
        await book_on(psp, day)
    player = await funded_player(stack, "100.00")  # an e-wallet deposit, played through, KYC verified
    paid = await wait_payout(stack, (await payout(stack, player, "40.00"))["payout_id"])
    assert paid["status"] == "paid", paid
    refunded = await deposit_at(stack, "ewallet", amount="30.00")
    refund_id = (await refund(stack, refunded["payment_id"], "10.00"))["refund_id"]
    assert (await wait_refund(stack, refund_id))["status"] == "succeeded"
    lost = await deposit_at(stack, "ewallet", amount="20.00")
    lost_dispute = await open_dispute(stack, lost["payment_id"], "20.00", psp="ewallet")
    await wait_dispute(stack, lost_dispute, "opened")
    await resolve_dispute(stack, lost_dispute, "lost", psp="ewallet")
    won = await deposit_at(stack, "ewallet", amount="25.00")
    won_dispute = await open_dispute(stack, won["payment_id"], "5.00", psp="ewallet")
    await wait_dispute(stack, won_dispute, "opened")
    await resolve_dispute(stack, won_dispute, "won", psp="ewallet")
    await wait_dispute(stack, lost_dispute, "lost")
    await wait_dispute(stack, won_dispute, "won")
    card = await deposit_at(stack, "card", amount="60.00")

    run = await reconcile(stack, "ewallet", day)
    # The player's deposit, the payout, 3 captures, the refund, 2 chargebacks, the reversal and the chargeback fee.
    assert counts(run) == {"matched": 10}, run
    card_run = await reconcile(stack, card["psp"], day)
    assert counts(card_run) == {"matched": 1}, card_run

    ewallet_ids = {refunded["payment_id"], lost["payment_id"], won["payment_id"], refund_id, paid["payout_id"],
                   f"ewallet:{lost_dispute}", f"ewallet:{won_dispute}"}
    assert await clearing_of(stack, "psp:ewallet:EUR", ewallet_ids) == 0
    assert await clearing_of(stack, f"psp:{card['psp']}:EUR", {card["payment_id"]}) == 0
    await stack.check_invariants()


async def test_each_discrepancy_gets_its_class_and_each_resolution_keeps_the_ledger_whole(
    stack: Stack, book_on: Any
) -> None:
    day = own_day(stack, 1)
    await book_on("ewallet", day)
    scenarios = ("settle_amount_differs", "settle_missing", "settle_twice", "settle_fee_differs", "settle_late")
    payments = {scenario: await deposit_at(stack, "ewallet", scenario=scenario) for scenario in scenarios}
    ids = {p["payment_id"]: scenario for scenario, p in payments.items()}
    orphan_reference = f"ewallet_orphan_{uuid.uuid4().hex[:8]}"
    response = await stack.sandbox.post("/control/ewallet/settlement", json={"orphan": {
        "date": day.isoformat(), "psp_reference": orphan_reference, "amount": "13.00", "currency": "EUR"}})
    assert response.status_code == 200, response.text

    run = await reconcile(stack, "ewallet", day)
    assert counts(run) == {"matched": 1, "amount_mismatch": 1, "duplicate": 1, "fee_variance": 1,
                           "missing_in_ledger": 1}, run
    cases = await cases_of(stack, "ewallet", set(ids) | {orphan_reference})
    assert sorted((ids.get(c["item_key"], c["psp_reference"]), c["class"]) for c in cases) == sorted([
        ("settle_amount_differs", "amount_mismatch"), ("settle_twice", "duplicate"),
        ("settle_fee_differs", "fee_variance"), (orphan_reference, "missing_in_ledger")])

    # Today's movements: the missing and the late one are expected while their SLA runs, and not cases.
    today = utc_today()
    before_sla = await reconcile(stack, "ewallet", today, as_of=datetime.now(timezone.utc))
    assert before_sla["classes"]["expected"]["count"] >= 2
    assert not await cases_of(stack, "ewallet", {payments["settle_missing"]["payment_id"],
                                                 payments["settle_late"]["payment_id"]})
    late_day = await reconcile(stack, "ewallet", day + timedelta(days=1))
    assert counts(late_day) == {"matched": 1}, late_day
    after_sla = await reconcile(stack, "ewallet", today, as_of=end_of(today, 2))
    missing = await cases_of(stack, "ewallet", {payments["settle_missing"]["payment_id"]})
    assert [c["class"] for c in missing] == ["missing_at_psp"], missing
    assert missing[0]["temporal_ui_url"].endswith(f"/workflows/deposit-{payments['settle_missing']['payment_id']}")
    assert after_sla["classes"]["missing_at_psp"]["count"] >= 1

    # Re-running changes nothing: the same run answers, and a run at another moment finds the same cases.
    transfers = await transfer_count(stack)
    again = await reconcile(stack, "ewallet", day, expect=(200,))
    assert again["run_id"] == run["run_id"] and counts(again) == counts(run)
    later = await reconcile(stack, "ewallet", day, as_of=end_of(day, 5))
    assert later["run_id"] != run["run_id"] and counts(later) == counts(run)
    assert await transfer_count(stack) == transfers
    assert {c["case_id"] for c in await cases_of(stack, "ewallet", set(ids) | {orphan_reference})} == \
        {c["case_id"] for c in [*cases, *missing]}
    await stack.check_invariants()

    by_class = {c["class"]: c for c in cases}
    await resolve(stack, by_class["amount_mismatch"]["case_id"], "adjust", amount="-1.00")
    await resolve(stack, by_class["fee_variance"]["case_id"], "write_off")
    await resolve(stack, by_class["duplicate"]["case_id"], "accept")
    # The orphan's 13.00 is not the 50.00 whose line went missing: a rematch is refused, with the class it would get.
    refused = await resolve(stack, by_class["missing_in_ledger"]["case_id"], "rematch",
                            rematch_with=payments["settle_missing"]["payment_id"], expect=409)
    assert refused["code"] == "rematch_failed" and refused["would_be_class"] == "amount_mismatch", refused
    await resolve(stack, missing[0]["case_id"], "write_off")
    await resolve(stack, by_class["missing_in_ledger"]["case_id"], "write_off")
    second = await resolve(stack, by_class["duplicate"]["case_id"], "write_off", expect=409)
    assert second["code"] == "case_already_resolved"
    assert not await cases_of(stack, "ewallet", set(ids) | {orphan_reference}, state="open")
    audit = await stack.api.get("/v1/ops/audit", params={"subject": f"recon_case:{by_class['duplicate']['case_id']}"})
    assert audit.status_code == 200 and audit.json()["entries"][0]["action"] == "recon.case.accept", audit.text
    await stack.check_invariants()


async def test_a_line_paid_for_another_movement_is_rematched(stack: Stack, book_on: Any) -> None:
    """The PSP reported a payment under a reference we do not know: rematched to our payment, it settles it."""
    day = own_day(stack, 2)
    await book_on("ewallet", day)
    payment = await deposit_at(stack, "ewallet", scenario="settle_missing", amount="42.00")
    response = await stack.sandbox.post("/control/ewallet/settlement", json={"orphan": {
        "date": day.isoformat(), "psp_reference": f"ewallet_x_{uuid.uuid4().hex[:8]}", "amount": "42.00",
        "currency": "EUR"}})  # charged the e-wallet's fee, as the ledger booked it
    assert response.status_code == 200, response.text
    run = await reconcile(stack, "ewallet", day)
    assert counts(run) == {"missing_in_ledger": 1}, run
    response = await stack.api.get("/v1/ops/recon/cases", params={"psp": "ewallet", "class": "missing_in_ledger"})
    case = next(c for c in response.json()["cases"] if c["last_run_id"] == run["run_id"])
    resolved = await resolve(stack, case["case_id"], "rematch", rematch_with=payment["payment_id"])
    assert resolved["state"] == "resolved" and resolved["resolution"]["action"] == "rematch"
    # The settlement a resolution posts names the case.
    assert await clearing_of(stack, "psp:ewallet:EUR", {payment["payment_id"], case["case_id"]}) == 0
    await stack.check_invariants()


async def resolve(stack: Stack, case_id: str, action: str, *, amount: str | None = None,
                  rematch_with: str | None = None, expect: int = 200) -> dict[str, Any]:
    body: dict[str, Any] = {"action": action, "note": "checked with the PSP's support"}
    if amount is not None:
        body["amount"] = amount
    if rematch_with is not None:
        body["rematch_with"] = rematch_with
    response = await stack.api.post(f"/v1/ops/recon/cases/{case_id}/resolve", json=body)
    assert response.status_code == expect, response.text
    return response.json()


async def test_run_requests_that_cannot_be_run_are_refused(stack: Stack) -> None:
    tomorrow = utc_today() + timedelta(days=1)
    for body, field in (({"psp": "nope", "date": "2026-01-01"}, "psp"),
                        ({"psp": "card", "date": tomorrow.isoformat()}, "date"),
                        ({"psp": "card", "date": utc_today().isoformat()}, "as_of"),  # today's: a moment's
                        ({"psp": "card", "date": "2026-01-02", "as_of": "2026-01-01T00:00:00Z"}, "as_of"),
                        ({"psp": "card", "date": "2026-01-02", "as_of": "2026-01-03T00:00:00"}, "as_of"),
                        ({"psp": "card", "date": 20260101}, "date"),
                        ({"psp": "card", "date": "2026-01-01", "extra": 1}, "extra")):
        response = await stack.api.post("/v1/ops/recon/runs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert any(field in e["field"] for e in response.json()["errors"]), response.text
    assert (await stack.api.get("/v1/ops/recon/runs/card-1999-01-01")).status_code == 404
    assert (await stack.api.get("/v1/ops/recon/cases/rc_0000000000000000")).status_code == 404
    response = await stack.api.post("/v1/ops/recon/cases/rc_0000000000000000/resolve",
                                    json={"action": "accept", "note": "x"})
    assert response.status_code == 404
    response = await stack.api.get("/v1/ops/recon/report.csv", params={"from": "2026-02-01", "to": "2026-01-01"})
    assert response.status_code == 422


async def test_the_report_exports_a_reconciled_day(stack: Stack, book_on: Any) -> None:
    day = own_day(stack, 3)
    await book_on("ewallet", day)
    await deposit_at(stack, "ewallet", amount="70.00")
    await deposit_at(stack, "ewallet", amount="30.00", scenario="settle_amount_differs")
    await reconcile(stack, "ewallet", day)
    response = await stack.api.get("/v1/ops/recon/report.csv", params={"from": day.isoformat(),
                                                                       "to": day.isoformat()})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    header, *rows = [line.split(",") for line in response.text.strip().splitlines()]
    assert header[:4] == ["day", "psp", "method", "currency"]
    row = dict(zip(header, rows[0]))
    assert len(rows) == 1 and row["psp"] == "ewallet" and row["method"] == "ewallet", rows
    assert row["captures_count"] == "1" and row["captures"] == "70.00"  # the matched one settled
    assert row["fees"] == "1.75" and row["net_settled"] == "68.25"  # the e-wallet's 2.5 %
    assert row["open_differences_count"] == "1" and row["open_differences"] == "29.00"
    await stack.check_invariants()


async def test_the_daily_schedule_reconciles_yesterday(stack: Stack) -> None:
    """`payloop schedules` makes a schedule per PSP; triggered, it reconciles yesterday and the day whose SLA ended."""
    ids = await ensure_schedules(stack.client, stack.settings, ["crypto"])
    schedule_id = recon_schedule_id("crypto")
    assert ids == [schedule_id, AML_SCHEDULE_ID, MONITOR_SCHEDULE_ID]  # the AML re-check and monitor are always there
    handle = stack.client.get_schedule_handle(schedule_id)
    try:
        assert await ensure_schedules(stack.client, stack.settings, ["crypto"]) == ids  # again: updated
        described = await handle.describe()
        assert described.schedule.policy.overlap.name == "SKIP"
        [calendar] = described.schedule.spec.calendars
        assert (calendar.hour[0].start, calendar.minute[0].start) == (2, 30)
        await handle.trigger()
        yesterday = utc_today() - timedelta(days=1)

        async def runs() -> list[dict[str, Any]]:
            response = await stack.api.get("/v1/ops/recon/runs", params={"psp": "crypto"})
            assert response.status_code == 200, response.text
            return [r for r in response.json()["runs"] if r["state"] == "completed"]

        done = await eventually(runs, lambda found: len(found) >= 2, 60)
        assert {r["date"] for r in done} >= {yesterday.isoformat(), (yesterday - timedelta(days=1)).isoformat()}

        # PAYLOOP_MONITOR_INTERVAL_SECONDS=0: the monitor's schedule is deleted, the others stay.
        monitor_off = stack.settings.model_copy(update={"monitor_interval_seconds": 0})
        assert await ensure_schedules(stack.client, monitor_off, ["crypto"]) == [schedule_id, AML_SCHEDULE_ID]
        with pytest.raises(RPCError):
            await stack.client.get_schedule_handle(MONITOR_SCHEDULE_ID).describe()
        assert await ensure_schedules(stack.client, monitor_off, ["crypto"]) == [schedule_id, AML_SCHEDULE_ID]
    finally:
        await handle.delete()
        for other in (AML_SCHEDULE_ID, MONITOR_SCHEDULE_ID):
            with contextlib.suppress(RPCError):  # the monitor's is gone when the test got that far
                await stack.client.get_schedule_handle(other).delete()


async def test_a_failing_day_of_the_daily_start_does_not_spare_the_other_its_verdict(
    temporal_env: WorkflowEnvironment,
) -> None:
    """The daily start's two runs are each tried: yesterday's report unreadable, the SLA day is still judged; then
    the workflow fails (visible in the UI) with both alerted or done. The activity is a stand-in on a queue of its own:
    what is under test is the workflow's order of business."""
    asked: list[tuple[str, str | None]] = []
    alerts: list[Alert] = []
    yesterday = (utc_today() - timedelta(days=1)).isoformat()

    @activity.defn(name=ActivityName.RECONCILE_DAY)
    async def reconcile_day(input: ReconInput) -> ReconRunSummary:
        asked.append((input.day or "", input.as_of))
        if input.day == yesterday:
            raise ApplicationError("line 7: not one CSV row", type=ErrorType.REPORT_UNREADABLE, non_retryable=True)
        return ReconRunSummary(f"card-{input.day}", "card", input.day or "", "completed", 2, {"matched": 3})

    @activity.defn(name=ActivityName.RAISE_ALERT)
    async def raise_alert(alert: Alert) -> None:
        alerts.append(alert)

    queue = f"recon-{uuid.uuid4().hex[:8]}"
    async with Worker(temporal_env.client, task_queue=queue, workflows=[ReconciliationWorkflow],
                      activities=[reconcile_day, raise_alert]):
        with pytest.raises(WorkflowFailureError):
            await temporal_env.client.execute_workflow(
                ReconciliationWorkflow.run, ReconInput("card", sla_days=2), id=f"recon-card-daily-{queue}",
                task_queue=queue)
    sla_day = (utc_today() - timedelta(days=3)).isoformat()
    assert [day for day, _ in asked] == [yesterday, sla_day]
    assert asked[1][1] is not None  # the SLA day judged as of the start
    assert [alert.kind for alert in alerts] == ["recon.run_failed"]
