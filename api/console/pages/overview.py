"""`/ops`: the open incidents, PSP health, the review queues' sizes and oldest ages, the newest alerts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.console.guard import Session
from api.console.rendering import ConsoleRoute, render
from api.metrics import review_queues
from api.routes import incidents as incident_routes
from api.routes.routing import psp_health_now
from payloop.alerts import recent_alerts

router = APIRouter(prefix="/ops", route_class=ConsoleRoute, include_in_schema=False)

ALERTS_SHOWN = 20
INCIDENTS_SHOWN = 20  # the rest on /ops/incidents


@router.get("")
async def overview(request: Request, session: Session) -> HTMLResponse:
    engine = request.app.state.engine
    open_incidents = await incident_routes.incident_page(request, state="open", incident_class=None,
                                                         limit=INCIDENTS_SHOWN, before=None)
    return render(request, "overview.html", session=session, psps=await psp_health_now(request),
                  queues=await review_queues(engine), alerts=await recent_alerts(engine, ALERTS_SHOWN),
                  open_incidents=open_incidents)
