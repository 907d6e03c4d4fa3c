"""The inbox of verified PSP events: every webhook whose signature the API verified is stored here once (unique
per PSP + event id) before its workflow is told. Only what is stored here is evidence that moves money: a workflow
that hears of an event reads it back from this table through an activity, never from the signal's content."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from payloop.db import UtcDateTime, metadata

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("psp", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("payment_id", sa.String(100), nullable=False, index=True),
    sa.Column("psp_reference", sa.String(200), nullable=False),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("failure_code", sa.String(100)),
    # What the event is about (psp.base.EVENT_KINDS): for a refund, `payment_id` is our refund id; for a dispute, the
    # disputed payment's id, with the PSP's `dispute_id` and the scheme's `reason_code`.
    sa.Column("kind", sa.String(10), nullable=False, server_default="payment"),
    sa.Column("fee_minor", sa.BigInteger),  # the PSP's fee for the operation, when it reports one
    sa.Column("dispute_id", sa.String(200)),
    sa.Column("reason_code", sa.String(50)),
    sa.Column("state", sa.String(20), nullable=False),  # received | signalled | dead_letter
    sa.Column("dead_letter_reason", sa.String(100)),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("psp", "event_id", name="uq_webhook_events_psp_event_id"),
    sa.Index("ix_webhook_events_state_updated_at", "state", "updated_at"),  # the monitor: recent dead letters
)


async def read_event(engine: AsyncEngine, psp: str, event_id: str) -> sa.Row | None:
    """The stored (verified) event, or None when no verified delivery of that PSP carried that event id."""
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(webhook_events).where(
            webhook_events.c.psp == psp, webhook_events.c.event_id == event_id))).first()
