"""Player notifications outbox: one row per (kind, reference), for the platform to message the player.

Written by the workflows' notify activity, with its `player.notification` event in the same transaction (the event
is what reaches the platform, through the outbound events' delivery); a retried activity finds its row and adds
nothing. `delivered_at` is set when the event first reaches one of the platform's endpoints.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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


async def enqueue_in(conn: AsyncConnection, *, player_id: str, kind: str, reference: str,
                     details: dict[str, str], now: datetime) -> bool:
    """The row, in the caller's transaction; False when it was there already."""
    return await insert_if_missing(conn, player_notifications, {
        "player_id": player_id, "kind": kind, "reference": reference, "details": details, "created_at": now,
    })


async def mark_delivered_in(conn: AsyncConnection, *, kind: str, reference: str, now: datetime) -> None:
    """The first delivery of the notification's event sets delivered_at; later ones keep it."""
    n = player_notifications.c
    await conn.execute(player_notifications.update()
                       .where(n.kind == kind, n.reference == reference, n.delivered_at.is_(None))
                       .values(delivered_at=now))


async def for_player(engine: AsyncEngine, player_id: str) -> list[dict]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(player_notifications).where(player_notifications.c.player_id == player_id)
            .order_by(player_notifications.c.id)
        )
        return [row._asdict() for row in rows]
