"""Webhook inbox: each verified PSP event stored once (unique per PSP + event id), then signalled.

An event whose payment is unknown, or whose signal cannot be delivered, stays in the inbox as a dead letter
for ops to replay; nothing is dropped. The inbox never moves money: only the workflow does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from api.models import webhook_events
from payloop.db import insert_if_missing
from psp.base import WebhookEvent

# A `received` event this old was left by a request that died before signalling; a redelivery retries it.
# Well inside PSPs' retry schedules (the sandbox's spans ~16 s), so a redelivery does come to heal it.
STALLED_AFTER = timedelta(seconds=5)


class WebhookInbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def store(self, event: WebhookEvent, now: datetime) -> bool:
        """True when this is the first delivery of the event, or an earlier one is stuck and may be retried."""
        async with self.engine.begin() as conn:
            inserted = await insert_if_missing(conn, webhook_events, {
                "psp": event.psp, "event_id": event.event_id, "payment_id": event.payment_id,
                "psp_reference": event.psp_reference, "status": event.status,
                "amount_minor": event.amount_minor, "currency": event.currency,
                "failure_code": getattr(event, "failure_code", None),
                "state": "received", "received_at": now, "updated_at": now,
            })
            if inserted:
                return True
            retried = await conn.execute(
                webhook_events.update()
                .where(
                    webhook_events.c.psp == event.psp,
                    webhook_events.c.event_id == event.event_id,
                    sa.or_(
                        sa.and_(webhook_events.c.state == "dead_letter",
                                webhook_events.c.dead_letter_reason == "signal_failed"),
                        sa.and_(webhook_events.c.state == "received",
                                webhook_events.c.updated_at < now - STALLED_AFTER),
                    ),
                )
                .values(state="received", dead_letter_reason=None, updated_at=now)
            )
            return retried.rowcount == 1

    async def mark(self, psp: str, event_id: str, state: str, now: datetime, reason: str | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                webhook_events.update()
                .where(webhook_events.c.psp == psp, webhook_events.c.event_id == event_id)
                .values(state=state, dead_letter_reason=reason, updated_at=now)
            )
