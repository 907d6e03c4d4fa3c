"""Player notifications outbox.

Revision ID: 0006_player_notifications
Revises: 0005_player_limit_changes
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0006_player_notifications"
down_revision: str | None = "0005_player_limit_changes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "player_notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("player_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("reference", sa.String(100), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_player_notifications")),
        sa.UniqueConstraint("kind", "reference", name=op.f("uq_player_notifications_kind_reference")),
    )
    op.create_index(op.f("ix_player_notifications_player_id"), "player_notifications", ["player_id"])


def downgrade() -> None:
    op.drop_table("player_notifications")
