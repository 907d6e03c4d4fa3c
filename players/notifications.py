"""Player notifications outbox: one row per (kind, reference), for the messaging service to deliver.

Written by the workflows' notify activity; a retried activity finds its row and adds nothing.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from payloop.db import UtcDateTime, insert_if_missing, metadata

player_notifications = sa.Table(
    "player_notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("player_id", sa.String(100), nullable=False, index=True),
    sa.Column("kind", sa.String(60), nullable=False),
    sa.Column("reference", sa.String(100), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime),
    sa.UniqueConstraint("kind", "reference", name="uq_player_notifications_kind_reference"),
)


async def enqueue(engine: AsyncEngine, *, player_id: str, kind: str, reference: str, details: dict[str, str],
                  now: datetime) -> bool:
    async with engine.begin() as conn:
        return await insert_if_missing(conn, player_notifications, {
            "player_id": player_id, "kind": kind, "reference": reference, "details": details, "created_at": now,
        })


async def for_player(engine: AsyncEngine, player_id: str) -> list[dict]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(player_notifications).where(player_notifications.c.player_id == player_id)
            .order_by(player_notifications.c.id)
        )
        return [row._asdict() for row in rows]
