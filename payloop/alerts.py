"""Alerts: things a person must look at (a PSP settled with another amount or reference, …), one row per kind
and reference, counted on `/metrics` for alerting."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from payloop.db import UtcDateTime, insert_if_missing, metadata

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(60), nullable=False),
    sa.Column("reference", sa.String(100), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("kind", "reference", name="uq_alerts_kind_reference"),
)


async def raise_alert(engine: AsyncEngine, *, kind: str, reference: str, details: dict[str, str], now: datetime) -> None:
    """Idempotent: a retried activity finds its alert and adds nothing."""
    async with engine.begin() as conn:
        await insert_if_missing(conn, alerts, {"kind": kind, "reference": reference, "details": details, "at": now})


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(alerts.c.kind, sa.func.count()).group_by(alerts.c.kind))
        return {kind: int(count) for kind, count in rows}
