"""Deposits: `POST /v1/payments/init` (Update-with-Start) and `GET /v1/payments/{payment_id}`."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from temporalio.client import Client

from api import engine
from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses
from api.idempotency import IDEMPOTENCY_KEY_DOC, resolve_key, run_once
from api.inputs import amount_in_minor_units, check_sandbox_scenario
from api.schemas import PaymentInitRequest, PaymentInitResponse, PaymentView
from payloop.money import to_decimal_string
from psp.scenarios import SCENARIOS
from workflows.deposit import DepositWorkflow
from workflows.types import DepositInput, DepositState, DepositStatus, InitAnswer

router = APIRouter(prefix="/v1/payments", tags=["payments"], responses=problem_responses(503))

INIT_ENDPOINT = "POST /v1/payments/init"
PAYMENT_ID_RE = re.compile(r"pay_[0-9a-f]{24}")


def payment_not_found() -> Problem:
    return Problem(404, "payment_not_found", "Payment not found", "no payment has this id")


@router.post("/init", status_code=201, response_model=PaymentInitResponse,
             responses=problem_responses(402, 409, 422, 502, 504))
async def init_payment(
    body: PaymentInitRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", examples=["order-1"],
                                                  description=IDEMPOTENCY_KEY_DOC)] = None,
) -> JSONResponse:
    key = resolve_key(idempotency_key, body.idempotency_key)
    amount_minor = amount_in_minor_units(body.amount, body.currency)
    methods = request.app.state.methods
    if body.method not in methods:
        raise Problem(422, "unsupported_method", "Unsupported method", f"method must be one of {sorted(methods)}",
                      errors=[{"field": "method", "code": "unsupported", "message": "unknown payment method"}])
    check_sandbox_scenario(body.meta.sandbox_scenario, SCENARIOS)
    return await run_once(
        request.app.state.idempotency, principal.client_id, INIT_ENDPOINT, key,
        body.model_dump(exclude={"idempotency_key"}), "pay",
        lambda resource_id: _start_deposit(request, principal, resource_id, body, amount_minor),
    )


async def _start_deposit(
    request: Request, principal: Principal, payment_id: str, body: PaymentInitRequest, amount_minor: int
) -> tuple[int, dict]:
    """Starts (or re-attaches to) the deposit workflow and waits for the PSP's first answer."""
    settings = request.app.state.settings
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
        review_alert_seconds=settings.deposit_review_alert_seconds,
        refund_webhook_timeout_seconds=settings.refund_webhook_timeout_seconds,
        refund_status_poll_attempts=settings.refund_status_poll_attempts,
        refund_status_poll_interval_seconds=settings.refund_status_poll_interval_seconds,
    )
    client = request.app.state.temporal
    workflow_id = DepositWorkflow.workflow_id(payment_id)
    answer = await engine.start_and_wait(client, settings, DepositWorkflow.run, workflow_input,
                                         DepositWorkflow.init_answer, workflow_id=workflow_id,
                                         resource={"payment_id": payment_id})
    if answer is engine.ALREADY_FINISHED:
        state: DepositState = await _query_state(client, workflow_id)
        answer = InitAnswer(state.payment_id, state.status, state.psp, state.redirect_url, state.failure_code)
    return _init_outcome(answer)


def _init_outcome(answer: InitAnswer) -> tuple[int, dict]:
    if answer.status == DepositStatus.REJECTED:
        return 422, Problem(422, answer.failure_code or "rejected", "Deposit rejected",
                            "the deposit breaks a responsible-gaming rule or limit",
                            payment_id=answer.payment_id).body()
    if answer.status == DepositStatus.FAILED:
        if answer.failure_code in ("screening_unavailable", "routing_unavailable"):
            # Our own step could not run (e.g. its database stayed out of reach): not a decline, nothing was
            # charged; this deposit has ended, so a new one (new Idempotency-Key) may be tried.
            return 502, Problem(502, answer.failure_code, "Deposit could not be started",
                                "the deposit could not be checked right now; nothing was charged", retryable=True,
                                payment_id=answer.payment_id).body()
        if answer.failure_code in ("psp_unavailable", "no_route", "method_unavailable"):
            return 502, Problem(502, answer.failure_code, "No PSP available",
                                "no payment provider could take the payment", retryable=True,
                                payment_id=answer.payment_id).body()
        return 402, Problem(402, "payment_declined", "Payment declined", "the payment provider declined the payment",
                            payment_id=answer.payment_id, decline_code=answer.failure_code).body()
    response = PaymentInitResponse(payment_id=answer.payment_id, status=answer.status, psp=answer.psp,
                                   redirect_url=answer.redirect_url)
    return 201, response.model_dump()


@router.get("/{payment_id}", response_model=PaymentView, responses=problem_responses(404))
async def get_payment(
    payment_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
) -> PaymentView:
    if not PAYMENT_ID_RE.fullmatch(payment_id):
        raise payment_not_found()
    workflow_id = DepositWorkflow.workflow_id(payment_id)
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
        temporal_ui_url=engine.ui_url(settings, workflow_id),
    )


async def _query_state(client: Client, workflow_id: str) -> DepositState:
    return await engine.state(client, workflow_id, DepositWorkflow.status, DepositState, not_found=payment_not_found())
