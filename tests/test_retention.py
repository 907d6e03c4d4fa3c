"""Pruning the webhook delivery log (api/retention.py) on SQLite and PostgreSQL: only rows older than the cutoff
go, in batches, and the stored events stay. The API's own pass at start-up: tests/e2e/test_rate_limits.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from api.models import webhook_deliveries
from api.retention import prune_deliveries
from payloop.db import metadata

# By name: which module defines the inbox's events table is the inbox's business (the migrations import it).
webhook_events = metadata.tables["webhook_events"]
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


async def log(engine: AsyncEngine, *ages: timedelta) -> None:
    """Delivery-log rows of these ages, appended in time order as the inbox appends them."""
    async with engine.begin() as conn:
        await conn.execute(webhook_deliveries.insert(), [
            {"psp": "card", "event_id": f"evt_{i}", "outcome": "signalled", "detail": f"{age}", "at": NOW - age}
            for i, age in enumerate(ages)
        ])


async def left(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(
            sa.select(webhook_deliveries.c.event_id).order_by(webhook_deliveries.c.id))).scalars())


async def test_an_empty_log_prunes_nothing(engine: AsyncEngine) -> None:
    assert await prune_deliveries(engine, NOW - timedelta(days=30)) == 0


async def test_rows_older_than_the_cutoff_go_in_batches_and_newer_ones_stay(engine: AsyncEngine) -> None:
    old = [timedelta(days=90) - timedelta(minutes=i) for i in range(23)]  # more than three batches of 7
    recent = [timedelta(days=29), timedelta(days=1), timedelta(0)]
    await log(engine, *old, *recent)
    assert await prune_deliveries(engine, NOW - timedelta(days=30), batch=7) == 23
    assert await left(engine) == ["evt_23", "evt_24", "evt_25"]
    assert await prune_deliveries(engine, NOW - timedelta(days=30), batch=7) == 0  # again: nothing more


async def test_a_batch_that_reaches_the_present_ends_the_pass(engine: AsyncEngine) -> None:
    """5 old rows then 10 new ones, batches of 7: the first window holds both kinds, so the pass stops after it,
    having deleted the old ones, without reading further."""
    await log(engine, *[timedelta(days=40)] * 5, *[timedelta(days=1)] * 10)
    assert await prune_deliveries(engine, NOW - timedelta(days=30), batch=7) == 5
    assert await left(engine) == [f"evt_{i}" for i in range(5, 15)]


async def test_stored_events_are_kept(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(webhook_events.insert().values(
            psp="card", event_id="evt_0", payment_id="pay_x", psp_reference="ref", status="captured",
            amount_minor=5000, currency="EUR", state="signalled", received_at=NOW - timedelta(days=90),
            updated_at=NOW - timedelta(days=90)))
    await log(engine, timedelta(days=90))
    assert await prune_deliveries(engine, NOW - timedelta(days=30)) == 1
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(webhook_events))).scalar_one() == 1
