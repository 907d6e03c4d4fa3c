"""The webhook inbox keeps what a verified event is about (kind), the PSP's fee, and a dispute's id and reason code,
and the workflow's read-back (activities/inbox.py) hands them on: on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import ActivityEnvironment

from activities.inbox import InboxActivities
from api.webhook_inbox import WebhookInbox
from psp.base import WebhookEvent
from workflows.types import PspEvent, ReadPspEventInput

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
EVENTS = [
    WebhookEvent(psp="card", event_id="evt_pay", payment_id="pay_1", psp_reference="card_p", status="captured",
                 amount_minor=5000, currency="EUR", occurred_at="t", fee_minor=95),
    WebhookEvent(psp="card", event_id="evt_po", payment_id="po_1", psp_reference="card_o", status="paid",
                 amount_minor=5000, currency="EUR", occurred_at="t", kind="payout", fee_minor=50),
    WebhookEvent(psp="paybybank", event_id="evt_rf", payment_id="rf_1", psp_reference="paybybank_r",
                 status="failed", amount_minor=2000, currency="EUR", occurred_at="t",
                 failure_code="beneficiary_account_closed", kind="refund"),
    WebhookEvent(psp="ewallet", event_id="evt_dp", payment_id="pay_1", psp_reference="ewallet_p", status="lost",
                 amount_minor=3000, currency="EUR", occurred_at="t", kind="dispute", fee_minor=1500,
                 dispute_id="ewallet_dp_1", reason_code="10.4"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
async def test_a_stored_event_reads_back_whole(event: WebhookEvent, engine: AsyncEngine) -> None:
    assert await WebhookInbox(engine).store(event, NOW) == "new"

    read = await ActivityEnvironment().run(InboxActivities(engine).read_psp_event,
                                           ReadPspEventInput(event.psp, event.event_id, event.payment_id))

    assert read == PspEvent(
        event_id=event.event_id, psp=event.psp, psp_reference=event.psp_reference, status=event.status,
        amount_minor=event.amount_minor, currency=event.currency, failure_code=event.failure_code, kind=event.kind,
        fee_minor=event.fee_minor, dispute_id=event.dispute_id, reason_code=event.reason_code,
    )
    # Evidence about another record is none for this one.
    assert await ActivityEnvironment().run(InboxActivities(engine).read_psp_event,
                                           ReadPspEventInput(event.psp, event.event_id, "pay_other")) is None
