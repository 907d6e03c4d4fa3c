"""Deposits: `POST /v1/payments/init` (Update-with-Start) and `GET /v1/payments/{payment_id}`; for ops, the review
decision and the payments list."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from api import corrections, engine
from api.auth import Principal, require_scope
from api.client_address import player_address
from api.errors import Problem, problem_responses, validation_problem
from api.idempotency import IDEMPOTENCY_KEY_DOC, answer_json, answer_once, resolve_key
from api.inputs import amount_in_minor_units, check_sandbox_card, check_sandbox_scenario
from api.risk_decisions import risk_views
from api.routes.routing import disabled_methods
from api.schemas import (
    PLAYER_ID_PATTERN,
    DepositReviewRequest,
    FxView,
    OpsActionRequest,
    OpsPaymentItem,
    OpsPaymentPage,
    PaymentInitRequest,
    PaymentInitResponse,
    PaymentView,
    PspPaymentSummary,
    QueryMoment,
)
from ledger.payments import PaymentFilter, PaymentMoney, PaymentRow, list_payments, payment_money
from ledger.refunds import payment_refunds
from payloop.money import MoneyError, to_decimal_string
from payloop.settings import Settings
from psp.scenarios import SANDBOX_CARDS, SCENARIOS
from workflows.deposit import DepositWorkflow
from workflows.types import DepositInput, DepositState, DepositStatus, InitAnswer, PspPaymentView, ReviewDecision

router = APIRouter(prefix="/v1/payments", tags=["payments"], responses=problem_responses(503))
ops_router = APIRouter(prefix="/v1/ops/payments", tags=["ops"], responses=problem_responses(503))

INIT_ENDPOINT = "POST /v1/payments/init"
PAYMENT_ID_PATTERN = r"^pay_[0-9a-f]{24}$"
PAYMENT_ID_RE = re.compile(PAYMENT_ID_PATTERN)
# Names as the routing file allows them, within the payments table's columns.
PSP_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
METHOD_PATTERN = r"^[a-z_]{1,30}$"
# A PSP's own reference of a payment, as the payments table holds it.
PSP_REFERENCE_PATTERN = r"^[\x21-\x7e]{1,200}$"
# A review decision that refunds at a PSP can take minutes: the route answers 202 rather than hold the caller.
REVIEW_WAIT_SECONDS = 10.0
# workflows.types.DepositStatus, as the ops list filters by it (tests/test_api_money.py keeps the two equal).
DepositStatusFilter = Literal["pending", "kyc_required", "requires_action", "authorized", "captured", "credited",
                              "failed", "rejected", "expired", "in_review", "refunded"]
_NO_MONEY = PaymentMoney(captured_minor=0, credited_minor=0, credit_transfer_id=None, refunded_minor=0,
                         refund_pending_minor=0, uncredited_refunds_minor=0, disputed_minor=0, charged_back_minor=0, fees_minor=0)


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
    return answer_json(*await initiate_deposit(request, principal, body, key))


async def initiate_deposit(
    request: Request, principal: Principal, body: PaymentInitRequest, key: str
) -> tuple[int, dict[str, Any], bool]:
    """A deposit started once per Idempotency-Key (the route and the checkout): (status, answer, replayed); a
    Problem for a request refused before anything started."""
    amount_minor = amount_in_minor_units(body.amount, body.currency)
    methods = request.app.state.methods
    if body.method not in methods:
        raise Problem(422, "unsupported_method", "Unsupported method", f"method must be one of {sorted(methods)}",
                      errors=[{"field": "method", "code": "unsupported", "message": "unknown payment method"}])
    check_sandbox_scenario(body.meta.sandbox_scenario, SCENARIOS)
    check_sandbox_card(body.meta.sandbox_card, SANDBOX_CARDS)

    async def start_unless_switched_off(payment_id: str) -> tuple[int, dict]:
        # Only a new request is refused: a retried key got its stored answer from answer_once before this, and
        # one whose first attempt started the deposit without storing its answer re-attaches to it. The refusal
        # releases the key (nothing started), so the same key goes through once the method is on again.
        if body.method in await disabled_methods(request).get() and not await engine.exists(
                request.app.state.temporal, DepositWorkflow.workflow_id(payment_id)):
            raise Problem(422, "method_disabled", "Method disabled",
                          f"{body.method} payments are switched off for now; offer the methods of "
                          "GET /v1/payment-methods",
                          errors=[{"field": "method", "code": "disabled", "message": "switched off by operations"}])
        return await _start_deposit(request, principal, payment_id, body, amount_minor)

    return await answer_once(
        request.app.state.idempotency, principal.client_id, INIT_ENDPOINT, key,
        body.model_dump(exclude={"idempotency_key"}), "pay", start_unless_switched_off,
    )


async def _start_deposit(
    request: Request, principal: Principal, payment_id: str, body: PaymentInitRequest, amount_minor: int
) -> tuple[int, dict]:
    """Starts (or re-attaches to) the deposit workflow and waits for the PSP's first answer."""
    started = time.perf_counter()
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
        sandbox_card=body.meta.sandbox_card,
        device_id=body.meta.device_id or body.meta.device,
        ip_address=player_address(request),
        device_class=body.meta.device_class,
        kyc_wait_timeout_seconds=settings.deposit_kyc_wait_timeout_seconds,
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
    request.app.state.metrics.deposit_init_seconds.labels(body.method, answer.status).observe(
        time.perf_counter() - started)
    return _init_outcome(answer)


# Why a rejected deposit was refused, as its client may be told (never which risk rule fired).
_REJECTIONS = {
    "risk_denied": "the deposit cannot be accepted",
    "kyc_rejected": "the player's identity check was rejected",
}


def _init_outcome(answer: InitAnswer) -> tuple[int, dict]:
    if answer.status == DepositStatus.REJECTED:
        detail = _REJECTIONS.get(answer.failure_code or "", "the deposit breaks a responsible-gaming rule or limit")
        return 422, Problem(422, answer.failure_code or "rejected", "Deposit rejected", detail,
                            payment_id=answer.payment_id).body()
    if answer.status == DepositStatus.FAILED:
        if answer.failure_code in ("screening_unavailable", "routing_unavailable"):
            # Our own step could not run (e.g. its database stayed out of reach): not a decline, nothing was
            # charged; this deposit has ended, so a new one (new Idempotency-Key) may be tried.
            return 502, Problem(502, answer.failure_code, "Deposit could not be started",
                                "the deposit could not be checked right now; nothing was charged", retryable=True,
                                payment_id=answer.payment_id).body()
        if answer.failure_code == "fx_unavailable":
            return 502, Problem(502, "fx_unavailable", "No exchange rate",
                                "no exchange rate into the player's wallet currency could be had right now; nothing "
                                "was charged", retryable=True, payment_id=answer.payment_id).body()
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
    state = await owned_payment(request, principal, payment_id)
    return await payment_view(request, state, ops="ops" in principal.scopes)


async def owned_payment(request: Request, principal: Principal, payment_id: str) -> DepositState:
    """The deposit's state: 404 for an id that names none, 403 for another client's."""
    if not PAYMENT_ID_RE.fullmatch(payment_id):
        raise payment_not_found()
    state = await _query_state(request.app.state.temporal, DepositWorkflow.workflow_id(payment_id))
    if state.client_id != principal.client_id:
        raise Problem(403, "forbidden", "Forbidden", "this payment belongs to another client")
    return state


async def payment_view(request: Request, state: DepositState, *, ops: bool) -> PaymentView:
    """The workflow's facts with the ledger's money: the money is what the ledger holds, whatever the status says
    (a deposit in review that was credited shows its credit)."""
    db = request.app.state.engine
    money = await payment_money(db, state.payment_id)
    # The refunds a review decision started are in the state before the ledger has reserved them.
    refund_ids = [refund.refund_id for refund in await payment_refunds(db, state.payment_id)]
    refund_ids += [refund_id for refund_id in state.refund_ids if refund_id not in refund_ids]
    settings = request.app.state.settings
    workflow_id = DepositWorkflow.workflow_id(state.payment_id)
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
        **amounts(money, state.currency),
        refund_ids=refund_ids,
        fx=FxView.of(state.fx),
        risk_level=state.risk_level,
        risk=await risk_views(db, "deposit", state.payment_id) if ops else None,
        review_psp_view=_psp_summary(state.review_psp_view) if ops else None,
        reviewed_by=state.reviewed_by if ops else None,
        created_at=state.created_at,
        updated_at=state.updated_at,
        temporal_ui_url=engine.ui_url(settings, workflow_id),
    )


def amounts(money: PaymentMoney | None, currency: str) -> dict[str, Any]:
    """A payment's money as the API's decimal strings; zeros before the ledger has a row for it."""
    m = money or _NO_MONEY

    def decimal(minor: int) -> str:
        return to_decimal_string(minor, currency)

    return {
        "captured_amount": decimal(m.captured_minor), "credited_amount": decimal(m.credited_minor),
        "credit_transfer_id": m.credit_transfer_id, "refunded_amount": decimal(m.refunded_minor),
        "refund_pending_amount": decimal(m.refund_pending_minor), "disputed_amount": decimal(m.disputed_minor),
        "charged_back_amount": decimal(m.charged_back_minor), "refundable_amount": decimal(m.refundable_minor),
    }


def _psp_summary(view: PspPaymentView | None) -> PspPaymentSummary | None:
    if view is None:
        return None
    try:
        amount = to_decimal_string(view.amount_minor, view.currency)
    except MoneyError:  # the PSP's word in a currency we do not take (a review reason in itself)
        amount = None
    return PspPaymentSummary(psp=view.psp, psp_reference=view.psp_reference, status=view.status, amount=amount,
                             amount_minor=view.amount_minor, currency=view.currency)


async def _query_state(client: Client, workflow_id: str) -> DepositState:
    return await engine.state(client, workflow_id, DepositWorkflow.status, DepositState, not_found=payment_not_found())


# --- ops: review decisions and the payments list ---------------------------------------------------------------


@ops_router.post(
    "/{payment_id}/review", response_model=PaymentView,
    responses={202: {"model": PaymentView, "description": "Accepted and still being carried out (e.g. a refund at "
                                                           "the PSP): the current view; read the payment again"},
               **problem_responses(404, 409, 422, 504)},
)
async def review_payment(
    payment_id: str,
    body: DepositReviewRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("ops"))],
) -> Any:
    """Approve (credit what the PSP captured, or `amount` of it: the rest is refunded) or reject (refund the
    capture at the PSP, or close a deposit nothing was captured for) a deposit in review. The workflow writes the
    audit entry `payment:<id>` itself."""
    view, finished = await decide_review(request, principal, payment_id, body)
    return view if finished else JSONResponse(view.model_dump(), status_code=202)


async def decide_review(
    request: Request, principal: Principal, payment_id: str, body: DepositReviewRequest
) -> tuple[PaymentView, bool]:
    """Sends the review decision (the route and the ops console): the payment's view after it, and whether the
    decision was carried out within REVIEW_WAIT_SECONDS (False: still being carried out, e.g. a refund)."""
    if body.amount is not None and body.decision != "approve":
        raise Problem(422, "invalid_decision", "Invalid decision", "an amount goes only with approve",
                      errors=[{"field": "amount", "code": "not_allowed", "message": "only with approve"}])
    if not PAYMENT_ID_RE.fullmatch(payment_id):
        raise payment_not_found()
    client: Client = request.app.state.temporal
    workflow_id = DepositWorkflow.workflow_id(payment_id)
    amount_minor = None
    if body.amount is not None:  # in the deposit's currency: its precision decides what is valid
        amount_minor = amount_in_minor_units(body.amount, (await _query_state(client, workflow_id)).currency)
    await corrections.check_incident(request.app.state.engine, body.incident_id)
    decision = ReviewDecision(decision=body.decision, reviewer=f"{principal.client_id}/{body.reviewer}",
                              reason=body.reason, amount_minor=amount_minor, incident_id=body.incident_id)
    done = await engine.update_briefly(client, workflow_id, DepositWorkflow.review, decision,
                                       wait_seconds=REVIEW_WAIT_SECONDS, not_found=payment_not_found(),
                                       rejected=review_refused)
    if done is engine.STILL_RUNNING:
        return await payment_view(request, await _query_state(client, workflow_id), ops=True), False
    return await payment_view(request, done, ops=True), True


async def ops_payment(request: Request, payment_id: str) -> PaymentView:
    """Any client's deposit as ops see it (the ops console's payment page); 404 for an id that names none."""
    if not PAYMENT_ID_RE.fullmatch(payment_id):
        raise payment_not_found()
    state = await _query_state(request.app.state.temporal, DepositWorkflow.workflow_id(payment_id))
    return await payment_view(request, state, ops=True)


# A validator's refusal (its ApplicationError type) → status, code, title.
_REVIEW_REFUSALS = {
    "NotInReview": (409, "not_in_review", "Payment is not waiting for review"),
    "DecisionNotAllowed": (409, "decision_not_allowed", "Decision not allowed"),
    "NothingCaptured": (409, "nothing_captured", "Nothing captured"),
    "AmountOverCaptured": (422, "amount_over_captured", "Amount over what was captured"),
    "InvalidDecision": (422, "invalid_decision", "Invalid decision"),
}


def review_refused(err: ApplicationError) -> Problem:
    # Anything else (a finished workflow: "Finished") means the deposit is not waiting for a decision.
    status, code, title = _REVIEW_REFUSALS.get(err.type or "", _REVIEW_REFUSALS["NotInReview"])
    return Problem(status, code, title, err.message)


@ops_router.post(
    "/{payment_id}/resync", status_code=202, response_model=PaymentView,
    responses=problem_responses(404, 409, 422),
)
async def resync_payment(
    payment_id: str, request: Request, principal: Annotated[Principal, Depends(require_scope("ops"))],
    body: OpsActionRequest | None = None,
) -> PaymentView:
    """Re-syncs a deposit waiting on its PSP (pending, requires_action, authorized; else 409 `not_at_psp`, or
    `already_final`) with its PSP: the workflow asks the PSP for the payment's status (signal
    `status_recheck`) and only the PSP's answer moves money. Accepted, not done: the answer is the payment as it
    is now; read it again for the outcome. A workflow that asked its PSP in the last 30 s does not ask again."""
    return await resync(request, principal, payment_id, body)


async def resync(request: Request, principal: Principal, payment_id: str,
                 body: OpsActionRequest | None) -> PaymentView:
    """The deposit's re-sync (the route and the ops console): 404, 409 already_final, or 409 not_at_psp (a
    deposit not waiting on its PSP: kyc_required, captured)."""
    if not PAYMENT_ID_RE.fullmatch(payment_id):
        raise payment_not_found()
    client: Client = request.app.state.temporal
    workflow_id = DepositWorkflow.workflow_id(payment_id)
    state = await _query_state(client, workflow_id)
    if state.status in DepositStatus.FINAL:
        raise corrections.already_final("payment", state.status)
    if state.status not in DepositStatus.AT_PSP:
        raise corrections.not_at_psp("payment", state.status)
    await corrections.check_incident(request.app.state.engine, body.incident_id if body else None)
    await engine.signal(client, workflow_id, DepositWorkflow.status_recheck, not_found=payment_not_found(),
                        finished=corrections.already_final("payment", "finished"))
    now = datetime.now(timezone.utc)
    await corrections.record_alone(request.app.state.engine, principal, "payment.resync", f"payment:{payment_id}",
                                   {"status": state.status, "psp": state.psp}, body, now)
    return await payment_view(request, state, ops=True)


@ops_router.get("", response_model=OpsPaymentPage, responses=problem_responses(422))
async def list_deposits(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
    status: DepositStatusFilter | None = None,
    player_id: Annotated[str | None, Query(pattern=PLAYER_ID_PATTERN)] = None,
    psp: Annotated[str | None, Query(pattern=PSP_NAME_PATTERN)] = None,
    method: Annotated[str | None, Query(pattern=METHOD_PATTERN)] = None,
    review_reason: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,100}$")] = None,
    psp_reference: Annotated[str | None, Query(pattern=PSP_REFERENCE_PATTERN)] = None,
    created_from: Annotated[QueryMoment | None, Query(alias="from", description="ISO 8601, inclusive")] = None,
    created_to: Annotated[QueryMoment | None, Query(alias="to", description="ISO 8601, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(pattern=PAYMENT_ID_PATTERN, description="the last payment_id of the "
                                                                               "previous page")] = None,
) -> OpsPaymentPage:
    """Deposits from the payments table, newest first, with what the ledger holds for each; filters combine."""
    if created_from is not None and created_to is not None and created_from >= created_to:
        raise validation_problem([{"field": "query.from", "code": "range", "message": "from must be before to"}])
    wanted = PaymentFilter(status=status, player_id=player_id, psp=psp, method=method, review_reason=review_reason,
                           psp_reference=psp_reference, created_from=created_from, created_to=created_to)
    return await deposit_page(request, wanted, limit, before)


async def deposit_page(request: Request, wanted: PaymentFilter, limit: int, before: str | None) -> OpsPaymentPage:
    """A page of the ops list (the route and the ops console)."""
    try:
        # One more than asked: whether there is a next page is known without a request that finds it empty.
        rows = await list_payments(request.app.state.engine, wanted, limit=limit + 1, before=before)
    except LookupError:
        raise validation_problem([{"field": "query.before", "code": "unknown", "message": "no payment has this id"}],
                                 "before names no payment") from None
    page = rows[:limit]
    settings = request.app.state.settings
    return OpsPaymentPage(payments=[_ops_item(settings, row) for row in page],
                          next_before=page[-1].facts.payment_id if len(rows) > limit else None)


def _ops_item(settings: Settings, row: PaymentRow) -> OpsPaymentItem:
    f = row.facts
    return OpsPaymentItem(
        payment_id=f.payment_id, client_id=f.client_id, player_id=f.player_id, status=f.status,
        amount=to_decimal_string(f.amount_minor, f.currency), currency=f.currency, method=f.method,
        country=f.country, psp=f.psp, psp_reference=f.psp_reference, failure_code=f.failure_code,
        review_reason=f.review_reason, **amounts(row.money, f.currency),
        fees=to_decimal_string(row.money.fees_minor, f.currency),
        created_at=f.created_at.isoformat(), updated_at=f.updated_at.isoformat(),
        temporal_ui_url=engine.ui_url(settings, DepositWorkflow.workflow_id(f.payment_id)),
    )
