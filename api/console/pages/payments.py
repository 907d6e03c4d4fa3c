"""`/ops/payments`: search deposits (by id, player, PSP reference; status, method, PSP), one deposit's page (facts,
money, audit entries, webhook events, its Temporal UI history), the review decision and, for a deposit not final yet,
the re-sync with its PSP (README: Corrections)."""

from __future__ import annotations

import re
from typing import get_args

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from api.console import actions
from api.console.guard import ActionForm, Session, actor
from api.console.rendering import ConsoleRoute, refusal, render
from api.routes import payments
from api.schemas import PLAYER_ID_PATTERN, DepositReviewRequest
from ledger.payments import PaymentFilter
from players import audit
from workflows.types import DepositStatus

router = APIRouter(prefix="/ops/payments", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
STATUSES = get_args(payments.DepositStatusFilter)
# The search form's fields → the pattern the JSON list checks them against.
FILTER_PATTERNS = {
    "player_id": PLAYER_ID_PATTERN, "psp_reference": payments.PSP_REFERENCE_PATTERN, "psp": payments.PSP_NAME_PATTERN,
    "method": payments.METHOD_PATTERN, "status": "^(" + "|".join(STATUSES) + ")$",
    "before": payments.PAYMENT_ID_PATTERN,
}


@router.get("")
async def search(request: Request, session: Session) -> Response:
    asked = {name: value.strip() for name, value in request.query_params.items() if value.strip()}
    if payment_id := asked.get("payment_id"):
        if not payments.PAYMENT_ID_RE.fullmatch(payment_id):
            return refusal(request, 422, "Invalid search", "A payment id is pay_ and 24 hex digits.", session)
        return RedirectResponse(f"/ops/payments/{payment_id}", status_code=303)
    wrong = [name for name, pattern in FILTER_PATTERNS.items()
             if name in asked and not re.fullmatch(pattern, asked[name])]
    if wrong:
        return refusal(request, 422, "Invalid search", f"Not valid: {', '.join(wrong)}.", session)
    wanted = PaymentFilter(**{name: asked.get(name) for name in ("status", "player_id", "psp", "method",
                                                                 "psp_reference")})
    page = await payments.deposit_page(request, wanted, PAGE_SIZE, asked.get("before"))
    next_query = {**asked, "before": page.next_before} if page.next_before else None
    psps = sorted(p.name for p in request.app.state.routing.psps)
    return render(request, "payments.html", session=session, page=page, asked=asked, statuses=STATUSES,
                  methods=sorted(request.app.state.methods), psps=psps, next_query=next_query)


@router.get("/{payment_id}")
async def payment_page(payment_id: str, request: Request, session: Session) -> HTMLResponse:
    view = await payments.ops_payment(request, payment_id)
    return render(request, "payment.html", session=session, payment=view,
                  at_psp=view.status in DepositStatus.AT_PSP,
                  audit_entries=await audit.entries(request.app.state.engine, f"payment:{payment_id}"),
                  webhook_events=await request.app.state.webhook_inbox.events_about(payment_id))


@router.post("/{payment_id}/review")
async def review(payment_id: str, request: Request, session: Session, form: ActionForm) -> Response:
    body = DepositReviewRequest(decision=form.get("decision"), reviewer=form.get("reviewer"),
                                reason=form.get("reason") or None, amount=form.get("amount") or None)
    await payments.decide_review(request, actor(session), payment_id, body)
    # Carried out or still under way (a refund at the PSP), the payment's page shows where it stands.
    return RedirectResponse(f"/ops/payments/{payment_id}", status_code=303)


@router.post("/{payment_id}/resync")
async def resync(payment_id: str, request: Request, session: Session, _form: ActionForm) -> Response:
    if not payments.PAYMENT_ID_RE.fullmatch(payment_id):  # the page to go back to is this payment's
        raise payments.payment_not_found()
    return await actions.then_back(request, session, f"/ops/payments/{payment_id}", actions.take(
        request, actor(session), "payment.resync", payment_id, {}, None))
