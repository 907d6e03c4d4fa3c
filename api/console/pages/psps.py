"""`/ops/psps`: every PSP's circuit, rates and latency over the window its circuit breaker judges, and the forced
circuit (open / closed / auto) per PSP; `/ops/methods`: every payment method with its switch, off and on. Both
through the functions of the JSON routes (api/routes/routing.py), as README: Corrections describes them."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from api.console import actions
from api.console.guard import ActionForm, Session, actor
from api.console.rendering import ConsoleRoute, render
from api.routes.routing import method_switches, psp_health_now

router = APIRouter(prefix="/ops", route_class=ConsoleRoute, include_in_schema=False)

CIRCUIT_FORCES = ("open", "closed", "auto")


@router.get("/psps")
async def psp_health(request: Request, session: Session) -> HTMLResponse:
    return render(request, "psps.html", session=session, psps=await psp_health_now(request), forces=CIRCUIT_FORCES)


@router.post("/psps/{psp}/circuit")
async def force_circuit(psp: str, request: Request, session: Session, form: ActionForm) -> Response:
    # The state is checked by the JSON route's model (an unknown one is the console's "Invalid form" page).
    return await actions.then_back(request, session, "/ops/psps", actions.take(
        request, actor(session), "psp.circuit.force", psp, {"state": form.get("state")}, None))


@router.get("/methods")
async def methods(request: Request, session: Session) -> HTMLResponse:
    return render(request, "methods.html", session=session, methods=await method_switches(request))


@router.post("/methods/{method}")
async def switch_method(method: str, request: Request, session: Session, form: ActionForm) -> Response:
    enabled = {"true": True, "false": False}.get(str(form.get("enabled")), form.get("enabled"))
    return await actions.then_back(request, session, "/ops/methods", actions.take(
        request, actor(session), "method.switch", method, {"enabled": enabled}, None))
