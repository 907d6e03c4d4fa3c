"""Alerts: things a person must look at (a PSP settled with another amount or reference, …), one row per kind
and reference; the process that raises one counts it on its metrics (`payloop_alerts_total`) for alerting."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
    sa.Index("ix_alerts_at", "at"),  # the monitor's window
    sa.Index("ix_alerts_kind_id", "kind", "id"),  # the ops list per kind, newest first
)


async def recent_alerts(engine: AsyncEngine, limit: int = 20) -> list[dict[str, Any]]:
    """The newest alerts first (by id: the order they were raised in)."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit))
        return [row._asdict() for row in rows]


async def raise_alert(engine: AsyncEngine, *, kind: str, reference: str, details: dict[str, str],
                      now: datetime) -> bool:
    """Idempotent: a retried activity finds its alert and adds nothing. True when this call raised it."""
    async with engine.begin() as conn:
        return await insert_if_missing(conn, alerts, {"kind": kind, "reference": reference, "details": details,
                                                      "at": now})

