"""Currency conversion: the players' wallet currency, and each conversion's locked quote and amounts.

Revision ID: 0021_fx
Revises: 0020_events
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0021_fx"
down_revision: str | None = "0020_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("players") as batch:
        batch.add_column(sa.Column("wallet_currency", sa.String(3), nullable=True))
    op.create_table(
        "fx_conversions",
        sa.Column("reference", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(10), primary_key=True),
        sa.Column("player_id", sa.String(100), nullable=False),
        sa.Column("method", sa.String(40)),
        sa.Column("psp", sa.String(40)),
        sa.Column("from_currency", sa.String(3), nullable=False),
        sa.Column("from_minor", sa.BigInteger, nullable=False),
        sa.Column("to_currency", sa.String(3), nullable=False),
        sa.Column("to_minor", sa.BigInteger, nullable=False),
        sa.Column("mid_minor", sa.BigInteger, nullable=False),
        sa.Column("margin_minor", sa.BigInteger, nullable=False),
        sa.Column("rate", sa.String(32), nullable=False),
        sa.Column("spread_bps", sa.Integer, nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("rate_id", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=False),
        sa.Column("booked_at", UtcDateTime, nullable=False),
        sa.CheckConstraint("from_minor > 0 AND to_minor >= 0 AND margin_minor >= 0", name="fx_amounts"),
        sa.CheckConstraint("kind IN ('deposit', 'payout')", name="fx_kind"),
    )


def downgrade() -> None:
    op.drop_table("fx_conversions")
    with op.batch_alter_table("players") as batch:
        batch.drop_column("wallet_currency")
