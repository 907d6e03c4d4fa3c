"""Webhook inbox: each verified PSP event stored once (unique per PSP + event id), then signalled, with a
delivery log of what happened to every delivery.

An event whose payment is unknown, or whose signal cannot be delivered, stays in the inbox as a dead letter
for ops to replay; nothing is dropped. The inbox never moves money: only the workflow does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.models import webhook_deliveries
from psp.inbox import webhook_events
from payloop.db import insert_if_missing
from psp.base import WebhookEvent

# A `received` event this old was left by a request that died before signalling; a redelivery retries it.
# Well inside PSPs' retry schedules (the sandbox's spans ~16 s), so a redelivery does come to heal it.
STALLED_AFTER = timedelta(seconds=5)


class WebhookInbox:
    def __init__(self, engine: AsyncEngine, on_delivery: Callable[[str, str], None] = lambda _psp, _outcome: None,
                 on_alert: Callable[[str], None] = lambda _kind: None) -> None:
        """`on_delivery(psp, outcome)` for every delivery logged, `on_alert(kind)` for every alert a delivery
        raised: the API counts them for /metrics."""
        self.engine = engine
        self.on_delivery = on_delivery
        self.on_alert = on_alert

    async def store(self, event: WebhookEvent, now: datetime) -> Literal["new", "in_progress", "duplicate"]:
        """"new" for the first delivery of the event (or when an earlier one is stuck and may be retried),
        "in_progress" while another delivery of it is being handled (it may yet die: the PSP must come back),
        "duplicate" once it was handled."""
        async with self.engine.begin() as conn:
            inserted = await insert_if_missing(conn, webhook_events, {
                "psp": event.psp, "event_id": event.event_id, "payment_id": event.payment_id,
                "psp_reference": event.psp_reference, "status": event.status,
                "amount_minor": event.amount_minor, "currency": event.currency,
                "failure_code": event.failure_code, "kind": event.kind, "fee_minor": event.fee_minor,
                "dispute_id": event.dispute_id, "reason_code": event.reason_code,
                "state": "received", "received_at": now, "updated_at": now,
                **_kind_columns(event),
            })
            retried = inserted or (await conn.execute(
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
            )).rowcount == 1
            await self._log(conn, event.psp, event.event_id, "verified" if retried else "duplicate", None, now)
            if retried:
                return "new"
            state = (await conn.execute(sa.select(webhook_events.c.state).where(
                webhook_events.c.psp == event.psp, webhook_events.c.event_id == event.event_id))).scalar_one()
            return "in_progress" if state == "received" else "duplicate"

    async def mark(self, psp: str, event_id: str, state: str, now: datetime, reason: str | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                webhook_events.update()
                .where(webhook_events.c.psp == psp, webhook_events.c.event_id == event_id)
                .values(state=state, dead_letter_reason=reason, updated_at=now)
            )
            await self._log(conn, psp, event_id, state, reason, now)

    async def log_rejected(self, psp: str, reason: str, now: datetime) -> None:
        async with self.engine.begin() as conn:
            await self._log(conn, psp, None, "rejected", reason, now)

    async def events(self, state: str | None, limit: int) -> list[dict[str, Any]]:
        query = sa.select(webhook_events).order_by(webhook_events.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(webhook_events.c.state == state)
        async with self.engine.connect() as conn:
            return [row._asdict() for row in await conn.execute(query)]

    async def events_about(self, record_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The stored events naming our payment (payout, refund) id, newest first (its own index)."""
        query = (sa.select(webhook_events).where(webhook_events.c.payment_id == record_id)
                 .order_by(webhook_events.c.id.desc()).limit(limit))
        async with self.engine.connect() as conn:
            return [row._asdict() for row in await conn.execute(query)]

    async def dead_letters(self, *, psp: str | None, received_from: datetime | None, received_to: datetime | None,
                           limit: int) -> list[dict[str, Any]]:
        """Dead letters, oldest first: of `psp`, received in [`received_from`, `received_to`) (each optional)."""
        e = webhook_events.c
        query = sa.select(webhook_events).where(e.state == "dead_letter").order_by(e.id).limit(limit)
        if psp is not None:
            query = query.where(e.psp == psp)
        if received_from is not None:
            query = query.where(e.received_at >= received_from)
        if received_to is not None:
            query = query.where(e.received_at < received_to)
        async with self.engine.connect() as conn:
            return [row._asdict() for row in await conn.execute(query)]

    async def event(self, event_row_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(webhook_events).where(webhook_events.c.id == event_row_id))).first()
            if row is None:
                return None
            deliveries = await conn.execute(
                sa.select(webhook_deliveries.c.outcome, webhook_deliveries.c.detail, webhook_deliveries.c.at)
                .where(webhook_deliveries.c.psp == row.psp, webhook_deliveries.c.event_id == row.event_id)
                .order_by(webhook_deliveries.c.id)
            )
            return {**row._asdict(), "deliveries": [d._asdict() for d in deliveries]}

    async def _log(self, conn: AsyncConnection, psp: str, event_id: str | None, outcome: str, detail: str | None,
                   now: datetime) -> None:
        await conn.execute(webhook_deliveries.insert().values(
            psp=psp, event_id=event_id, outcome=outcome, detail=(detail or "")[:200] or None, at=now))
        self.on_delivery(psp, outcome)


def _kind_columns(event: WebhookEvent) -> dict[str, Any]:
    """What the event is about (kind, dispute, fee): the workflows decide on it. Only the columns the inbox has,
    so this runs before and after the migration that adds them."""
    values = {"kind": event.kind, "fee_minor": event.fee_minor, "dispute_id": event.dispute_id,
              "reason_code": event.reason_code}
    return {name: value for name, value in values.items() if name in webhook_events.c}
