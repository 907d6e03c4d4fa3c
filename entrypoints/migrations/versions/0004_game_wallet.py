"""Game-round wallet: provider transactions (bets, wins, rollbacks, tombstones) and rounds.

Revision ID: 0004_game_wallet
Revises: 0003_audit_log
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0004_game_wallet"
down_revision: str | None = "0003_audit_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "game_transactions",
        sa.Column("transaction_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("player_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("round_id", sa.String(100), nullable=False),
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("reference_transaction_id", sa.String(100), nullable=True),
        sa.Column("transfer_id", sa.String(200), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('bet', 'win', 'rollback', 'tombstone')", name=op.f("ck_game_transactions_kind")
        ),
        sa.CheckConstraint(
            "amount_minor IS NULL OR amount_minor >= 0", name=op.f("ck_game_transactions_amount_not_negative")
        ),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_game_transactions")),
    )
    op.create_index(op.f("ix_game_transactions_round_id"), "game_transactions", ["round_id"])
    op.create_index(
        op.f("ix_game_transactions_reference_transaction_id"), "game_transactions", ["reference_transaction_id"]
    )
    op.create_index(
        "ix_game_transactions_player_id_created_at", "game_transactions", ["player_id", "created_at"]
    )

    op.create_table(
        "game_rounds",
        sa.Column("player_id", sa.String(128), nullable=False),
        sa.Column("round_id", sa.String(100), nullable=False),
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("settled_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("player_id", "round_id", name=op.f("pk_game_rounds")),
    )


def downgrade() -> None:
    op.drop_table("game_rounds")
    op.drop_table("game_transactions")
