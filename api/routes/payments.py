"""Deposits: `POST /v1/payments/init` (Update-with-Start) and `GET /v1/payments/{payment_id}`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from datetime import datetime, timezone
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.auth import Principal, require_scope
from api.errors import Problem
from api.idempotency import fingerprint
from api.schemas import SANDBOX_SCENARIOS, PaymentInitRequest, PaymentInitResponse, PaymentView
from payloop.money import MoneyError, to_decimal_string, to_minor_units
from workflows.deposit import DepositWorkflow
from workflows.types import DepositInput, DepositState, DepositStatus, InitAnswer

router = APIRouter(prefix="/v1/payments", tags=["payments"])

INIT_ENDPOINT = "POST /v1/payments/init"
PAYMENT_ID_RE = re.compile(r"^pay_[0-9a-f]{24}$")


def deposit_workflow_id(payment_id: str) -> str:
    return f"deposit-{payment_id}"


def payment_id_for(client_id: str, idempotency_key: str) -> str:
    # Derived from the key, so a retry after a crash reaches the same workflow instead of paying twice.
    digest = hashlib.sha256(f"{client_id}\x00{idempotency_key}".encode()).hexdigest()
    return f"pay_{digest[:24]}"


def resolve_idempotency_key(header: str | None, body_key: str | None) -> str:
    if header is not None and body_key is not None and header != body_key:
        raise Problem(422, "idempotency_key_mismatch", "Idempotency-Key mismatch",
                      "the Idempotency-Key header and the body's idempotency_key differ")
    key = header if header is not None else body_key
    if not key:
        raise Problem(422, "idempotency_key_required", "Idempotency-Key required",
                      "send an Idempotency-Key header so a retried request cannot pay twice",
                      errors=[{"field": "Idempotency-Key", "code": "missing", "message": "required"}])
    if len(key) > 255 or not all(0x21 <= ord(ch) <= 0x7E for ch in key):
        raise Problem(422, "validation_error", "Validation failed", "Idempotency-Key must be 1-255 visible ASCII characters",
                      errors=[{"field": "Idempotency-Key", "code": "invalid", "message": "1-255 visible ASCII characters"}])
    return key


@router.post("/init", status_code=201, response_model=PaymentInitResponse)
async def init_payment(
    body: PaymentInitRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    key = resolve_idempotency_key(idempotency_key, body.idempotency_key)
    state = request.app.state
    try:
        amount_minor = to_minor_units(body.amount, body.currency)
    except MoneyError as err:
        field = "currency" if err.code == "unsupported_currency" else "amount"
        raise Problem(422, err.code, "Invalid amount", str(err),
                      errors=[{"field": field, "code": err.code, "message": str(err)}]) from None
    if body.method not in state.methods:
        raise Problem(422, "unsupported_method", "Unsupported method", f"method must be one of {sorted(state.methods)}",
                      errors=[{"field": "method", "code": "unsupported", "message": "unknown payment method"}])
    scenario = body.meta.sandbox_scenario
    if scenario is not None and scenario not in SANDBOX_SCENARIOS:
        raise Problem(422, "validation_error", "Validation failed", "unknown sandbox scenario",
                      errors=[{"field": "meta.sandbox_scenario", "code": "unknown", "message": "unknown scenario"}])

    request_print = fingerprint(body.model_dump(exclude={"idempotency_key"}))
    now = datetime.now(timezone.utc)
    stored = await state.idempotency.begin(principal.client_id, INIT_ENDPOINT, key, request_print, now)
    if stored is not None:
        return JSONResponse(stored.body, status_code=stored.status,
                            media_type="application/problem+json" if stored.status >= 400 else None,
                            headers={"Idempotent-Replayed": "true"})
    try:
        status, payload = await _start_deposit(request, principal, key, body, amount_minor)
    except BaseException:
        await state.idempotency.release(principal.client_id, INIT_ENDPOINT, key)
        raise
    await state.idempotency.complete(principal.client_id, INIT_ENDPOINT, key, status, payload)
    return JSONResponse(payload, status_code=status,
                        media_type="application/problem+json" if status >= 400 else None)


async def _start_deposit(
    request: Request, principal: Principal, key: str, body: PaymentInitRequest, amount_minor: int
) -> tuple[int, dict]:
    """Starts (or re-attaches to) the deposit workflow and waits for the PSP's first answer."""
    settings = request.app.state.settings
    payment_id = payment_id_for(principal.client_id, key)
    workflow_input = DepositInput(
        payment_id=payment_id,
        client_id=principal.client_id,
        player_id=body.player_id,
        amount_minor=amount_minor,
        currency=body.currency,
        method=body.method,
        return_url=body.return_url,
        country=body.meta.country,
        sandbox_scenario=body.meta.sandbox_scenario,
        webhook_timeout_seconds=settings.deposit_webhook_timeout_seconds,
        status_poll_attempts=settings.deposit_status_poll_attempts,
        status_poll_interval_seconds=settings.deposit_status_poll_interval_seconds,
    )
    start = WithStartWorkflowOperation(
        DepositWorkflow.run,
        workflow_input,
        id=deposit_workflow_id(payment_id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A payment id belongs to one payment for ever: a finished deposit is answered, never run again.
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    client = request.app.state.temporal
    try:
        answer: InitAnswer = await asyncio.wait_for(
            client.execute_update_with_start_workflow(DepositWorkflow.init_answer, start_workflow_operation=start),
            timeout=settings.init_update_timeout_seconds,
        )
    except WorkflowAlreadyStartedError:
        # The payment finished long ago (its Idempotency-Key expired): answer with how it ended.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()  # consumes the start operation's copy of the error
        state: DepositState = await _query_state(client, deposit_workflow_id(payment_id))
        answer = InitAnswer(state.payment_id, state.status, state.psp, state.redirect_url, state.failure_code)
    except asyncio.TimeoutError:
        raise Problem(504, "psp_timeout", "PSP did not answer in time",
                      "the payment was started; read its status with GET /v1/payments/{payment_id}",
                      retryable=True, payment_id=payment_id) from None
    except (RPCError, WorkflowUpdateFailedError) as err:
        raise Problem(503, "temporal_unavailable", "Service unavailable", "the payment engine is unavailable",
                      retryable=True, headers={"Retry-After": "2"}) from err
    return _init_outcome(answer)


def _init_outcome(answer: InitAnswer) -> tuple[int, dict]:
    if answer.status == DepositStatus.REJECTED:
        return 422, Problem(422, answer.failure_code or "rejected", "Deposit rejected",
                            "the deposit breaks a responsible-gaming rule or limit",
                            payment_id=answer.payment_id).body()
    if answer.status == DepositStatus.FAILED:
        if answer.failure_code in ("psp_unavailable", "no_route"):
            return 502, Problem(502, answer.failure_code, "No PSP available",
                                "no payment provider could take the payment", retryable=True,
                                payment_id=answer.payment_id).body()
        return 402, Problem(402, "payment_declined", "Payment declined", "the payment provider declined the payment",
                            payment_id=answer.payment_id, decline_code=answer.failure_code).body()
    response = PaymentInitResponse(payment_id=answer.payment_id, status=answer.status, psp=answer.psp,
                                   redirect_url=answer.redirect_url)
    return 201, response.model_dump()


@router.get("/{payment_id}", response_model=PaymentView)
async def get_payment(
    payment_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
) -> PaymentView:
    if not PAYMENT_ID_RE.match(payment_id):
        raise Problem(404, "payment_not_found", "Payment not found", "no payment has this id")
    workflow_id = deposit_workflow_id(payment_id)
    state = await _query_state(request.app.state.temporal, workflow_id)
    if state.client_id != principal.client_id:
        raise Problem(403, "forbidden", "Forbidden", "this payment belongs to another client")
    settings = request.app.state.settings
    return PaymentView(
        payment_id=state.payment_id,
        status=state.status,
        amount=to_decimal_string(state.amount_minor, state.currency),
        currency=state.currency,
        method=state.method,
        player_id=state.player_id,
        psp=state.psp,
        psp_reference=state.psp_reference,
        failure_code=state.failure_code,
        review_reason=state.review_reason,
        redirect_url=state.redirect_url,
        created_at=state.created_at,
        updated_at=state.updated_at,
        temporal_ui_url=(
            f"{settings.temporal_ui_url}/namespaces/{quote(settings.temporal_namespace)}/workflows/{workflow_id}"
        ),
    )


async def _query_state(client: Client, workflow_id: str) -> DepositState:
    try:
        return await client.get_workflow_handle(workflow_id).query(DepositWorkflow.status)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise Problem(404, "payment_not_found", "Payment not found", "no payment has this id") from None
        raise Problem(503, "temporal_unavailable", "Service unavailable", "payment status is unavailable",
                      retryable=True, headers={"Retry-After": "2"}) from err
