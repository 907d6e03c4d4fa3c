"""Player controls (KYC, self-exclusion, deposit limits) and the API's stores (idempotency keys, webhook inbox).

Revision ID: 0002_players_and_api_stores
Revises: 0001_ledger
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0002_players_and_api_stores"
down_revision: str | None = "0001_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "players",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("kyc_status", sa.String(20), server_default="unverified", nullable=False),
        sa.Column("self_excluded_until", UtcDateTime(), nullable=True),
        sa.Column("self_excluded_indefinitely", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("closed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_players")),
    )
    op.create_table(
        "player_deposit_limits",
        sa.Column("player_id", sa.String(100), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("period", sa.String(5), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("amount_minor >= 0", name=op.f("ck_player_deposit_limits_amount_not_negative")),
        sa.CheckConstraint("period IN ('day', 'week', 'month')", name=op.f("ck_player_deposit_limits_known_period")),
        sa.ForeignKeyConstraint(["player_id"], ["players.id"], name=op.f("fk_player_deposit_limits_player_id_players")),
        sa.PrimaryKeyConstraint("player_id", "currency", "period", name=op.f("pk_player_deposit_limits")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(100), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "endpoint", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"])
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("psp", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("payment_id", sa.String(100), nullable=False),
        sa.Column("psp_reference", sa.String(200), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("failure_code", sa.String(100), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("dead_letter_reason", sa.String(100), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("psp", "event_id", name=op.f("uq_webhook_events_psp_event_id")),
    )
    op.create_index(op.f("ix_webhook_events_payment_id"), "webhook_events", ["payment_id"])


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("idempotency_keys")
    op.drop_table("player_deposit_limits")
    op.drop_table("players")
