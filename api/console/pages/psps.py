"""`/ops/psps`: every PSP's circuit, rates and latency over the window its circuit breaker judges."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.console.guard import Session
from api.console.rendering import ConsoleRoute, render
from api.routes.routing import psp_health_now

router = APIRouter(prefix="/ops", route_class=ConsoleRoute, include_in_schema=False)


@router.get("/psps")
async def psp_health(request: Request, session: Session) -> HTMLResponse:
    return render(request, "psps.html", session=session, psps=await psp_health_now(request))
