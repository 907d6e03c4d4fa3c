"""Currency conversion: the players' wallet currency, the deposits registered as under way by their claim of it,
and each conversion's locked quote and amounts.

A player who already holds money (balance or hold) in exactly one currency gets that one as wallet currency, so
their money stays where payouts find it. One who holds money in several keeps none: each currency stays as it is
until ops pay the others out and set one (the migration logs how many; README "Currencies and conversion").

Revision ID: 0021_fx
Revises: 0020_events
Create Date: 2026-12-06
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0021_fx"
down_revision: str | None = "0020_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The currencies in which a player's accounts hold anything: a balance, a hold, a pending credit.
_HOLDING = """FROM ledger_accounts a WHERE a.kind = 'player' AND a.owner = players.id
    AND (a.posted_balance <> 0 OR a.pending_debits <> 0 OR a.pending_credits <> 0)"""


def upgrade() -> None:
    with op.batch_alter_table("players") as batch:
        batch.add_column(sa.Column("wallet_currency", sa.String(3), nullable=True))
    op.execute(f"UPDATE players SET wallet_currency = (SELECT MIN(a.currency) {_HOLDING}) "
               f"WHERE (SELECT COUNT(DISTINCT a.currency) {_HOLDING}) = 1")
    several = op.get_bind().execute(sa.text(
        f"SELECT COUNT(*) FROM players WHERE (SELECT COUNT(DISTINCT a.currency) {_HOLDING}) > 1")).scalar_one()
    if several:
        logging.getLogger("alembic.runtime.migration").warning(
            "%d players hold money in several currencies: no wallet currency set for them", several)
    op.create_table(
        "wallet_deposits",
        sa.Column("payment_id", sa.String(100), primary_key=True),
        sa.Column("player_id", sa.String(128), nullable=False),
        sa.Column("wallet_currency", sa.String(3), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_wallet_deposits_player_id", "wallet_deposits", ["player_id"])
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
    op.drop_index("ix_wallet_deposits_player_id", table_name="wallet_deposits")
    op.drop_table("wallet_deposits")
    with op.batch_alter_table("players") as batch:
        batch.drop_column("wallet_currency")
