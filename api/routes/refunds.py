"""Refunds of a deposit: `POST /v1/payments/{payment_id}/refunds`, `GET /v1/payments/{payment_id}/refunds` and
`GET /v1/refunds/{refund_id}`.

The request itself reserves the refund in the ledger (one database transaction that refuses more than the payment's
refundable amount and holds the player's funds), so concurrent refunds of one payment are decided by the database,
and a refusal is the answer; then `refund-<refund_id>` takes it to the PSP.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from api import corrections, engine
from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses
from api.idempotency import IDEMPOTENCY_KEY_DOC, answer_json, answer_once, resolve_key
from api.inputs import amount_in_minor_units, check_sandbox_scenario
from api.routes.payments import owned_payment, review_refused
from api.schemas import RefundCreated, RefundList, RefundRequest, RefundView, ReviewDecisionRequest
from ledger.errors import InsufficientFunds
from ledger.payments import payment_money
from ledger.refunds import RefundRecord, RefundRefused, get_refund, payment_refunds, request_refund
from payloop.money import to_decimal_string
from payloop.settings import Settings
from psp.scenarios import REFUND_SCENARIOS
from workflows.refund import RefundWorkflow
from workflows.types import DepositState, RefundInput, RefundState, ReviewDecision

router = APIRouter(tags=["refunds"], responses=problem_responses(503))
ops_router = APIRouter(prefix="/v1/ops/refunds", tags=["ops"], responses=problem_responses(503))

REFUND_ENDPOINT = "POST /v1/payments/{payment_id}/refunds"
REFUND_ID_RE = re.compile(r"ref_[0-9a-f]{24}")
# The ledger's refusal code → status and title; every refusal also says what is still refundable.
_REFUSALS = {
    "refund_exceeds_refundable": (409, "Refund exceeds the refundable amount"),
    "payment_not_refundable": (409, "Payment not refundable"),
    "payment_not_found": (404, "Payment not found"),
    "currency_mismatch": (422, "Currency mismatch"),
}


def refund_not_found() -> Problem:
    return Problem(404, "refund_not_found", "Refund not found", "no refund has this id")


@router.post("/v1/payments/{payment_id}/refunds", status_code=201, response_model=RefundCreated,
             responses=problem_responses(402, 404, 409, 422, 504))
async def create_refund(
    payment_id: str,
    body: RefundRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", examples=["refund-1"],
                                                  description=IDEMPOTENCY_KEY_DOC)] = None,
) -> JSONResponse:
    """Refunds (part of) a credited deposit from the player's balance. 409 when it exceeds what is refundable
    (captured less refunded, pending, disputed and charged back); 402 when the player no longer has the money."""
    if body.allow_shortfall and "ops" not in principal.scopes:
        raise Problem(403, "insufficient_scope", "Forbidden", "allow_shortfall needs a key with the 'ops' scope")
    key = resolve_key(idempotency_key, body.idempotency_key)
    check_sandbox_scenario(body.meta.sandbox_scenario, REFUND_SCENARIOS)
    payment = await owned_payment(request, principal, payment_id)
    amount_minor = amount_in_minor_units(body.amount, payment.currency)
    return answer_json(*await answer_once(
        request.app.state.idempotency, principal.client_id, REFUND_ENDPOINT, key,
        {"payment_id": payment_id, **body.model_dump(exclude={"idempotency_key"})}, "ref",
        lambda refund_id: _refund(request, payment, refund_id, body, amount_minor),
    ))


async def _refund(
    request: Request, payment: DepositState, refund_id: str, body: RefundRequest, amount_minor: int
) -> tuple[int, dict]:
    """Reserves the refund, then starts its workflow. Both are idempotent on the refund id, so a retry after a
    crash between them (the key is released then) finishes what the first attempt began."""
    try:
        record = await request_refund(
            request.app.state.ledger, refund_id=refund_id, payment_id=payment.payment_id,
            client_id=payment.client_id, amount_minor=amount_minor, currency=payment.currency, reason=body.reason,
            funding="player", allow_shortfall=body.allow_shortfall, now=datetime.now(timezone.utc),
        )
    except RefundRefused as refused:
        return await _refusal(request, payment, refused)
    except InsufficientFunds:
        return 402, Problem(402, "insufficient_funds", "Insufficient funds",
                            "the player's available balance does not cover the refund; nothing was reserved",
                            payment_id=payment.payment_id).body()
    settings: Settings = request.app.state.settings
    workflow_input = RefundInput(
        refund_id=refund_id, payment_id=payment.payment_id, client_id=payment.client_id,
        player_id=payment.player_id, amount_minor=amount_minor, currency=payment.currency, reason=body.reason,
        funding="player", allow_shortfall=body.allow_shortfall, sandbox_scenario=body.meta.sandbox_scenario,
        webhook_timeout_seconds=settings.refund_webhook_timeout_seconds,
        status_poll_attempts=settings.refund_status_poll_attempts,
        status_poll_interval_seconds=settings.refund_status_poll_interval_seconds,
    )
    # A finished workflow of this id is this very refund, already done: the answer is the same.
    await engine.start(request.app.state.temporal, settings, RefundWorkflow.run, workflow_input,
                       workflow_id=RefundWorkflow.workflow_id(refund_id), resource={"refund_id": refund_id})
    created = RefundCreated(refund_id=refund_id, payment_id=payment.payment_id, status=record.status,
                            amount=to_decimal_string(amount_minor, payment.currency), currency=payment.currency)
    return 201, created.model_dump()


async def _refusal(request: Request, payment: DepositState, refused: RefundRefused) -> tuple[int, dict]:
    status, title = _REFUSALS.get(refused.code, (409, "Refund refused"))
    money = await payment_money(request.app.state.engine, payment.payment_id)
    refundable = to_decimal_string(money.refundable_minor if money else 0, payment.currency)
    return status, Problem(status, refused.code, title, str(refused), payment_id=payment.payment_id,
                           refundable_amount=refundable).body()


@router.get("/v1/payments/{payment_id}/refunds", response_model=RefundList, responses=problem_responses(404))
async def list_payment_refunds(
    payment_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
) -> RefundList:
    """The payment's refunds as the ledger records them, oldest first (also those a review decision made)."""
    payment = await owned_payment(request, principal, payment_id)
    records = await payment_refunds(request.app.state.engine, payment.payment_id)
    settings = request.app.state.settings
    return RefundList(refunds=[refund_view(settings, record, None) for record in records])


@router.get("/v1/refunds/{refund_id}", response_model=RefundView, responses=problem_responses(404))
async def get_refund_view(
    refund_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
) -> RefundView:
    if not REFUND_ID_RE.fullmatch(refund_id):
        raise refund_not_found()
    record = await get_refund(request.app.state.engine, refund_id)
    try:
        state = await engine.state(request.app.state.temporal, RefundWorkflow.workflow_id(refund_id),
                                   RefundWorkflow.status, RefundState, not_found=refund_not_found())
    except Problem as problem:
        # Reserved, but its workflow never started (the client did not retry): the record alone tells it.
        if problem.status != 404 or record is None:
            raise
        state = None
    known = state if state is not None else record
    if known is None or known.client_id != principal.client_id:
        raise Problem(403, "forbidden", "Forbidden", "this refund belongs to another client")
    return refund_view(request.app.state.settings, record, state)


@ops_router.post("/{refund_id}/review", response_model=RefundView, responses=problem_responses(404, 409, 422))
async def review_refund(
    refund_id: str,
    body: ReviewDecisionRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("ops"))],
) -> RefundView:
    """Decide a refund in review (its PSP's outcome unknown, or an answer that is not the refund asked for), having
    checked the PSP's own report: approve = the PSP made it (the held money is posted), reject = it did not (the
    money is released). The workflow writes the audit entry `refund:<id>` itself."""
    if not REFUND_ID_RE.fullmatch(refund_id):
        raise refund_not_found()
    await corrections.check_incident(request.app.state.engine, body.incident_id)
    decision = ReviewDecision(decision=body.decision, reviewer=f"{principal.client_id}/{body.reviewer}",
                              reason=body.reason, incident_id=body.incident_id)
    state = await engine.update(request.app.state.temporal, RefundWorkflow.workflow_id(refund_id),
                                RefundWorkflow.review, decision, not_found=refund_not_found(),
                                rejected=review_refused)
    record = await get_refund(request.app.state.engine, refund_id)
    return refund_view(request.app.state.settings, record, state)


def refund_view(settings: Settings, record: RefundRecord | None, state: RefundState | None) -> RefundView:
    """The workflow's state where there is one (it is at least as new as the record: each step updates the record
    before the state), the ledger's record for the rest."""
    if state is not None:
        fee_minor = state.fee_minor if state.fee_minor is not None else record.fee_minor if record else None
        return _view(settings, state.refund_id, state.payment_id, state.status, state.amount_minor, state.currency,
                     psp=state.psp or (record.psp if record else None),
                     psp_reference=state.psp_reference or (record.psp_refund_reference if record else None),
                     failure_code=state.failure_code, review_reason=state.review_reason, fee_minor=fee_minor,
                     created_at=state.created_at, updated_at=state.updated_at)
    assert record is not None
    return _view(settings, record.refund_id, record.payment_id, record.status, record.amount_minor, record.currency,
                 psp=record.psp, psp_reference=record.psp_refund_reference, failure_code=record.failure_code,
                 review_reason=record.review_reason, fee_minor=record.fee_minor,
                 created_at=record.created_at.isoformat(), updated_at=record.updated_at.isoformat())


def _view(settings: Settings, refund_id: str, payment_id: str, status: str, amount_minor: int, currency: str, *,
          psp: str | None, psp_reference: str | None, failure_code: str | None, review_reason: str | None,
          fee_minor: int | None, created_at: str, updated_at: str) -> RefundView:
    return RefundView(
        refund_id=refund_id, payment_id=payment_id, status=status,
        amount=to_decimal_string(amount_minor, currency), currency=currency, psp=psp, psp_reference=psp_reference,
        failure_code=failure_code, review_reason=review_reason,
        fee=to_decimal_string(fee_minor, currency) if fee_minor is not None else None,
        created_at=created_at, updated_at=updated_at,
        temporal_ui_url=engine.ui_url(settings, RefundWorkflow.workflow_id(refund_id)),
    )
