"""`/ops/alerts`: every alert, newest first, with what it is about (as `GET /v1/ops/alerts`)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response

from api.console.guard import Session
from api.console.rendering import ConsoleRoute, refusal, render
from api.engine import ui_url
from api.routes import incidents as incident_routes
from workflows.withdrawal import WithdrawalWorkflow

router = APIRouter(prefix="/ops", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
ALERT_ID_MAX = 2**31 - 1  # alerts.id is an INTEGER


@router.get("/alerts")
async def alert_list(request: Request, session: Session) -> Response:
    asked = {name: value.strip() for name, value in request.query_params.items() if value.strip()}
    kind = asked.get("kind")
    before = asked.get("before")
    if (kind is not None and not re.fullmatch(incident_routes.ALERT_KIND_PATTERN, kind)) or (
            before is not None and not (before.isdigit() and 1 <= int(before) <= ALERT_ID_MAX)):
        return refusal(request, 422, "Invalid filter",
                       'An alert kind is two words joined by a dot, e.g. "deposit.currency_mismatch".', session)
    page = await incident_routes.alert_page(request, kind=kind, limit=PAGE_SIZE, before=int(before) if before else None)
    next_query = {**({"kind": kind} if kind else {}), "before": page.next_before} if page.next_before else None
    settings = request.app.state.settings
    # A payout has no console page yet: its Temporal UI history is where it shows.
    payout_histories = {a.payout_id: ui_url(settings, WithdrawalWorkflow.workflow_id(a.payout_id))
                        for a in page.alerts if a.payout_id}
    return render(request, "alerts.html", session=session, page=page, kind=kind, next_query=next_query,
                  payout_histories=payout_histories)
