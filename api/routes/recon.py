"""Reconciliation for ops: start a run of a PSP's day, read runs and their cases, resolve a case, export the report.

- `POST /v1/ops/recon/runs {psp, date, as_of?}`: the run of that PSP, day and as-of (one id for the three, so asking
  again is the same run); 202 while it runs, 200 once it has ended. The run's row is opened here (its evaluation moment
  frozen), then `recon-<run id>` does the work (workflows/reconciliation.py).
- `GET /v1/ops/recon/runs?psp=&date=`, `GET /v1/ops/recon/runs/{run_id}`: counts and sums per class.
- `GET /v1/ops/recon/cases?state=&psp=&class=`, `GET /v1/ops/recon/cases/{case_id}`,
  `POST /v1/ops/recon/cases/{case_id}/resolve {action, amount?, rematch_with?, note}` (audited as
  `recon_case:<id>`).
- `GET /v1/ops/recon/report.csv?from=&to=`: per day, PSP, method and currency, streamed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio.common import WorkflowIDReusePolicy

from api import engine
from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses, validation_problem
from api.inputs import amount_in_minor_units
from api.schemas import (
    ReconCasePage,
    ReconCaseView,
    ReconClassTotal,
    ReconResolutionView,
    ReconResolveRequest,
    ReconRunPage,
    ReconRunRequest,
    ReconRunView,
)
from ledger import reconciliation as recon
from ledger.errors import AlreadyFinal, InvalidTransfer, RecordConflict, RecordNotFound
from payloop.money import to_decimal_string
from payloop.settings import Settings
from players import audit
from psp.registry import PROVIDERS
from workflows.deposit import DepositWorkflow
from workflows.dispute import DisputeWorkflow
from workflows.reconciliation import ReconciliationWorkflow
from workflows.refund import RefundWorkflow
from workflows.types import ReconInput
from workflows.withdrawal import WithdrawalWorkflow

ops_router = APIRouter(prefix="/v1/ops/recon", tags=["ops"], responses=problem_responses(503))

SETTLEMENT_TERMS = {provider.name: provider.settlement_terms for provider in PROVIDERS}
CLASSES = Literal["matched", "expected", "missing_in_ledger", "missing_at_psp", "amount_mismatch", "currency_mismatch",
                  "fee_variance", "duplicate", "status_mismatch"]
# A report spans at most a year and a day (the query aggregates; longer spans are several requests).
MAX_REPORT_DAYS = 366
# Ids as ledger/reconciliation.py makes them (a run's: `<psp>-<day>[-asof-<time>]`; a case's: `rc_<16 hex>`).
PSP_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
RUN_ID_PATTERN = r"^[a-z][a-z0-9_]{0,39}-[0-9]{4}-[0-9]{2}-[0-9]{2}(-asof-[0-9]{8}T[0-9]{6}Z)?$"
CASE_ID_PATTERN = r"^rc_[0-9a-f]{16}$"
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN)]
CaseId = Annotated[str, Path(pattern=CASE_ID_PATTERN)]
REPORT_COLUMNS = ("day", "psp", "method", "currency", "captures_count", "captures", "fees", "refunds", "payouts",
                  "chargebacks", "net_settled", "open_differences_count", "open_differences")


def run_not_found() -> Problem:
    return Problem(404, "recon_run_not_found", "Reconciliation run not found", "no run has this id")


def case_not_found() -> Problem:
    return Problem(404, "recon_case_not_found", "Reconciliation case not found", "no case has this id")


@ops_router.post("/runs", response_model=ReconRunView, status_code=202, responses={
    200: {"model": ReconRunView, "description": "the run had already ended: as it ended"}, **problem_responses(422)})
async def start_run(
    body: ReconRunRequest,
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
) -> JSONResponse:
    """Reconciles the PSP's settlement report of `date` against the ledger. `as_of` evaluates the settlement SLAs at
    that moment instead of now (to catch up on a day whose SLA has passed). The same PSP, day and as-of are one run:
    asking again returns it and posts nothing twice."""
    now = datetime.now(timezone.utc)
    day, as_of = _checked_run_request(body, now)
    state = request.app.state
    run = await recon.open_run(state.engine, psp=body.psp, day=day, as_of=as_of, now=now)
    if run.state == recon.RUNNING:
        # Whatever ran under this id before (a run re-opened after it failed), the run's row says it is not done,
        # and a run is idempotent: start it again unless it is running.
        await engine.start(state.temporal, state.settings, ReconciliationWorkflow.run,
                           ReconInput(body.psp, day.isoformat(), as_of.isoformat() if as_of else None),
                           workflow_id=ReconciliationWorkflow.workflow_id(run.run_id), resource={"run_id": run.run_id},
                           id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    view = _run_view(state.settings, run)
    return JSONResponse(view.model_dump(), status_code=202 if run.state == recon.RUNNING else 200)


def _checked_run_request(body: ReconRunRequest, now: datetime) -> tuple[date, datetime | None]:
    errors = []
    if body.psp not in SETTLEMENT_TERMS:
        errors.append({"field": "psp", "code": "unknown_psp", "message": f"one of {sorted(SETTLEMENT_TERMS)}"})
    if body.date > now.date():
        errors.append({"field": "date", "code": "future_day", "message": "a day not yet begun has no settlement"})
    elif body.date == now.date() and body.as_of is None:
        # Its report is still growing: a run of it is a look at a moment, never the day's own run (`<psp>-<day>`),
        # which the daily schedule makes once the day is over.
        errors.append({"field": "as_of", "code": "day_not_over",
                       "message": "today's report is not final: give as_of (e.g. now) for a run of it so far"})
    as_of = body.as_of
    if as_of is not None and as_of < datetime.combine(body.date, time(), timezone.utc):
        errors.append({"field": "as_of", "code": "before_day", "message": "as_of must not be before the day"})
    if errors:
        raise validation_problem(errors, "the run cannot be started")
    return body.date, as_of.astimezone(timezone.utc).replace(microsecond=0) if as_of is not None else None


@ops_router.get("/runs", response_model=ReconRunPage, responses=problem_responses(422))
async def list_runs(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
    psp: Annotated[str | None, Query(pattern=PSP_PATTERN)] = None,
    day: Annotated[date | None, Query(alias="date")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(pattern=RUN_ID_PATTERN, description="the previous page's next_before")] = None,
) -> ReconRunPage:
    try:
        runs = await recon.list_runs(request.app.state.engine, psp=psp, day=day, limit=limit + 1, before=before)
    except RecordNotFound:
        raise _unknown_cursor("run") from None
    page = runs[:limit]
    settings = request.app.state.settings
    return ReconRunPage(runs=[_run_view(settings, run) for run in page],
                        next_before=page[-1].run_id if len(runs) > limit else None)


@ops_router.get("/runs/{run_id}", response_model=ReconRunView, responses=problem_responses(404))
async def get_run(
    run_id: RunId, request: Request, _principal: Annotated[Principal, Depends(require_scope("ops"))],
) -> ReconRunView:
    run = await recon.get_run(request.app.state.engine, run_id)
    if run is None:
        raise run_not_found()
    return _run_view(request.app.state.settings, run)


@ops_router.get("/cases", response_model=ReconCasePage, responses=problem_responses(422))
async def list_cases(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
    state: Literal["open", "resolved"] | None = None,
    psp: Annotated[str | None, Query(pattern=PSP_PATTERN)] = None,
    class_: Annotated[CLASSES | None, Query(alias="class")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(pattern=CASE_ID_PATTERN, description="the previous page's next_before")] = None,
) -> ReconCasePage:
    return await case_page(request, state=state, psp=psp, class_=class_, limit=limit, before=before)


async def case_page(request: Request, *, state: str | None = None, psp: str | None = None,
                    class_: str | None = None, limit: int = 50, before: str | None = None) -> ReconCasePage:
    """A page of cases (the route and the ops console)."""
    try:
        cases = await recon.list_cases(request.app.state.engine, state=state, psp=psp, class_=class_,
                                       limit=limit + 1, before=before)
    except RecordNotFound:
        raise _unknown_cursor("case") from None
    page = cases[:limit]
    settings = request.app.state.settings
    return ReconCasePage(cases=[_case_view(settings, case) for case in page],
                         next_before=page[-1].case_id if len(cases) > limit else None)


@ops_router.get("/cases/{case_id}", response_model=ReconCaseView, responses=problem_responses(404))
async def get_case(
    case_id: CaseId, request: Request, _principal: Annotated[Principal, Depends(require_scope("ops"))],
) -> ReconCaseView:
    case = await recon.get_case(request.app.state.engine, case_id)
    if case is None:
        raise case_not_found()
    return _case_view(request.app.state.settings, case)


@ops_router.post("/cases/{case_id}/resolve", response_model=ReconCaseView, responses=problem_responses(404, 409, 422))
async def resolve_case(
    case_id: CaseId,
    body: ReconResolveRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("ops"))],
) -> ReconCaseView:
    """Closes a case: `accept` (no money moves), `adjust` (`amount`, signed: what the PSP owes us more, or less with
    a minus), `write_off` (the difference becomes the house's), `rematch` (`rematch_with`: our id of the movement the
    line really belongs to). Money moves as ledger transfers that name the case."""
    state = request.app.state
    case = await recon.get_case(state.engine, case_id)
    if case is None:
        raise case_not_found()
    currency = case.currency or case.ledger_currency
    amount_minor = _signed_amount(body.amount, currency) if body.amount is not None and currency else None
    now = datetime.now(timezone.utc)

    async def audited(conn: AsyncConnection, resolved: recon.ReconCase) -> None:
        # In the resolution's own transaction, once: a replayed resolution is not audited again.
        await audit.record(conn, actor=principal.client_id, action=f"recon.case.{body.action}",
                           subject=f"recon_case:{case_id}",
                           details={"amount_minor": amount_minor, "rematch_with": body.rematch_with,
                                    "note": body.note, "class": resolved.class_,
                                    "transfer_ids": list(resolved.resolution_transfer_ids or [])},
                           now=now)

    try:
        resolved = await recon.resolve_case(state.ledger, case_id, action=body.action, amount_minor=amount_minor,
                                            rematch_with=body.rematch_with, note=body.note,
                                            resolved_by=principal.client_id, now=now,
                                            terms=SETTLEMENT_TERMS.get(case.psp), on_resolved=audited)
    except recon.RematchFailed as err:
        raise Problem(409, "rematch_failed", "The line does not match that movement",
                      f"against {body.rematch_with} it would be {err.would_be_class}",
                      would_be_class=err.would_be_class) from None
    except recon.AlreadySettled as err:
        raise Problem(409, "item_already_settled", "Already settled",
                      f"{err}: the line or its movement was settled meanwhile; only accept closes this case") from None
    except (AlreadyFinal, RecordConflict) as err:
        raise Problem(409, "case_already_resolved", "Case already resolved", str(err)) from None
    except (InvalidTransfer, ValueError) as err:
        raise validation_problem([{"field": "body", "code": "invalid_resolution", "message": str(err)}],
                                 str(err)) from None
    return _case_view(state.settings, resolved)


def _unknown_cursor(what: str) -> Problem:
    return validation_problem([{"field": "query.before", "code": "unknown", "message": f"no {what} has this id"}],
                              f"before names no {what}")


def _signed_amount(amount: str, currency: str) -> int:
    negative = amount.startswith("-")
    minor = amount_in_minor_units(amount.removeprefix("-"), currency)
    return -minor if negative else minor


@ops_router.get("/report.csv", response_class=StreamingResponse, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "the report, one row per group"},
    **problem_responses(422)})
async def report_csv(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
    day_from: Annotated[date, Query(alias="from", description="first day, inclusive (YYYY-MM-DD)")],
    day_to: Annotated[date, Query(alias="to", description="last day, inclusive (YYYY-MM-DD)")],
) -> StreamingResponse:
    """Per settlement day, PSP, method and currency: captures, fees, refunds, payouts, chargebacks, net settled and
    the differences still open — in decimal strings of the currency."""
    if day_from > day_to:
        raise validation_problem([{"field": "query.from", "code": "range", "message": "from must not be after to"}])
    if day_to - day_from >= timedelta(days=MAX_REPORT_DAYS):
        raise validation_problem([{"field": "query.to", "code": "range",
                                   "message": f"at most {MAX_REPORT_DAYS} days"}])
    rows = await recon.settlement_report(request.app.state.engine, from_day=day_from, to_day=day_to)
    filename = f"settlement-{day_from.isoformat()}-{day_to.isoformat()}.csv"
    return StreamingResponse(_csv(rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _csv(rows: list[recon.ReportRow]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for row in rows:
        def decimal(minor: int, currency: str = row.currency) -> str:
            return to_decimal_string(minor, currency)

        writer.writerow((row.day.isoformat(), row.psp, row.method or "", row.currency, row.captures,
                         decimal(row.captures_gross_minor), decimal(row.fees_minor), decimal(row.refunds_minor),
                         decimal(row.payouts_minor), decimal(row.chargebacks_minor), decimal(row.net_settled_minor),
                         row.open_cases, decimal(row.open_differences_minor)))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _run_view(settings: Settings, run: recon.ReconRun) -> ReconRunView:
    return ReconRunView(
        run_id=run.run_id, psp=run.psp, date=run.day.isoformat(),
        as_of=run.as_of.isoformat() if run.as_of else None, evaluated_at=run.evaluated_at.isoformat(),
        state=run.state, failure_reason=run.failure_reason,
        started_at=run.started_at.isoformat(), finished_at=run.finished_at.isoformat() if run.finished_at else None,
        classes={name: ReconClassTotal(count=total["count"], amounts={
            currency: to_decimal_string(minor, currency) for currency, minor in total["sums_minor"].items()})
            for name, total in (run.counts or {}).items()},
        temporal_ui_url=engine.ui_url(settings, ReconciliationWorkflow.workflow_id(run.run_id)),
    )


def _case_view(settings: Settings, c: recon.ReconCase) -> ReconCaseView:
    def decimal(minor: int | None, currency: str | None) -> str | None:
        return to_decimal_string(minor, currency) if minor is not None and currency else None

    return ReconCaseView(
        case_id=c.case_id, psp=c.psp, date=c.day.isoformat(), class_=c.class_, state=c.state, kind=c.kind,
        item_key=c.item_key, payment_id=c.payment_id, line_id=c.line_id, psp_reference=c.psp_reference,
        booked_on=c.booked_on.isoformat() if c.booked_on else None,
        reported_currency=c.currency, reported_gross=decimal(c.gross_minor, c.currency),
        reported_fee=decimal(c.fee_minor, c.currency),
        ledger_currency=c.ledger_currency, ledger_gross=decimal(c.ledger_gross_minor, c.ledger_currency),
        ledger_fee=decimal(c.ledger_fee_minor, c.ledger_currency),
        first_run_id=c.first_run_id, last_run_id=c.last_run_id, created_at=c.created_at.isoformat(),
        resolution=None if c.resolution_action is None or c.resolved_at is None else ReconResolutionView(
            action=c.resolution_action, amount=decimal(c.resolution_amount_minor, c.currency or c.ledger_currency),
            rematch_with=c.resolution_rematch_with, note=c.resolution_note or "", resolved_by=c.resolved_by or "",
            resolved_at=c.resolved_at.isoformat(), transfer_ids=list(c.resolution_transfer_ids or [])),
        temporal_ui_url=_case_workflow_url(settings, c),
    )


def _case_workflow_url(settings: Settings, c: recon.ReconCase) -> str | None:
    """The history of the payment (refund, payout, dispute) the case is about; none for a line of no payment."""
    if c.item_key is None:
        return None
    if c.kind == "capture":
        workflow_id = DepositWorkflow.workflow_id(c.item_key)
    elif c.kind == "refund":
        workflow_id = RefundWorkflow.workflow_id(c.item_key)
    elif c.kind == "payout":
        workflow_id = WithdrawalWorkflow.workflow_id(c.item_key)
    else:  # the chargeback kinds: `<psp>:<dispute id>`
        psp, _, dispute_id = c.item_key.partition(":")
        workflow_id = DisputeWorkflow.workflow_id(psp, dispute_id)
    return engine.ui_url(settings, workflow_id)
