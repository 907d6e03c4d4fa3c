"""`POST /v1/webhooks/{psp}`: verify on the raw body, store once, signal the payment's workflow."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from temporalio.service import RPCError, RPCStatusCode

from api.errors import Problem
from api.routes.payments import PAYMENT_ID_RE, deposit_workflow_id
from api.routes.payouts import PAYOUT_ID_RE, withdrawal_workflow_id
from api.schemas import WebhookAck
from psp.base import InvalidWebhook, WebhookEvent
from workflows.types import PspEventSignal

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger("payloop.webhooks")

MAX_WEBHOOK_BYTES = 64 * 1024
PSP_EVENT_SIGNAL = "psp_event"


@router.post("/{psp}", response_model=WebhookAck)
async def receive_webhook(psp: str, request: Request) -> WebhookAck:
    verifier = request.app.state.webhook_verifiers.get(psp)
    if verifier is None:
        raise Problem(404, "unknown_psp", "Unknown PSP", "no PSP of that name sends webhooks here")
    raw = await _read_limited(request)
    try:
        event: WebhookEvent = verifier(request.headers, raw, time.time())
    except InvalidWebhook as err:
        status = 400 if err.code == "malformed_payload" else 401
        log.warning("rejected %s webhook: %s", psp, err.code)
        raise Problem(status, err.code, "Webhook rejected", err.message) from None

    _check_sizes(event)

    inbox = request.app.state.webhook_inbox
    now = datetime.now(timezone.utc)
    if not await inbox.store(event, now):
        return WebhookAck(status="duplicate")
    workflow_id = _workflow_for(event.payment_id)
    if workflow_id is None:
        await inbox.mark(psp, event.event_id, "dead_letter", now, "unknown_payment")
        return WebhookAck(status="dead_letter")

    signal = PspEventSignal(
        event_id=event.event_id,
        psp=psp,
        psp_reference=event.psp_reference,
        status=event.status,
        amount_minor=event.amount_minor,
        currency=event.currency,
        failure_code=event.failure_code,
    )
    handle = request.app.state.temporal.get_workflow_handle(workflow_id)
    try:
        # Deposits and withdrawals both take the PSP's events as the `psp_event` signal.
        await handle.signal(PSP_EVENT_SIGNAL, signal)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            # Unknown payment, or its workflow already finished: keep it for ops, acknowledge the PSP.
            await inbox.mark(psp, event.event_id, "dead_letter", now, "unknown_payment")
            return WebhookAck(status="dead_letter")
        await inbox.mark(psp, event.event_id, "dead_letter", now, "signal_failed")
        raise Problem(503, "temporal_unavailable", "Service unavailable", "the webhook is stored; redeliver it",
                      retryable=True, headers={"Retry-After": "5"}) from err
    await inbox.mark(psp, event.event_id, "signalled", now)
    return WebhookAck(status="accepted")


def _workflow_for(reference: str) -> str | None:
    """The workflow a PSP event belongs to, from our merchant reference; None when it is none of ours."""
    if PAYMENT_ID_RE.fullmatch(reference):
        return deposit_workflow_id(reference)
    if PAYOUT_ID_RE.fullmatch(reference):
        return withdrawal_workflow_id(reference)
    return None


def _check_sizes(event: WebhookEvent) -> None:
    # Authentic but absurd: refuse before storage rather than fail on a column's length.
    limits = {"event_id": 200, "payment_id": 100, "psp_reference": 200, "status": 30, "failure_code": 100}
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
