"""Retention of the webhook delivery log: rows older than `PAYLOOP_WEBHOOK_DELIVERY_RETENTION_DAYS` are deleted by
every API process, at start-up and then every `PRUNE_EVERY_SECONDS` (several processes pruning at once only find
less to delete). The stored events themselves (`webhook_events`, the evidence) are kept."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from api.models import webhook_deliveries

log = logging.getLogger("payloop.api.retention")

PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH_ROWS = 1000


async def prune_deliveries(engine: AsyncEngine, older_than: datetime, batch: int = PRUNE_BATCH_ROWS) -> int:
    """Deletes delivery-log rows from before `older_than`, at most `batch` rows per statement (short transactions:
    the inbox keeps writing meanwhile); returns how many. Rows are appended in time order, so the oldest have the
    lowest ids: each statement looks only at the next `batch` ids of the primary key and deletes the old ones among
    them; a window that also held newer rows has reached the present, and the pass ends. So no index on `at` is
    needed and no statement scans the table. (Clock skew between API processes may keep a row seconds longer.)"""
    deleted = 0
    while True:
        async with engine.begin() as conn:
            window = sa.select(webhook_deliveries.c.id).order_by(webhook_deliveries.c.id).limit(batch).subquery()
            last_id, rows = (await conn.execute(sa.select(sa.func.max(window.c.id), sa.func.count()))).one()
            if rows == 0:
                return deleted
            gone = (await conn.execute(webhook_deliveries.delete().where(
                webhook_deliveries.c.id <= last_id, webhook_deliveries.c.at < older_than))).rowcount
        deleted += gone
        if gone < batch:
            return deleted
        await asyncio.sleep(0)  # let requests waiting on the event loop run between batches


class DeliveryLogPruner:
    """The API's background task: prunes now, then every `every_seconds`, until stopped. A failure (the database
    down) is logged and the next pass tries again; it never ends the task."""

    def __init__(self, engine: AsyncEngine, retention_days: int, every_seconds: float = PRUNE_EVERY_SECONDS) -> None:
        self.engine = engine
        self.retention = timedelta(days=retention_days)
        self.every_seconds = every_seconds
        self.pruned_total = 0  # for /metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prune-webhook-deliveries")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                pruned = await prune_deliveries(self.engine, datetime.now(timezone.utc) - self.retention)
            except Exception as err:  # noqa: BLE001 — any failure: say so, try again at the next pass
                log.warning("pruning the webhook delivery log failed: %s: %s", type(err).__name__, err)
            else:
                self.pruned_total += pruned
                if pruned:
                    log.info("pruned %d webhook delivery-log rows older than %s", pruned, self.retention)
            await asyncio.sleep(self.every_seconds)
