"""Deposit-limit usage: deposits count against the limits from screening on, not from their credit.

Revision ID: 0007_deposit_limit_usage
Revises: 0006_player_notifications
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0007_deposit_limit_usage"
down_revision: str | None = "0006_player_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deposit_limit_usage",
        sa.Column("payment_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(100), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("released_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_deposit_limit_usage")),
    )
    op.create_index("ix_deposit_limit_usage_player", "deposit_limit_usage", ["player_id", "currency", "created_at"])


def downgrade() -> None:
    op.drop_table("deposit_limit_usage")
