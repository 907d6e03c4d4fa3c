"""`POST /v1/webhooks/{psp}`: verify on the raw body, store once, signal the payment's workflow; and the ops
side of the inbox: dead letters, each event's delivery log, replay."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api import corrections
from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses, validation_problem
from api.rate_limits import RateLimits, rate_limited_problem
from api.routes.disputes import DISPUTE_ID_RE
from api.routes.payments import PAYMENT_ID_RE
from api.routes.payouts import PAYOUT_ID_RE
from api.routes.refunds import REFUND_ID_RE
from api.schemas import (
    OpsActionRequest, ReplayFailure, WebhookAck, WebhookBulkReplayRequest, WebhookBulkReplayResult, WebhookEventDetail,
    WebhookEventView,
)
from api.webhook_inbox import STALLED_AFTER, WebhookInbox
from payloop import alerts
from psp.base import InvalidWebhook, WebhookEvent
from psp.registry import signed_by_another_psp
from workflows import search_attributes
from workflows.deposit import DepositWorkflow
from workflows.dispute import DisputeWorkflow
from workflows.refund import RefundWorkflow
from workflows.types import DepositStatus, DisputeInput, PayoutStatus, PspEvidence, RefundStatus
from workflows.withdrawal import WithdrawalWorkflow

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=problem_responses(503))
ops_router = APIRouter(prefix="/v1/ops/webhooks", tags=["ops"], responses=problem_responses(503))
log = logging.getLogger("payloop.webhooks")

MAX_WEBHOOK_BYTES = 64 * 1024
RecordWorkflow = type[DepositWorkflow] | type[WithdrawalWorkflow] | type[RefundWorkflow]


@dataclass(frozen=True)
class _Record:
    """A kind of our records a PSP event can be about, by our id's shape (the PSP's merchant reference)."""

    event_kind: str  # psp.base.WebhookEvent.kind
    id_re: re.Pattern[str]
    workflow: RecordWorkflow
    label: str  # of alerts: deposit | withdrawal | refund
    noun: str  # of dead-letter reasons: unknown_<noun>, <noun>_finished
    settled_as: dict[str, str]  # a PSP status that says money moved → the status the record must have ended in
    waiting_at_psp: frozenset[str]  # statuses in which a re-check nudge is of use


# Refunds first: a refund's event names the payment it refunds too, and is about the refund.
_RECORDS = (
    _Record("refund", REFUND_ID_RE, RefundWorkflow, "refund", "refund", {"succeeded": "succeeded"},
            RefundStatus.AT_PSP),
    _Record("payment", PAYMENT_ID_RE, DepositWorkflow, "deposit", "payment", {"captured": "credited"},
            DepositStatus.AT_PSP),
    _Record("payout", PAYOUT_ID_RE, WithdrawalWorkflow, "withdrawal", "payment", {"paid": "paid"},
            PayoutStatus.AT_PSP),
)
_RECORDS_BY_KIND = {record.event_kind: record for record in _RECORDS}
# Stored events' ids are 32-bit (an INTEGER column): a larger id names nothing, and PostgreSQL would refuse it.
EventRowId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the stored event's `id`")]
# The body is read raw (its signature covers the exact bytes) and its shape is the PSP's own.
WEBHOOK_BODY = {"requestBody": {"required": True, "description": "the PSP's signed event, as it sent it",
                                "content": {"application/json": {"schema": {"type": "object"}}}}}


@router.post("/{psp}", response_model=WebhookAck, responses=problem_responses(400, 401, 404, 408, 413, 429),
             openapi_extra=WEBHOOK_BODY)
async def receive_webhook(psp: str, request: Request) -> WebhookAck:
    verifier = request.app.state.webhook_verifiers.get(psp)
    if verifier is None:
        raise Problem(404, "unknown_psp", "Unknown PSP", "no PSP of that name sends webhooks here")
    # Per PSP endpoint and source: the TCP peer (or what a proxy in uvicorn's FORWARDED_ALLOW_IPS vouches for;
    # README: Rate limits), before the body is even read.
    limits: RateLimits = request.app.state.rate_limits
    source = request.client.host if request.client else "unknown"
    if (refusal := await limits.check_webhook(psp, source)) is not None:
        raise rate_limited_problem(refusal, f"webhooks to {psp} from one source")
    raw = await _read_limited(request)
    inbox: WebhookInbox = request.app.state.webhook_inbox
    now = datetime.now(timezone.utc)
    try:
        event: WebhookEvent = verifier(request.headers, raw, time.time())
    except InvalidWebhook as err:
        code, message = err.code, err.message
        # Only once this PSP's own check failed (accepted webhooks never pay for it): is it another PSP's delivery,
        # re-posted here to pass for this PSP's (or sent to the wrong URL)? Said apart so ops see the cause.
        other = signed_by_another_psp(request.app.state.webhook_verifiers, psp, err, request.headers, raw, time.time())
        if other is not None:
            code, message = "wrong_psp", f"the signature is not {psp}'s but another PSP's"
        # Logged (a line and a delivery row) at a bounded rate per PSP, since anyone can send these; the rest
        # are counted on /metrics (payloop_webhook_rejections_not_logged_total).
        if await limits.may_log_rejection(psp, code):
            log.warning("rejected %s webhook: %s%s", psp, code, f" (signed by {other})" if other else "")
            await inbox.log_rejected(psp, code, now)
        await _recheck_claimed_payment(request, raw)
        raise Problem(400 if code == "malformed_payload" else 401, code, "Webhook rejected", message) from None
    _check_sizes(event)
    stored = await inbox.store(event, now)
    if stored == "duplicate":
        return WebhookAck(status="duplicate")
    if stored == "in_progress":
        # Not "duplicate": the delivery handling it may still die, and then only the PSP's redelivery heals it.
        raise Problem(503, "webhook_in_progress", "Service unavailable", "this event is being handled; redeliver it",
                      retryable=True, headers={"Retry-After": str(int(STALLED_AFTER.total_seconds()))})
    status = await deliver(request.app.state.temporal, request.app.state.settings.task_queue, inbox, event, now)
    if status == "retry_later":
        raise Problem(503, "temporal_unavailable", "Service unavailable", "the webhook is stored; redeliver it",
                      retryable=True, headers={"Retry-After": "5"})
    return WebhookAck(status=status)


async def deliver(client: Client, task_queue: str, inbox: WebhookInbox, event: WebhookEvent, now: datetime) -> str:
    """Signals a stored event to its workflow, chosen by the event's kind; "accepted", "dead_letter" or
    "retry_later" (kept as a dead letter that the PSP's redelivery or ops' replay retries)."""
    return delivery_outcome(await deliver_or_refuse(client, task_queue, inbox, event, now))


def delivery_outcome(reason: str | None) -> str:
    """What a delivery came to, from why it was not signalled (None: it was)."""
    if reason is None:
        return "accepted"
    return "retry_later" if reason == "signal_failed" else "dead_letter"


async def deliver_or_refuse(
    client: Client, task_queue: str, inbox: WebhookInbox, event: WebhookEvent, now: datetime
) -> str | None:
    """`deliver`'s work: None once signalled, else why the event stays a dead letter (its stored reason)."""
    # The signal names the stored event; the workflow reads it back from the inbox before it counts.
    evidence = PspEvidence(psp=event.psp, event_id=event.event_id)
    try:
        if event.kind == "dispute":
            reason = _dispute_refusal(event) or await _signal_dispute(client, task_queue, event, evidence)
        else:
            reason = await _signal_record(client, inbox, event, evidence, now)
    except RPCError:
        reason = "signal_failed"
    if reason is None:
        await inbox.mark(event.psp, event.event_id, "signalled", now)
    else:
        await inbox.mark(event.psp, event.event_id, "dead_letter", now, reason)
    return reason


def _dispute_refusal(event: WebhookEvent) -> str | None:
    """Why a dispute event cannot start or reach its workflow: its id becomes part of a workflow id, so only a
    plain one will do; the payment it disputes must be one of our deposits."""
    if event.dispute_id is None or not DISPUTE_ID_RE.fullmatch(event.dispute_id):
        return "malformed_dispute_id"
    if not PAYMENT_ID_RE.fullmatch(event.payment_id):
        return "unknown_payment"
    return None


async def _signal_dispute(client: Client, task_queue: str, event: WebhookEvent, evidence: PspEvidence) -> str | None:
    """The dispute's first event starts its workflow, later ones reach it (signal-with-start); a dispute whose
    workflow has finished takes no more events (its id is never reused)."""
    assert event.dispute_id is not None  # _dispute_refusal
    try:
        await client.start_workflow(
            DisputeWorkflow.run, DisputeInput(event.psp, event.dispute_id, event.payment_id),
            id=DisputeWorkflow.workflow_id(event.psp, event.dispute_id), task_queue=task_queue,
            start_signal="psp_event", start_signal_args=[evidence],  # PspSignals.psp_event, by its name
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        return "dispute_finished"
    return None


async def _signal_record(
    client: Client, inbox: WebhookInbox, event: WebhookEvent, evidence: PspEvidence, now: datetime
) -> str | None:
    """Signals the payment, payout or refund the event is about; why not, when it cannot (RPCError: retry)."""
    record = _RECORDS_BY_KIND.get(event.kind)
    if record is None:
        return "unknown_kind"
    if not record.id_re.fullmatch(event.payment_id):
        return f"unknown_{record.noun}"
    handle = client.get_workflow_handle(record.workflow.workflow_id(event.payment_id))
    try:
        await handle.signal(record.workflow.psp_event, evidence)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # Unknown record, or its workflow already finished: keep it for ops, acknowledge the PSP.
        return await _finished_record_check(record, handle, inbox, event, now) or "signal_failed"
    return None


async def _finished_record_check(
    record: _Record, handle: WorkflowHandle[Any, Any], inbox: WebhookInbox, event: WebhookEvent, now: datetime
) -> str | None:
    """Why an event could not reach its record: "unknown_<noun>", "<noun>_finished", or None when Temporal
    could not tell (the event is then retried like an undeliverable signal). When a finished
    record hears that money moved at a PSP, other than where (or how) it settled — a PSP a deposit failed over from
    captured late, a payment that expired was captured after all, a refund that failed was made after all — that
    is money to look at: alert."""
    try:
        description = await handle.describe()
    except RPCError as err:
        return f"unknown_{record.noun}" if err.status == RPCStatusCode.NOT_FOUND else None
    settled_as = record.settled_as.get(event.status)
    if settled_as is not None:
        attributes = description.typed_search_attributes
        if (attributes.get(search_attributes.PAYMENT_STATUS), attributes.get(search_attributes.PAYMENT_PSP)) != (
            settled_as, event.psp
        ):
            log.warning("%s %s: %s at %s after it finished", record.label, event.payment_id, event.status, event.psp)
            kind = f"{record.label}.psp_settled_after_close"
            if await alerts.raise_alert(
                inbox.engine, kind=kind, reference=event.payment_id, now=now,
                details={"psp": event.psp, "psp_reference": event.psp_reference, "status": event.status,
                         "currency": event.currency, "amount_minor": str(event.amount_minor)},
            ):
                inbox.on_alert(kind)
    return f"{record.noun}_finished"


async def _recheck_claimed_payment(request: Request, raw: bytes) -> None:
    """An unverified webhook is never trusted, but it may mean news at the PSP: the payment, payout or refund it
    names (if it is one of ours and still running) asks the PSP itself — at most once per
    `status_recheck_interval_seconds` per record, counted in the limiter's storage (Redis when configured, so
    across API processes; otherwise in memory, where keys expire with their interval and no number of other ids
    can flush one), so unsigned requests cannot flood a workflow's history. Best effort: nothing here may fail
    the request."""
    try:
        body = json.loads(raw[:MAX_WEBHOOK_BYTES])
    except (ValueError, RecursionError):
        return
    claimed = _find_reference(body)
    record = _record_of(claimed) if claimed else None
    if record is None:
        return
    workflow_id = record.workflow.workflow_id(claimed)
    if not await request.app.state.rate_limits.may_recheck(workflow_id):
        return
    handle = request.app.state.temporal.get_workflow_handle(workflow_id)
    try:
        # Only a record waiting for its PSP's word has a use for a re-check; a payout waiting days for KYC or a
        # review must not collect a signal (a history event) every interval. Reading the status costs no event.
        description = await handle.describe()
        status = description.typed_search_attributes.get(search_attributes.PAYMENT_STATUS)
        if description.status == WorkflowExecutionStatus.RUNNING and status in record.waiting_at_psp:
            await handle.signal(record.workflow.status_recheck)
    except (RPCError, asyncio.TimeoutError):
        pass


def _find_reference(body: Any) -> str | None:
    """Our refund, payment or payout id wherever a PSP's wire format puts it (top level or one level down); a
    refund's id before the payment's, since an event about a refund names both."""
    if not isinstance(body, dict):
        return None
    values = list(body.values()) + [v for inner in body.values() if isinstance(inner, dict) for v in inner.values()]
    strings = [value for value in values if isinstance(value, str)]
    for record in _RECORDS:
        for value in strings:
            if record.id_re.fullmatch(value):
                return value
    return None


def _record_of(reference: str) -> _Record | None:
    """The kind of record (and so the workflow) a merchant reference names; None when it is none of ours."""
    return next((record for record in _RECORDS if record.id_re.fullmatch(reference)), None)


def _check_sizes(event: WebhookEvent) -> None:
    # Authentic but absurd: refuse before storage rather than fail on a column's length.
    limits = {"event_id": 200, "payment_id": 100, "psp_reference": 200, "status": 30, "failure_code": 100,
              "dispute_id": 100, "reason_code": 50}
    for field, limit in limits.items():
        value = getattr(event, field)
        if value is not None and len(value) > limit:
            raise Problem(400, "malformed_payload", "Webhook rejected", f"{field} is longer than {limit} characters")


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_WEBHOOK_BYTES):
        raise Problem(413, "payload_too_large", "Payload too large", f"webhooks are at most {MAX_WEBHOOK_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            raise Problem(413, "payload_too_large", "Payload too large",
                          f"webhooks are at most {MAX_WEBHOOK_BYTES} bytes")
    return bytes(body)


# --- ops: dead letters, delivery logs, replay -----------------------------------------------------------------


@ops_router.post("/replay", response_model=WebhookBulkReplayResult, responses=problem_responses(422))
async def replay_webhooks(
    request: Request, principal: Annotated[Principal, Depends(require_scope("ops"))],
    body: WebhookBulkReplayRequest | None = None,
) -> WebhookBulkReplayResult:
    """Replays dead letters in bulk, oldest first: of one PSP (`psp`), received in [`from`, `to`), at most `limit`
    (default 100, at most 500). Each is delivered as `POST /v1/ops/webhooks/{id}/replay` delivers one, and each
    replayed event has its own audit entry; the answer says which were signalled and why the others were not."""
    return await replay_in_bulk(request, principal, body or WebhookBulkReplayRequest())


async def replay_in_bulk(request: Request, principal: Principal,
                         wanted: WebhookBulkReplayRequest) -> WebhookBulkReplayResult:
    """The bulk replay (the route and the ops console's dead letters and incident pages)."""
    if wanted.received_from and wanted.received_to and wanted.received_from >= wanted.received_to:
        raise validation_problem([{"field": "from", "code": "range", "message": "from must be before to"}])
    await corrections.check_incident(request.app.state.engine, wanted.incident_id)
    inbox: WebhookInbox = request.app.state.webhook_inbox
    dead_letters = await inbox.dead_letters(psp=wanted.psp, received_from=wanted.received_from,
                                            received_to=wanted.received_to, limit=wanted.limit)
    result = WebhookBulkReplayResult(replayed=[], failed=[])
    for stored in dead_letters:
        reason = await _replay(request, principal, stored, wanted, bulk=True)
        if reason is None:
            result.replayed.append(stored["id"])
        else:
            result.failed.append(ReplayFailure(id=stored["id"], code=reason))
    return result


@ops_router.get("", response_model=list[WebhookEventView])
async def list_webhooks(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
    state: Literal["received", "signalled", "dead_letter"] | None = "dead_letter",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Stored events, newest first; by default the dead letters."""
    return await request.app.state.webhook_inbox.events(state, limit)


@ops_router.get("/{event_row_id}", response_model=WebhookEventDetail, responses=problem_responses(404))
async def get_webhook(
    event_row_id: EventRowId, request: Request, _principal: Annotated[Principal, Depends(require_scope("ops"))]
) -> dict[str, Any]:
    """One stored event with its delivery log (verified, duplicates, signalled, dead-lettered, and why)."""
    event = await request.app.state.webhook_inbox.event(event_row_id)
    if event is None:
        raise Problem(404, "webhook_not_found", "Webhook not found", "no stored webhook has this id")
    return event


@ops_router.post("/{event_row_id}/replay", response_model=WebhookEventDetail,
                 responses=problem_responses(404, 409, 422))
async def replay_webhook(
    event_row_id: EventRowId, request: Request, principal: Annotated[Principal, Depends(require_scope("ops"))],
    body: OpsActionRequest | None = None,
) -> dict[str, Any]:
    """Signals a dead letter again (e.g. once its payment exists). The workflow dedupes by event id and checks
    amount, currency and reference itself, so a replay can never move money the event did not justify."""
    return await replay_dead_letter(request, principal, event_row_id, body)


async def replay_dead_letter(request: Request, principal: Principal, event_row_id: int,
                             body: OpsActionRequest | None = None) -> dict[str, Any]:
    """The replay, audited as the principal's with the incident it names (the route and the ops console)."""
    inbox: WebhookInbox = request.app.state.webhook_inbox
    stored = await inbox.event(event_row_id)
    if stored is None:
        raise Problem(404, "webhook_not_found", "Webhook not found", "no stored webhook has this id")
    if stored["state"] != "dead_letter":
        raise Problem(409, "not_a_dead_letter", "Not a dead letter", f"the webhook is {stored['state']}")
    await corrections.check_incident(request.app.state.engine, body.incident_id if body else None)
    reason = await _replay(request, principal, stored, body, bulk=False)
    if reason is not None:
        engine_down = reason == "signal_failed"
        raise Problem(409, "replay_not_delivered", "Replay not delivered",
                      "the payment engine is unavailable; try again" if engine_down
                      else "the payment is still unknown or finished", retryable=engine_down, reason=reason)
    return await inbox.event(event_row_id)


async def _replay(request: Request, principal: Principal, stored: dict[str, Any], body: OpsActionRequest | None,
                  *, bulk: bool) -> str | None:
    """Delivers one stored dead letter again and audits it (`webhook.replay`); None when signalled, else why
    it stays a dead letter."""
    now = datetime.now(timezone.utc)
    inbox: WebhookInbox = request.app.state.webhook_inbox
    reason = await deliver_or_refuse(request.app.state.temporal, request.app.state.settings.task_queue, inbox,
                                     _stored_event(stored), now)
    details = {"outcome": delivery_outcome(reason), **({"reason": reason} if reason else {}), **({"bulk": True} if bulk else {})}
    await corrections.record_alone(request.app.state.engine, principal, "webhook.replay",
                                   f"webhook:{stored['id']}", details, body, now)
    return reason


def _stored_event(stored: dict[str, Any]) -> WebhookEvent:
    """The event as verified and stored. Events stored before the inbox kept kinds were routed by their id's
    shape, so that is their kind."""
    record = _record_of(stored["payment_id"])
    kind = stored.get("kind") or (record.event_kind if record is not None else "payment")
    return WebhookEvent(
        psp=stored["psp"], event_id=stored["event_id"], payment_id=stored["payment_id"],
        psp_reference=stored["psp_reference"], status=stored["status"], amount_minor=stored["amount_minor"],
        currency=stored["currency"], occurred_at=stored["received_at"].isoformat(),
        failure_code=stored["failure_code"], kind=kind, fee_minor=stored.get("fee_minor"),
        dispute_id=stored.get("dispute_id"), reason_code=stored.get("reason_code"),
    )
