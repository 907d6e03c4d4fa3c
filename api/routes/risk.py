"""AML cases for ops (risk/aml.py opens them, risk/cases.py keeps them):

- `GET /v1/ops/risk/cases?state=&kind=&player_id=`: newest first, in keyset pages (`before`).
- `GET /v1/ops/risk/cases/{case_id}`: the case, its timeline, the pattern's payments and payouts and the player's
  newest ones, each with a link to its workflow in the Temporal UI.
- `POST /v1/ops/risk/cases/{case_id}/decide {decision: clear|escalate|report, note}` (audited as
  `risk_case:<id>` in the decision's transaction); a cleared or reported case is final (409 case_already_decided);
  an escalated one may still be cleared or reported.
- `GET /v1/ops/risk/cases/{case_id}/report?format=json|csv`: what the reviewer files.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from api import engine
from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses, validation_problem
from api.schemas import (
    PLAYER_ID_PATTERN,
    RiskCaseDecisionRequest,
    RiskCaseDetailView,
    RiskCaseEventView,
    RiskCasePage,
    RiskCaseView,
    RiskTransactionView,
)
from ledger.errors import RecordNotFound
from payloop.money import to_decimal_string
from payloop.settings import Settings
from players import audit
from risk import cases
from workflows.deposit import DepositWorkflow
from workflows.withdrawal import WithdrawalWorkflow

ops_router = APIRouter(prefix="/v1/ops/risk", tags=["ops"], responses=problem_responses(503))

# A case's id as risk/aml.py makes it: `rk_<16 hex>`.
CASE_ID_PATTERN = r"^rk_[0-9a-f]{16}$"
CaseId = Annotated[str, Path(pattern=CASE_ID_PATTERN)]
KINDS = Literal["cdd_threshold", "structuring", "rapid_in_out", "unusual_route", "shared_instrument"]
STATES = Literal["open", "escalated", "cleared", "reported"]
Ops = Annotated[Principal, Depends(require_scope("ops"))]


def case_not_found() -> Problem:
    return Problem(404, "risk_case_not_found", "Risk case not found", "no case has this id")


@ops_router.get("/cases", response_model=RiskCasePage, responses=problem_responses(422))
async def list_cases(
    request: Request,
    _principal: Ops,
    state: STATES | None = None,
    kind: KINDS | None = None,
    player_id: Annotated[str | None, Query(pattern=PLAYER_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(pattern=CASE_ID_PATTERN, description="the previous page's next_before")] = None,
) -> RiskCasePage:
    return await case_page(request, state=state, kind=kind, player_id=player_id, limit=limit, before=before)


async def case_page(request: Request, *, state: str | None = None, kind: str | None = None,
                    player_id: str | None = None, limit: int = 50, before: str | None = None) -> RiskCasePage:
    """A page of cases (the route and the ops console's review queue)."""
    try:
        found = await cases.list_cases(request.app.state.engine, state=state, kind=kind, player_id=player_id,
                                       limit=limit + 1, before=before)
    except RecordNotFound:
        raise validation_problem([{"field": "query.before", "code": "unknown", "message": "no case has this id"}],
                                 "before names no case") from None
    page = found[:limit]
    return RiskCasePage(cases=[_case_view(case) for case in page],
                        next_before=page[-1].case_id if len(found) > limit else None)


@ops_router.get("/cases/{case_id}", response_model=RiskCaseDetailView, responses=problem_responses(404))
async def get_case(case_id: CaseId, request: Request, _principal: Ops) -> RiskCaseDetailView:
    detail = await cases.case_detail(request.app.state.engine, case_id)
    if detail is None:
        raise case_not_found()
    return _detail_view(request.app.state.settings, detail)


@ops_router.post("/cases/{case_id}/decide", response_model=RiskCaseView, responses=problem_responses(404, 409, 422))
async def decide(case_id: CaseId, body: RiskCaseDecisionRequest, request: Request, principal: Ops) -> RiskCaseView:
    """`escalate` keeps the case active (the player's payouts keep going to review); `clear` and `report` close it
    for good. The decision and its audit entry are one transaction."""
    return await decide_case(request, principal, case_id, body)


async def decide_case(request: Request, principal: Principal, case_id: str,
                      body: RiskCaseDecisionRequest) -> RiskCaseView:
    """The decision, audited as the principal's (the route and the ops console)."""
    now = datetime.now(timezone.utc)

    async def audited(conn: AsyncConnection, case: cases.RiskCase) -> None:
        await audit.record(conn, actor=principal.client_id, action=f"risk.case.{body.decision}",
                           subject=f"risk_case:{case_id}",
                           details={"note": body.note, "kind": case.kind, "player_id": case.player_id}, now=now)

    try:
        case = await cases.decide(request.app.state.engine, case_id, body.decision, body.note, principal.client_id,
                                  now, on_decided=audited)
    except RecordNotFound:
        raise case_not_found() from None
    except cases.CaseAlreadyDecided as err:
        raise Problem(409, "case_already_decided", "Case already decided",
                      f"the case is {err.state}: its decision is final", state=err.state) from None
    return _case_view(case)


@ops_router.get("/cases/{case_id}/report", responses={
    200: {"content": {"application/json": {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}}},
          "description": "the case's report: subject, transactions, scenario, reasons, reviewer"},
    **problem_responses(404, 422)})
async def case_report(
    case_id: CaseId, request: Request, _principal: Ops, format: Literal["json", "csv"] = "json",  # noqa: A002
) -> Response:
    document = await cases.report(request.app.state.engine, case_id)
    if document is None:
        raise case_not_found()
    if format == "json":
        return JSONResponse(document)
    return Response(cases.report_csv(document), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="risk-case-{case_id}.csv"'})


def _case_view(c: cases.RiskCase) -> RiskCaseView:
    return RiskCaseView(**_case_fields(c))


def _case_fields(c: cases.RiskCase) -> dict[str, Any]:
    return dict(case_id=c.case_id, player_id=c.player_id, kind=c.kind, state=c.state, reason=c.reason,
                subject_ids=list(c.subject_ids), facts=dict(c.facts), hits=c.hits,
                created_at=c.created_at.isoformat(), updated_at=c.updated_at.isoformat(), decided_by=c.decided_by,
                decided_at=c.decided_at.isoformat() if c.decided_at else None, decision_note=c.decision_note)


def _detail_view(settings: Settings, d: cases.CaseDetail) -> RiskCaseDetailView:
    pattern = set(d.case.subject_ids)

    def view(t: cases.Transaction) -> RiskTransactionView:
        workflow_id = (DepositWorkflow.workflow_id(t.id) if t.type == "deposit"
                       else WithdrawalWorkflow.workflow_id(t.id))
        return RiskTransactionView(type=t.type, id=t.id, created_at=t.created_at.isoformat(),
                                   amount=to_decimal_string(t.amount_minor, t.currency), currency=t.currency,
                                   method=t.method, status=t.status, in_pattern=t.id in pattern,
                                   temporal_ui_url=engine.ui_url(settings, workflow_id))

    return RiskCaseDetailView(
        **_case_fields(d.case),
        events=[RiskCaseEventView(kind=e.kind, at=e.at.isoformat(), actor=e.actor, reason=e.reason,
                                  subject_ids=e.subject_ids, facts=e.facts) for e in d.events],
        transactions=[view(t) for t in d.transactions], payments=[view(t) for t in d.payments],
        payouts=[view(t) for t in d.payouts],
    )
