"""Incidents and alerts for ops (the monitor opens incidents, incidents/ keeps them):

- `GET /v1/ops/incidents?state=&incident_class=`: newest first, in keyset pages (`before`).
- `GET /v1/ops/incidents/{id}`: class, scope, state, diagnosis, figures at open and now, the timeline, the affected
  payments and payouts with their status now and their Temporal UI link, and the corrections taken (audit entries
  naming the incident).
- `POST /v1/ops/incidents/{id}/resolve {note}`: audited with the incident's id; if the cause still holds, the
  monitor's next pass opens a new incident.
- `GET /v1/ops/incidents/{id}/report`: JSON, or Markdown (`Accept: text/markdown` or `?format=md`).
- `GET /v1/ops/alerts?kind=`: every alert, newest first, with the payment, payout, refund or reconciliation run it
  is about.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api import engine
from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses, validation_problem
from api.schemas import (
    INCIDENT_ID_PATTERN, AffectedView, AlertPage, AlertView, CorrectionView, IncidentDetailView, IncidentEventView,
    IncidentPage, IncidentResolveRequest, IncidentView,
)
from incidents import report as reports
from incidents import store
from incidents.models import INCIDENT_CLASSES
from ledger.errors import RecordNotFound
from payloop.alerts import alerts
from players import audit
from workflows.deposit import DepositWorkflow
from workflows.types import DepositState, WithdrawalState
from workflows.withdrawal import WithdrawalWorkflow

ops_router = APIRouter(prefix="/v1/ops", tags=["ops"], responses=problem_responses(503))

# An incident's running payments and payouts are asked of their workflows this many at a time (a page view's
# queries).
RUNNING_QUERIES_AT_ONCE = 8
IncidentId = Annotated[str, Path(pattern=INCIDENT_ID_PATTERN)]
IncidentClass = Literal["failed_deposits", "delayed_withdrawals", "callback_errors", "currency_mismatch",
                        "transaction_timeout", "gateway_downtime"]
Ops = Annotated[Principal, Depends(require_scope("ops"))]
ALERT_KIND_PATTERN = r"^[a-z_]{1,20}\.[a-z_]{1,40}$"
# An alert's kind starts with what its reference is (workflows/*.py and api/routes/webhooks.py raise them).
ALERT_SUBJECTS = {"deposit": "payment_id", "dispute": "payment_id", "payout": "payout_id", "withdrawal": "payout_id",
                  "refund": "refund_id", "recon": "recon_run"}
assert set(IncidentClass.__args__) == set(INCIDENT_CLASSES)  # type: ignore[attr-defined]


def incident_not_found() -> Problem:
    return Problem(404, "incident_not_found", "Incident not found", "no incident has this id")


@ops_router.get("/incidents", response_model=IncidentPage, responses=problem_responses(422))
async def list_incidents(
    request: Request,
    _principal: Ops,
    state: Literal["open", "resolved"] | None = None,
    incident_class: IncidentClass | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(pattern=INCIDENT_ID_PATTERN,
                                        description="the previous page's next_before")] = None,
) -> IncidentPage:
    return await incident_page(request, state=state, incident_class=incident_class, limit=limit, before=before)


async def incident_page(request: Request, *, state: str | None, incident_class: str | None, limit: int,
                        before: str | None) -> IncidentPage:
    """A page of incidents, newest first (the JSON list and the console's)."""
    try:
        found = await store.list_incidents(request.app.state.engine, state=state, incident_class=incident_class,
                                           limit=limit + 1, before=before)
    except RecordNotFound:
        raise validation_problem([{"field": "query.before", "code": "unknown", "message": "no incident has this id"}],
                                 "before names no incident") from None
    page = found[:limit]
    return IncidentPage(incidents=[IncidentView(**_fields(i)) for i in page],
                        next_before=page[-1].incident_id if len(found) > limit else None)


@ops_router.get("/incidents/{incident_id}", response_model=IncidentDetailView, responses=problem_responses(404))
async def get_incident(incident_id: IncidentId, request: Request, _principal: Ops) -> IncidentDetailView:
    return await incident_detail(request, incident_id)


async def incident_detail(request: Request, incident_id: str) -> IncidentDetailView:
    """The incident with its timeline, affected payments and payouts (status now, Temporal UI link) and the
    corrections taken; incident_not_found when there is none."""
    db: AsyncEngine = request.app.state.engine
    found = await reports.detail(db, incident_id)
    if found is None:
        raise incident_not_found()
    settings = request.app.state.settings

    def link(kind: str, object_id: str) -> str:
        workflow_id = (DepositWorkflow.workflow_id(object_id) if kind == "payment"
                       else WithdrawalWorkflow.workflow_id(object_id))
        return engine.ui_url(settings, workflow_id)

    running = await _running_states(request, [a for a in found.affected if a.status == reports.RUNNING])

    def affected_view(a: reports.AffectedNow) -> AffectedView:
        state = running.get((a.kind, a.object_id))
        if state is None:
            return AffectedView(kind=a.kind, id=a.object_id, status=a.status, final=a.final,
                                temporal_ui_url=link(a.kind, a.object_id))
        return AffectedView(kind=a.kind, id=a.object_id, status=state.status,
                            final=state.status in (reports.DEPOSIT_FINAL if a.kind == "payment" else
                                                   reports.PAYOUT_FINAL),
                            deferred_until=getattr(state, "deferred_until", None),
                            temporal_ui_url=link(a.kind, a.object_id))

    return IncidentDetailView(
        **_fields(found.incident),
        timeline=[IncidentEventView(kind=e.kind, at=e.at.isoformat(), actor=e.actor, details=e.details)
                  for e in found.timeline],
        affected=[affected_view(a) for a in found.affected],
        corrections=[CorrectionView(**c) for c in await _corrections(db, incident_id)],
    )


@ops_router.post("/incidents/{incident_id}/resolve", response_model=IncidentView,
                 responses=problem_responses(404, 409, 422))
async def resolve_incident(incident_id: IncidentId, body: IncidentResolveRequest, request: Request,
                           principal: Ops) -> IncidentView:
    """Resolve it by hand (audited, with the incident's id, in the same transaction). While its cause holds, the
    monitor's next pass opens a new incident (`reopened` on its timeline)."""
    return await resolve(request, principal, incident_id, body)


async def resolve(request: Request, principal: Principal, incident_id: str,
                  body: IncidentResolveRequest) -> IncidentView:
    """Ops resolve an incident (the JSON route and the console's form): incident_not_found, or 409 when it is
    resolved already."""
    now = datetime.now(timezone.utc)

    async def audited(conn: AsyncConnection, incident: store.Incident) -> None:
        await audit.record(conn, actor=principal.client_id, action="incident.resolve",
                           subject=f"incident:{incident_id}",
                           details={"note": body.note, "incident_class": incident.incident_class,
                                    "scope": incident.scope}, now=now, incident_id=incident_id)

    try:
        incident = await store.resolve(request.app.state.engine, incident_id, principal.client_id, body.note, now,
                                       on_resolved=audited)
    except RecordNotFound:
        raise incident_not_found() from None
    except store.IncidentAlreadyResolved:
        raise Problem(409, "incident_already_resolved", "Incident already resolved",
                      "the incident is resolved; a new one opens if its cause holds") from None
    return IncidentView(**_fields(incident))


@ops_router.get("/incidents/{incident_id}/report", responses={
    200: {"content": {"application/json": {"schema": {"type": "object"}},
                      "text/markdown": {"schema": {"type": "string"}}},
          "description": "detection time, diagnosis, corrections taken, validation, duration"},
    **problem_responses(404, 422)})
async def incident_report(incident_id: IncidentId, request: Request, _principal: Ops,
                          format: Literal["json", "md"] | None = None) -> Response:  # noqa: A002
    document = await report_document(request, incident_id)
    markdown = format == "md" or (format is None and "text/markdown" in request.headers.get("accept", ""))
    if markdown:
        return Response(reports.report_markdown(document), media_type="text/markdown; charset=utf-8")
    return JSONResponse(document)


async def report_document(request: Request, incident_id: str, *, ledger_check: bool = True) -> dict[str, Any]:
    """The incident's report as a JSON-able dict (incidents/report.py; reports.report_markdown renders it);
    `ledger_check=False` (a console page view) leaves out the ledger's invariants, which scan the whole ledger."""
    db: AsyncEngine = request.app.state.engine
    document = await reports.report(db, incident_id, await _corrections(db, incident_id), datetime.now(timezone.utc),
                                    ledger_check=ledger_check)
    if document is None:
        raise incident_not_found()
    return document


@ops_router.get("/alerts", response_model=AlertPage, responses=problem_responses(422))
async def list_alerts(
    request: Request,
    _principal: Ops,
    kind: Annotated[str | None, Query(pattern=ALERT_KIND_PATTERN, description='e.g. "deposit.currency_mismatch"')]
    = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, description="the previous page's next_before")] = None,
) -> AlertPage:
    return await alert_page(request, kind=kind, limit=limit, before=before)


async def alert_page(request: Request, *, kind: str | None, limit: int, before: int | None) -> AlertPage:
    """Newest first (by id, through the primary key or ix_alerts_kind_id)."""
    query = sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit + 1)
    if kind is not None:
        query = query.where(alerts.c.kind == kind)
    if before is not None:
        query = query.where(alerts.c.id < before)
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    page = rows[:limit]
    return AlertPage(alerts=[_alert_view(row) for row in page],
                     next_before=page[-1].id if len(rows) > limit else None)


def _alert_view(row: Any) -> AlertView:
    about = {name: None for name in ("payment_id", "payout_id", "refund_id", "recon_run")}
    subject = ALERT_SUBJECTS.get(row.kind.split(".")[0])
    if subject is not None:
        about[subject] = row.reference
    return AlertView(id=row.id, kind=row.kind, at=row.at.isoformat(), reference=row.reference,
                     details={str(k): str(v) for k, v in row.details.items()}, **about)


async def _running_states(request: Request,
                          running: list[reports.AffectedNow]) -> dict[tuple[str, str], DepositState | WithdrawalState]:
    """Each running payment's or payout's state, asked of its workflow (the payments and payouts tables have one
    only once it ended or went to review): its status and, for a payout, whether it is deferred. One whose workflow
    cannot answer now is left out (it shows as running)."""
    if not running:
        return {}
    client = request.app.state.temporal
    gate = asyncio.Semaphore(RUNNING_QUERIES_AT_ONCE)

    async def ask(a: reports.AffectedNow) -> DepositState | WithdrawalState | None:
        workflow_id, query, result_type = (
            (DepositWorkflow.workflow_id(a.object_id), DepositWorkflow.status, DepositState) if a.kind == "payment"
            else (WithdrawalWorkflow.workflow_id(a.object_id), WithdrawalWorkflow.status, WithdrawalState))
        async with gate:
            try:
                return await engine.state(client, workflow_id, query, result_type, not_found=incident_not_found())
            except Problem:
                return None

    states = await asyncio.gather(*(ask(a) for a in running))
    return {(a.kind, a.object_id): state for a, state in zip(running, states) if state is not None}


async def _corrections(db: AsyncEngine, incident_id: str) -> list[dict[str, Any]]:
    """The audit entries naming the incident, oldest first (through ix_audit_log_incident_id)."""
    a = audit.audit_log.c
    async with db.connect() as conn:
        rows = await conn.execute(sa.select(a.at, a.actor, a.action, a.subject, a.details)
                                  .where(a.incident_id == incident_id).order_by(a.id))
        return [{"at": r.at.isoformat(), "actor": r.actor, "action": r.action, "subject": r.subject,
                 "details": r.details} for r in rows]


def _fields(i: store.Incident) -> dict[str, Any]:
    return dict(incident_id=i.incident_id, incident_class=i.incident_class, scope=i.scope, state=i.state,
                diagnosis=i.diagnosis, opened_at=i.opened_at.isoformat(), updated_at=i.updated_at.isoformat(),
                resolved_at=i.resolved_at.isoformat() if i.resolved_at else None, resolved_by=i.resolved_by,
                first_seen_at=i.first_seen_at.isoformat() if i.first_seen_at else None,
                figures_at_open=i.figures_at_open, figures_now=i.figures_now)
