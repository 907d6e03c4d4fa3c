"""Withdrawals: start (`POST /v1/payouts/init`), read, cancel; ops review decisions."""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api import corrections, engine
from api.auth import Principal, require_scope
from api.client_address import player_address
from api.errors import Problem, problem_responses
from api.idempotency import IDEMPOTENCY_KEY_DOC, answer_json, answer_once, resolve_key
from api.inputs import amount_in_minor_units, check_sandbox_scenario
from api.risk_decisions import risk_views
from api.schemas import (
    CancelPayoutRequest, FxView, OpsActionRequest, PayoutInitRequest, PayoutInitResponse, PayoutView,
    ReviewDecisionRequest,
)
from ledger import player_account
from payloop.money import to_decimal_string
from players import audit
from psp.scenarios import PAYOUT_SCENARIOS
from workflows.types import CancelRequest, PayoutStatus, ReviewDecision, WithdrawalInput, WithdrawalState
from workflows.withdrawal import WithdrawalWorkflow

log = logging.getLogger("payloop.payouts")

router = APIRouter(prefix="/v1/payouts", tags=["payouts"], responses=problem_responses(503))
ops_router = APIRouter(prefix="/v1/ops/payouts", tags=["ops"], responses=problem_responses(503))

INIT_ENDPOINT = "POST /v1/payouts/init"
PAYOUT_ID_RE = re.compile(r"po_[0-9a-f]{24}")
PayoutStatusFilter = Literal["pending", "kyc_required", "in_review", "processing", "paid", "failed", "rejected",
                             "cancelled"]


def payout_not_found() -> Problem:
    return Problem(404, "payout_not_found", "Payout not found", "no payout has this id")


@router.post("/init", status_code=201, response_model=PayoutInitResponse,
             responses=problem_responses(402, 409, 422, 504))
async def init_payout(
    body: PayoutInitRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", examples=["order-1"],
                                                  description=IDEMPOTENCY_KEY_DOC)] = None,
) -> JSONResponse:
    key = resolve_key(idempotency_key, body.idempotency_key)
    return answer_json(*await initiate_withdrawal(request, principal, body, key))


async def initiate_withdrawal(
    request: Request, principal: Principal, body: PayoutInitRequest, key: str
) -> tuple[int, dict[str, Any], bool]:
    """A withdrawal started once per Idempotency-Key (the route and the checkout): (status, answer, replayed); a
    Problem for a request refused before anything started."""
    amount_minor = amount_in_minor_units(body.amount, body.currency)
    check_sandbox_scenario(body.meta.sandbox_scenario, PAYOUT_SCENARIOS)
    return await answer_once(
        request.app.state.idempotency, principal.client_id, INIT_ENDPOINT, key,
        body.model_dump(exclude={"idempotency_key"}), "po",
        lambda resource_id: _start_withdrawal(request, principal, resource_id, body, amount_minor),
        present=None if "wallet" in principal.scopes else _without_balance,
    )


def _without_balance(answer: dict) -> dict:
    """A payout's answer (201, or 402 insufficient_funds) for a key without the `wallet` scope: a player's
    balance is wallet information, so such a key learns that funds were short, not how much is there."""
    return {name: value for name, value in answer.items() if name != "available_balance"}


async def _start_withdrawal(
    request: Request, principal: Principal, payout_id: str, body: PayoutInitRequest, amount_minor: int
) -> tuple[int, dict]:
    settings = request.app.state.settings
    client: Client = request.app.state.temporal
    workflow_input = WithdrawalInput(
        payout_id=payout_id,
        client_id=principal.client_id,
        player_id=body.player_id,
        amount_minor=amount_minor,
        currency=body.currency,
        country=body.meta.country,
        sandbox_scenario=body.meta.sandbox_scenario,
        device_id=body.meta.device_id,
        ip_address=player_address(request),
        kyc_wait_timeout_seconds=settings.kyc_wait_timeout_seconds,
        review_wait_timeout_seconds=settings.review_wait_timeout_seconds,
        webhook_timeout_seconds=settings.payout_webhook_timeout_seconds,
        status_poll_attempts=settings.payout_status_poll_attempts,
        status_poll_interval_seconds=settings.payout_status_poll_interval_seconds,
        psp_down_deadline_seconds=settings.payout_psp_down_deadline_seconds,
        psp_down_first_retry_seconds=settings.payout_psp_down_first_retry_seconds,
    )
    workflow_id = WithdrawalWorkflow.workflow_id(payout_id)
    state = await engine.start_and_wait(client, settings, WithdrawalWorkflow.run, workflow_input,
                                        WithdrawalWorkflow.init_answer, workflow_id=workflow_id,
                                        resource={"payout_id": payout_id})
    if state is engine.ALREADY_FINISHED:
        state = await _state(client, payout_id)
    if state.failure_code == "insufficient_funds":
        available = await request.app.state.ledger.account_balance(player_account(body.player_id, body.currency))
        return 402, Problem(402, "insufficient_funds", "Insufficient funds",
                            "the available balance does not cover the payout", payout_id=payout_id,
                            available_balance=to_decimal_string(available.available if available else 0,
                                                                body.currency)).body()
    if state.available_after_hold_minor is None:  # ended before its hold was placed
        return 422, Problem(422, state.failure_code or "rejected", "Payout rejected", "the payout was refused",
                            payout_id=payout_id).body()
    available_minor = state.available_after_hold_minor or 0
    response = PayoutInitResponse(payout_id=payout_id, status=state.status,
                                  available_balance=to_decimal_string(available_minor, state.currency))
    return 201, response.model_dump()


@router.get("/{payout_id}", response_model=PayoutView, responses=problem_responses(404))
async def get_payout(
    payout_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
) -> PayoutView:
    state = await owned_payout(request, principal, payout_id)
    view = _view(request, state)
    if "ops" in principal.scopes:
        view.risk = await risk_views(request.app.state.engine, "payout", payout_id)
    return view


@router.post("/{payout_id}/cancel", response_model=PayoutView, responses=problem_responses(404, 409, 504))
async def cancel_payout(
    payout_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
    body: CancelPayoutRequest | None = None,
) -> PayoutView:
    await owned_payout(request, principal, payout_id)
    state = await engine.update(
        request.app.state.temporal, WithdrawalWorkflow.workflow_id(payout_id), WithdrawalWorkflow.cancel,
        CancelRequest(requested_by=principal.client_id, reason=body.reason if body else None),
        not_found=payout_not_found(),
        rejected=lambda err: Problem(409, "not_cancellable", "Payout cannot be cancelled", err.message),
    )
    await _audit(request, principal.client_id, "payout.cancel", payout_id, {"reason": body.reason if body else None})
    return _view(request, state)


@ops_router.post("/{payout_id}/review", response_model=PayoutView,
                 responses=problem_responses(404, 409, 422, 504))
async def review_payout(
    payout_id: str,
    body: ReviewDecisionRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("ops"))],
) -> PayoutView:
    return await decide_review(request, principal, payout_id, body)


async def decide_review(request: Request, principal: Principal, payout_id: str,
                        body: ReviewDecisionRequest) -> PayoutView:
    """Sends the review decision (the route and the ops console)."""
    if not PAYOUT_ID_RE.fullmatch(payout_id):
        raise payout_not_found()
    reviewer = f"{principal.client_id}/{body.reviewer}"
    await corrections.check_incident(request.app.state.engine, body.incident_id)
    state = await engine.update(
        request.app.state.temporal, WithdrawalWorkflow.workflow_id(payout_id), WithdrawalWorkflow.review,
        ReviewDecision(decision=body.decision, reviewer=reviewer, reason=body.reason, incident_id=body.incident_id),
        not_found=payout_not_found(),
        rejected=_review_refused,
    )
    # The workflow itself writes the audit entry (so a decision sent around the API is audited too).
    return _view(request, state)


@ops_router.get("", response_model=list[PayoutView])
async def list_payouts(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
    status: PayoutStatusFilter = "in_review",
) -> list[PayoutView]:
    """Payouts by status from Temporal visibility (e.g. the review queue); newest first, at most 100."""
    return await payouts_by_status(request, status)


async def payouts_by_status(request: Request, status: str) -> list[PayoutView]:
    """The route's list (and the ops console's payout review queue)."""
    client: Client = request.app.state.temporal
    # Only this deployment's payouts (its task queue): another deployment's in the same namespace would need that
    # deployment's workers to answer the status query, and one that cannot answer fails the whole listing.
    task_queue = request.app.state.settings.task_queue
    query = f"WorkflowType = 'WithdrawalWorkflow' AND PaymentStatus = '{status}' AND TaskQueue = '{task_queue}'"
    states = []
    async for execution in client.list_workflows(query, limit=100):
        states.append(await engine.state(client, execution.id, WithdrawalWorkflow.status, WithdrawalState,
                                         not_found=payout_not_found()))
    return [_view(request, s) for s in states]


@ops_router.post("/{payout_id}/resync", status_code=202, response_model=PayoutView,
                 responses=problem_responses(404, 409, 422))
async def resync_payout(
    payout_id: str, request: Request, principal: Annotated[Principal, Depends(require_scope("ops"))],
    body: OpsActionRequest | None = None,
) -> PayoutView:
    """Re-syncs a payout processing at its PSP (else 409 `not_at_psp`, or `already_final`) with its PSP, as
    `POST /v1/ops/payments/{id}/resync` does a deposit: the workflow asks the PSP (signal `status_recheck`), and
    only the PSP's answer posts or voids the hold."""
    return await resync(request, principal, payout_id, body)


async def resync(request: Request, principal: Principal, payout_id: str,
                 body: OpsActionRequest | None) -> PayoutView:
    """The payout's re-sync (the route and the ops console): 404, 409 already_final, or 409 not_at_psp (a payout
    not processing at its PSP: pending, kyc_required, in_review)."""
    state = await _ops_state(request, payout_id)
    if state.status in PayoutStatus.FINAL:
        raise corrections.already_final("payout", state.status)
    if state.status not in PayoutStatus.AT_PSP:
        raise corrections.not_at_psp("payout", state.status)
    await corrections.check_incident(request.app.state.engine, body.incident_id if body else None)
    await engine.signal(request.app.state.temporal, WithdrawalWorkflow.workflow_id(payout_id),
                        WithdrawalWorkflow.status_recheck, not_found=payout_not_found(),
                        finished=corrections.already_final("payout", "finished"))
    await corrections.record_alone(request.app.state.engine, principal, "payout.resync", f"payout:{payout_id}",
                                   {"status": state.status, "psp": state.psp}, body, datetime.now(timezone.utc))
    return _view(request, state)


@ops_router.post("/{payout_id}/send-now", status_code=202, response_model=PayoutView,
                 responses=problem_responses(404, 409, 422))
async def send_payout_now(
    payout_id: str, request: Request, principal: Annotated[Principal, Depends(require_scope("ops"))],
    body: OpsActionRequest | None = None,
) -> PayoutView:
    """Ends the wait of a payout deferred because no PSP of its method took it (`deferred_until` set): it tries
    its PSP now (signal `send_now`), rather than at `deferred_until`. Use it once the PSP is back; if it is still
    down the payout is deferred again. Accepted, not done: read the payout again for the outcome."""
    return await send_now(request, principal, payout_id, body)


async def send_now(request: Request, principal: Principal, payout_id: str,
                   body: OpsActionRequest | None) -> PayoutView:
    """The deferred payout sent now (the route and the ops console): 404, or 409 not_deferred."""
    state = await _ops_state(request, payout_id)
    if state.deferred_until is None:
        raise Problem(409, "not_deferred", "Payout is not deferred",
                      f"the payout is {state.status} and not waiting for its PSP to come back",
                      current_status=state.status)
    await corrections.check_incident(request.app.state.engine, body.incident_id if body else None)
    await engine.signal(request.app.state.temporal, WithdrawalWorkflow.workflow_id(payout_id),
                        WithdrawalWorkflow.send_now, not_found=payout_not_found(),
                        finished=Problem(409, "not_deferred", "Payout is not deferred", "the payout has finished"))
    await corrections.record_alone(request.app.state.engine, principal, "payout.send_now", f"payout:{payout_id}",
                                   {"deferred_until": state.deferred_until, "psp": state.psp}, body,
                                   datetime.now(timezone.utc))
    return _view(request, state)


async def _ops_state(request: Request, payout_id: str) -> WithdrawalState:
    if not PAYOUT_ID_RE.fullmatch(payout_id):
        raise payout_not_found()
    return await _state(request.app.state.temporal, payout_id)


def _review_refused(err: ApplicationError) -> Problem:
    if err.type == "InvalidDecision":
        return Problem(422, "invalid_decision", "Invalid decision", err.message)
    return Problem(409, "not_in_review", "Payout is not waiting for review", err.message)


async def _state(client: Client, payout_id: str) -> WithdrawalState:
    return await engine.state(client, WithdrawalWorkflow.workflow_id(payout_id), WithdrawalWorkflow.status, WithdrawalState,
                              not_found=payout_not_found())


async def owned_payout(request: Request, principal: Principal, payout_id: str) -> WithdrawalState:
    """The payout's state: 404 for an id that names none, 403 for another client's."""
    if not PAYOUT_ID_RE.fullmatch(payout_id):
        raise payout_not_found()
    state = await _state(request.app.state.temporal, payout_id)
    if state.client_id != principal.client_id:
        raise Problem(403, "forbidden", "Forbidden", "this payout belongs to another client")
    return state


async def _audit(request: Request, actor: str, action: str, payout_id: str, details: dict) -> None:
    async with request.app.state.engine.begin() as conn:
        await audit.record(conn, actor=actor, action=action, subject=f"payout:{payout_id}", details=details,
                           now=datetime.now(timezone.utc))


def _view(request: Request, s: WithdrawalState) -> PayoutView:
    hold = None
    if s.hold_transfer_id:
        hold = s.hold_resolution or "held"
    return PayoutView(
        payout_id=s.payout_id,
        status=s.status,
        amount=to_decimal_string(s.amount_minor, s.currency),
        currency=s.currency,
        player_id=s.player_id,
        psp=s.psp,
        method=s.method,
        psp_reference=s.psp_reference,
        failure_code=s.failure_code,
        review_reason=s.review_reason,
        reviewed_by=s.reviewed_by,
        deferred_until=s.deferred_until,
        hold=hold,
        fx=FxView.of(s.fx),
        risk_level=s.risk_level,
        created_at=s.created_at,
        updated_at=s.updated_at,
        temporal_ui_url=engine.ui_url(request.app.state.settings, WithdrawalWorkflow.workflow_id(s.payout_id)),
    )


async def nudge_kyc_waiting(client: Client, player_id: str) -> None:
    """Tells the player's payouts and deposits waiting for KYC to look again; each re-reads the status itself. Best
    effort: a waiting one also re-reads KYC on its own every hour, so Temporal being unreachable fails nothing here."""
    query = (f"WorkflowType IN ('WithdrawalWorkflow', 'DepositWorkflow') AND PlayerId = '{player_id}' "
             "AND PaymentStatus = 'kyc_required'")
    try:
        async for execution in client.list_workflows(query):
            with contextlib.suppress(RPCError):  # that one finished meanwhile
                # Both workflows take the signal by this name.
                await client.get_workflow_handle(execution.id).signal(WithdrawalWorkflow.kyc_changed)
    except (RPCError, TimeoutError) as err:
        log.warning("KYC of %s changed, but waiting payouts could not be told now (%s)", player_id, err)
