"""The players' checkout: the sessions platforms open, and each submitted form's payment or payout.

Revision ID: 0019_checkout
Revises: 0018_ops_sessions
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0019_checkout"
down_revision: str | None = "0018_ops_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkout_sessions",
        sa.Column("session_id", sa.String(40), primary_key=True),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3)),
        sa.Column("amount_minor", sa.BigInteger),
        sa.Column("country", sa.String(2)),
        sa.Column("locale", sa.String(10)),
        sa.Column("return_url", sa.String(2000), nullable=False),
        sa.Column("may_withdraw", sa.Boolean, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_checkout_sessions_expires_at", "checkout_sessions", ["expires_at"])
    op.create_table(
        "checkout_attempts",
        sa.Column("session_id", sa.String(40), primary_key=True),
        sa.Column("attempt_id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("resource_id", sa.String(40), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("checkout_attempts")
    op.drop_index("ix_checkout_sessions_expires_at", table_name="checkout_sessions")
    op.drop_table("checkout_sessions")
