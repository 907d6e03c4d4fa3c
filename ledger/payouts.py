"""Payouts as records, for the margin report: the withdrawal workflow records each one when it ends (its money moved
through the payout hold, ledger/transfer_ids.payout_hold; its fee through ledger/fees.book_fee)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.models import payouts
from payloop.db import upsert_newer


@dataclass(frozen=True, slots=True)
class PayoutRecord:
    payout_id: str
    client_id: str
    player_id: str
    currency: str
    amount_minor: int
    status: str
    created_at: datetime
    updated_at: datetime
    method: str | None = None
    psp: str | None = None
    fee_minor: int | None = None


async def record_payout(
    engine: AsyncEngine, record: PayoutRecord, *,
    on_status: Callable[[AsyncConnection, PayoutRecord], Awaitable[None]] | None = None,
) -> None:
    """Upsert the payout; a write older than the stored one (by updated_at) changes nothing. `on_status(conn,
    record)` is called last in the same transaction when the row holds the record's status (the outbox)."""
    async with engine.begin() as conn:
        await upsert_newer(conn, payouts, asdict(record), clock="updated_at")
        if on_status is not None:
            stored = (await conn.execute(select(payouts.c.status)
                                         .where(payouts.c.payout_id == record.payout_id))).scalar_one()
            if stored == record.status:
                await on_status(conn, record)
