"""Deposit limit changes that wait: a pending value and its effective time, and a version for compare-and-swap.

Revision ID: 0005_player_limit_changes
Revises: 0004_game_wallet
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0005_player_limit_changes"
down_revision: str | None = "0004_game_wallet"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot add CHECK constraints in place, so it rebuilds the table; PostgreSQL alters it.
    with op.batch_alter_table("player_deposit_limits") as batch:
        batch.add_column(sa.Column("pending_amount_minor", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("pending_effective_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), server_default="0", nullable=False))
        batch.create_check_constraint(
            op.f("ck_player_deposit_limits_pending_not_negative"),
            "pending_amount_minor IS NULL OR pending_amount_minor >= 0",
        )
        batch.create_check_constraint(
            op.f("ck_player_deposit_limits_pending_has_time"),
            "pending_amount_minor IS NULL OR pending_effective_at IS NOT NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("player_deposit_limits") as batch:
        batch.drop_constraint(op.f("ck_player_deposit_limits_pending_has_time"), type_="check")
        batch.drop_constraint(op.f("ck_player_deposit_limits_pending_not_negative"), type_="check")
        batch.drop_column("version")
        batch.drop_column("pending_effective_at")
        batch.drop_column("pending_amount_minor")
