"""`/ops/incidents`: the monitor's incidents (open or resolved, by class), one incident's page (diagnosis, figures,
timeline, affected payments and payouts, corrections taken, the report, the corrections it calls for) with its
resolve form and its report to download; all through the functions of the JSON routes (api/routes/incidents.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import get_args

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from api.console import actions, flash
from api.console.guard import ActionForm, Session, actor
from api.console.rendering import ConsoleRoute, refusal, render
from api.routes import incidents as incident_routes
from api.routes.routing import psp_health_now
from api.schemas import IncidentDetailView, IncidentResolveRequest, IncidentView
from incidents.detection import NO_PSP
from incidents.report import report_markdown
from payloop.db import utcnow
from workflows.types import DepositStatus, PayoutStatus

router = APIRouter(prefix="/ops", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
CIRCUIT_CLASSES = ("failed_deposits", "gateway_downtime")  # their corrections depend on the PSP's circuit
STATES = ("open", "resolved")
CLASSES = get_args(incident_routes.IncidentClass)


@dataclass(frozen=True)
class Correction:
    """One correction the incident's class calls for (README: Operations, "what to do"), on one target. `action` is
    the audit action the correction is recorded under, `fields` the body it takes besides `incident_id`; `api_call`
    the ops API route that takes it; `console_path` the console page where it is taken, when there is one (else it
    is a button on the incident's page: `take_correction`)."""

    action: str
    label: str
    target: str
    api_call: str
    fields: dict[str, str] = field(default_factory=dict)
    console_path: str | None = None


@dataclass(frozen=True)
class CircuitNow:
    """The circuit of the PSP an incident names, as PSP health shows it now."""

    state: str  # closed | open | half_open
    forced: str | None  # held open or closed by ops; None: the breaker's


def corrections_for(incident: IncidentDetailView, circuit: CircuitNow | None = None) -> list[Correction]:
    """The corrections an open incident calls for, one entry per target (none once it is resolved): only those
    that can do something now — a re-sync only for what waits on its PSP, send-now only for a deferred payout, a
    circuit forced open only while its breaker has not opened it. `circuit`: the named PSP's, when it has one."""
    if incident.state != "open":
        return []
    scope = dict(part.split("=", 1) for part in incident.scope.split(",") if "=" in part)
    psp, method = scope.get("psp", ""), scope.get("method", "")
    payments_at_psp = [a.id for a in incident.affected if a.kind == "payment" and a.status in DepositStatus.AT_PSP]
    in_review = [a.id for a in incident.affected if a.kind == "payment" and a.status == DepositStatus.IN_REVIEW]

    def resync(kind: str, object_id: str) -> Correction:
        return Correction(f"{kind}.resync", "Re-sync with its PSP", object_id,
                          f"POST /v1/ops/{kind}s/{object_id}/resync")

    def switch_method_off(label: str) -> Correction:
        return Correction("method.switch", label, method, f"POST /v1/ops/methods/{method} {{enabled: false}}",
                          {"enabled": "false"})

    match incident.incident_class:
        case "failed_deposits":
            if psp == NO_PSP:  # failing before any PSP took them: the method itself
                return [switch_method_off("Switch the method off while it lasts")]
            # The PSP's circuit first: the router fails over to the method's other PSPs, which may be fine.
            return [*_circuit_corrections(psp, circuit),
                    switch_method_off("Switch the method off at every PSP (if its other PSPs fail too)")]
        case "delayed_withdrawals":
            return [Correction("payout.send_now", "Send the deferred payout now", a.id,
                               f"POST /v1/ops/payouts/{a.id}/send-now") if a.deferred_until else resync("payout", a.id)
                    for a in incident.affected
                    if a.kind == "payout" and (a.deferred_until or a.status in PayoutStatus.AT_PSP)]
        case "callback_errors":
            return [Correction("webhook.replay", "Replay the PSP's dead letters", psp,
                               "POST /v1/ops/webhooks/replay {psp}", {"psp": psp})]
        case "currency_mismatch":
            return [Correction("payment.review", "Decide the deposit's review", payment_id,
                               f"POST /v1/ops/payments/{payment_id}/review",
                               console_path=f"/ops/payments/{payment_id}") for payment_id in in_review] \
                + [resync("payment", payment_id) for payment_id in payments_at_psp]
        case "transaction_timeout":
            return [resync("payment", payment_id) for payment_id in payments_at_psp]
        case "gateway_downtime":
            return _circuit_corrections(psp, circuit or CircuitNow(str(incident.figures_now.get("circuit")), None))
    return []


def _circuit_corrections(psp: str, circuit: CircuitNow | None) -> list[Correction]:
    """Back to auto when ops hold it; forced open only when its breaker has not opened it (forcing pins it: no
    half-open probes, so it could not recover by itself, and the incident could not clear)."""
    if circuit is not None and circuit.forced is not None:
        return [Correction("psp.circuit.force", f"Hand its circuit back to its breaker (held {circuit.forced} now)",
                           psp, f"POST /v1/ops/psps/{psp}/circuit {{state: auto}}", {"state": "auto"})]
    if circuit is not None and circuit.state == "open":
        return []
    return [Correction("psp.circuit.force", "Force its circuit open (back to auto once it recovers)", psp,
                       f"POST /v1/ops/psps/{psp}/circuit {{state: open}}", {"state": "open"})]


async def circuit_now(request: Request, incident: IncidentDetailView) -> CircuitNow | None:
    """The circuit of the PSP the incident names, for the classes whose corrections depend on it."""
    psp = dict(part.split("=", 1) for part in incident.scope.split(",") if "=" in part).get("psp")
    if incident.state != "open" or incident.incident_class not in CIRCUIT_CLASSES or psp in (None, NO_PSP):
        return None
    found = next((h for h in await psp_health_now(request) if h["psp"] == psp), None)
    return CircuitNow(found["circuit"], found["forced"]) if found is not None else None


@router.get("/incidents")
async def incident_list(request: Request, session: Session) -> Response:
    asked = {name: value for name, value in request.query_params.items() if value}
    state = asked.get("state", "open")
    class_ = asked.get("class")
    before = asked.get("before")
    if state not in STATES or (class_ is not None and class_ not in CLASSES) or (
            before is not None and not re.fullmatch(incident_routes.INCIDENT_ID_PATTERN, before)):
        return refusal(request, 422, "Invalid filter", "Pick a state and a class from the lists.", session)
    page = await incident_routes.incident_page(request, state=state, incident_class=class_, limit=PAGE_SIZE,
                                               before=before)
    next_query = {"state": state, **({"class": class_} if class_ else {}), "before": page.next_before} \
        if page.next_before else None
    now = utcnow()
    return render(request, "incidents.html", session=session, page=page, state=state, class_=class_, states=STATES,
                  classes=CLASSES, next_query=next_query,
                  durations={i.incident_id: duration_text(i, now) for i in page.incidents})


@router.get("/incidents/{incident_id}")
async def incident_page(incident_id: str, request: Request, session: Session) -> HTMLResponse:
    incident_id = _known_shape(incident_id)
    incident = await incident_routes.incident_detail(request, incident_id)
    # Without the ledger's invariants (a scan of the whole ledger): the report's downloads run them.
    report = report_markdown(await incident_routes.report_document(request, incident_id, ledger_check=False))
    figure_names = list(dict.fromkeys([*incident.figures_at_open, *incident.figures_now]))
    return render(request, "incident.html", session=session, incident=incident, report=report,
                  corrections=corrections_for(incident, await circuit_now(request, incident)),
                  duration=duration_text(incident, utcnow()),
                  figure_names=figure_names)


@router.get("/incidents/{incident_id}/report.md")
async def report_as_markdown(incident_id: str, request: Request, _session: Session) -> Response:
    incident_id = _known_shape(incident_id)
    document = await incident_routes.report_document(request, incident_id)
    return Response(report_markdown(document), media_type="text/markdown; charset=utf-8",
                    headers=_attachment(f"{incident_id}.md"))


@router.get("/incidents/{incident_id}/report.json")
async def report_as_json(incident_id: str, request: Request, _session: Session) -> Response:
    incident_id = _known_shape(incident_id)
    document = await incident_routes.report_document(request, incident_id)
    return JSONResponse(document, headers=_attachment(f"{incident_id}.json"))


@router.post("/incidents/{incident_id}/resolve")
async def resolve(incident_id: str, request: Request, session: Session, form: ActionForm) -> Response:
    incident_id = _known_shape(incident_id)
    await incident_routes.resolve(request, actor(session), incident_id, IncidentResolveRequest(note=form.get("note")))
    return RedirectResponse(f"/ops/incidents/{incident_id}", status_code=303)


@router.post("/incidents/{incident_id}/corrections")
async def take_correction(incident_id: str, request: Request, session: Session, form: ActionForm) -> Response:
    """One of the corrections the incident's page offers, named by its action and target: taken only while the
    incident still calls for it (its body is the one the page offered, not the form's), with the incident's id."""
    incident_id = _known_shape(incident_id)
    incident = await incident_routes.incident_detail(request, incident_id)
    back_to = f"/ops/incidents/{incident_id}"
    offered = next((c for c in corrections_for(incident, await circuit_now(request, incident))
                    if c.console_path is None
                    and (c.action, c.target) == (form.get("action"), form.get("target"))), None)
    if offered is None:
        not_now = flash.Flash("refused", "Refused — not called for: the incident does not call for that correction "
                              f"now (it is {incident.state}, or what it names has moved on). Nothing was changed.")
        return flash.leave(RedirectResponse(back_to, status_code=303), request, session, not_now)
    fields = {name: value == "true" if name == "enabled" else value for name, value in offered.fields.items()}
    return await actions.then_back(request, session, back_to, actions.take(
        request, actor(session), offered.action, offered.target, fields, incident_id))


def duration_text(incident: IncidentView, now: datetime) -> str:
    """Opened to resolved (to now while open), to the minute: "2 h 05 min", "4 min", "under a minute"."""
    ended = datetime.fromisoformat(incident.resolved_at) if incident.resolved_at else now
    minutes = int((ended - datetime.fromisoformat(incident.opened_at)).total_seconds()) // 60
    if minutes < 1:
        return "under a minute"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _known_shape(incident_id: str) -> str:
    """An id of the monitor's shape, else the JSON route's 404 (a path the API's pattern would refuse)."""
    if not re.fullmatch(incident_routes.INCIDENT_ID_PATTERN, incident_id):
        raise incident_routes.incident_not_found()
    return incident_id


def _attachment(filename: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{filename}"'}
