"""The audit log: who decided what, when, about which object. Append-only; written in the same transaction
as the change it records where there is one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payloop.db import UtcDateTime, insert_if_missing, metadata

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),  # the API client (and operator, when given)
    sa.Column("action", sa.String(60), nullable=False),  # e.g. "payout.review.approve", "player.kyc.set"
    sa.Column("subject", sa.String(120), nullable=False, index=True),  # e.g. "payout:po_…", "player:p1"
    sa.Column("details", sa.JSON, nullable=False),
    # Set by entries a workflow's activity writes (its retries must not write twice): unique when present.
    sa.Column("idempotency_key", sa.String(200)),
    sa.Index("ix_audit_log_idempotency_key", "idempotency_key", unique=True),
    # Set by an ops action taken for an incident: its report lists the corrections taken.
    sa.Column("incident_id", sa.String(40)),
    sa.Index("ix_audit_log_incident_id", "incident_id"),
)


async def record(
    conn: AsyncConnection, *, actor: str, action: str, subject: str, details: dict[str, Any], now: datetime,
    incident_id: str | None = None,
) -> None:
    await conn.execute(audit_log.insert().values(at=now, actor=actor, action=action, subject=subject, details=details,
                                                 incident_id=incident_id))


async def record_once(
    engine: AsyncEngine, *, idempotency_key: str, actor: str, action: str, subject: str, details: dict[str, Any],
    now: datetime, incident_id: str | None = None,
) -> None:
    """An entry written at most once per key, however often the writer is retried."""
    async with engine.begin() as conn:
        await insert_if_missing(conn, audit_log, {"idempotency_key": idempotency_key, "at": now, "actor": actor,
                                                  "action": action, "subject": subject, "details": details,
                                                  "incident_id": incident_id})


async def entries(engine: AsyncEngine, subject: str, limit: int = 100) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(audit_log).where(audit_log.c.subject == subject).order_by(audit_log.c.id.desc()).limit(limit)
        )
        return [row._asdict() for row in rows]
