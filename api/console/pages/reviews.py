"""`/ops/reviews`: what waits for a person — deposits in review (decided on the payment's page or here, through
`/ops/payments/{id}/review`), payouts in review, open and escalated risk cases — and the payout and risk decisions."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from api.console.guard import ActionForm, Session, actor
from api.console.rendering import ConsoleRoute, render
from api.routes import payments, payouts, risk
from api.schemas import ReviewDecisionRequest, RiskCaseDecisionRequest
from ledger.payments import PaymentFilter

router = APIRouter(prefix="/ops/reviews", route_class=ConsoleRoute, include_in_schema=False)

QUEUE_SHOWN = 100  # per queue; the oldest are on the overview, the rest through the payments search and the API
ACTIVE_CASE_STATES = ("open", "escalated")


@router.get("")
async def queues(request: Request, session: Session) -> HTMLResponse:
    deposits = await payments.deposit_page(request, PaymentFilter(status="in_review"), QUEUE_SHOWN, None)
    cases = [case for state in ACTIVE_CASE_STATES
             for case in (await risk.case_page(request, state=state, limit=QUEUE_SHOWN)).cases]
    return render(request, "reviews.html", session=session, deposits=deposits.payments,
                  payouts=await payouts.payouts_by_status(request, "in_review"), risk_cases=cases)


@router.post("/payouts/{payout_id}")
async def decide_payout(payout_id: str, request: Request, session: Session, form: ActionForm) -> Response:
    body = ReviewDecisionRequest(decision=form.get("decision"), reviewer=form.get("reviewer"),
                                 reason=form.get("reason") or None)
    await payouts.decide_review(request, actor(session), payout_id, body)
    return RedirectResponse("/ops/reviews", status_code=303)


@router.post("/risk-cases/{case_id}")
async def decide_risk_case(case_id: str, request: Request, session: Session, form: ActionForm) -> Response:
    body = RiskCaseDecisionRequest(decision=form.get("decision"), note=form.get("note"))
    if not re.fullmatch(risk.CASE_ID_PATTERN, case_id):
        raise risk.case_not_found()
    await risk.decide_case(request, actor(session), case_id, body)
    return RedirectResponse("/ops/reviews", status_code=303)
