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
from api.routes.incidents import IncidentDetailView, IncidentResolveRequest, IncidentView
from incidents.detection import NO_PSP
from incidents.report import report_markdown
from payloop.db import utcnow

router = APIRouter(prefix="/ops", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
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


def corrections_for(incident: IncidentDetailView) -> list[Correction]:
    """The corrections an open incident calls for, one entry per target (none once it is resolved)."""
    if incident.state != "open":
        return []
    scope = dict(part.split("=", 1) for part in incident.scope.split(",") if "=" in part)
    psp, method = scope.get("psp", ""), scope.get("method", "")
    payments_under_way = [a.id for a in incident.affected if a.kind == "payment" and not a.final]
    payouts_under_way = [a.id for a in incident.affected if a.kind == "payout" and not a.final]
    in_review = [a.id for a in incident.affected if a.kind == "payment" and a.status == "in_review"]

    def resync(payment_id: str) -> Correction:
        return Correction("payment.resync", "Re-sync with its PSP", payment_id,
                          f"POST /v1/ops/payments/{payment_id}/resync")

    match incident.incident_class:
        case "failed_deposits":
            # Deposits that failed before any PSP took them (psp=none) have no circuit to force.
            circuit = [] if psp == NO_PSP else [Correction(
                "psp.circuit.force", "Force the PSP's circuit open: the method's other PSPs take it (auto after)",
                psp, f"POST /v1/ops/psps/{psp}/circuit {{state: open}}", {"state": "open"})]
            return circuit + [Correction("method.switch", "Switch the method off while it fails everywhere", method,
                                         f"POST /v1/ops/methods/{method} {{enabled: false}}", {"enabled": "false"})]
        case "delayed_withdrawals":
            return [Correction("payout.send_now", "Send the deferred payout now", payout_id,
                               f"POST /v1/ops/payouts/{payout_id}/send-now") for payout_id in payouts_under_way]
        case "callback_errors":
            return [Correction("webhook.replay", "Replay the PSP's dead letters", psp,
                               "POST /v1/ops/webhooks/replay {psp}", {"psp": psp})]
        case "currency_mismatch":
            return [Correction("payment.review", "Decide the deposit's review", payment_id,
                               f"POST /v1/ops/payments/{payment_id}/review",
                               console_path=f"/ops/payments/{payment_id}") for payment_id in in_review] \
                + [resync(payment_id) for payment_id in in_review + payments_under_way]
        case "transaction_timeout":
            return [resync(payment_id) for payment_id in payments_under_way]
        case "gateway_downtime":
            return [Correction("psp.circuit.force", "Force its circuit open (back to auto once it recovers)", psp,
                               f"POST /v1/ops/psps/{psp}/circuit {{state: open}}", {"state": "open"})]
    return []


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
    report = report_markdown(await incident_routes.report_document(request, incident_id))
    figure_names = list(dict.fromkeys([*incident.figures_at_open, *incident.figures_now]))
    return render(request, "incident.html", session=session, incident=incident, report=report,
                  corrections=corrections_for(incident), duration=duration_text(incident, utcnow()),
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
    offered = next((c for c in corrections_for(incident) if c.console_path is None
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
