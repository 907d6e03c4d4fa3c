"""The risk engine: observations (velocity, shared devices and instruments), decisions, AML cases and their
timeline (risk/models.py); when a player was first seen; the indexes that find one player's payouts and disputes.

Revision ID: 0014_risk
Revises: 0013_reconciliation
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0014_risk"
down_revision: str | None = "0013_reconciliation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(100)
PLAYER_ID = sa.String(128)
CASE_ID = sa.String(40)
OPERATIONS = "operation IN ('deposit', 'payout')"
STAGES = "stage IN ('pre', 'instrument')"
ACTIVE_CASE = "state IN ('open', 'escalated')"
LEDGER_INDEXES = (
    ("payouts", "ix_payouts_player_id_status", ["player_id", "status", "created_at"]),
    ("disputes", "ix_disputes_player_id", ["player_id"]),
)


def upgrade() -> None:
    # A plain ADD COLUMN on both backends (no batch copy of players, which player_deposit_limits references).
    op.add_column("players", sa.Column("created_at", UtcDateTime(), nullable=True))
    op.execute("UPDATE players SET created_at = updated_at")
    for table, name, columns in LEDGER_INDEXES:
        op.create_index(name, table, columns)

    op.create_table(
        "risk_observations",
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("player_id", PLAYER_ID, nullable=False),
        sa.Column("device_id", sa.String(200), nullable=True),
        sa.Column("ip_address", sa.String(45), nullable=True),
        sa.Column("instrument", sa.String(200), nullable=True),
        sa.Column("amount_eur_minor", sa.BigInteger(), nullable=True),
        sa.Column("method", sa.String(40), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(OPERATIONS, name=op.f("ck_risk_observations_operation")),
        sa.CheckConstraint(STAGES, name=op.f("ck_risk_observations_stage")),
        sa.PrimaryKeyConstraint("operation", "subject_id", name=op.f("pk_risk_observations")),
    )
    for column in ("player_id", "device_id", "instrument", "ip_address"):
        op.create_index(f"ix_risk_observations_{column}_operation", "risk_observations",
                        [column, "operation", "created_at"])
    op.create_index("ix_risk_observations_device_id_player_id", "risk_observations", ["device_id", "player_id"])
    op.create_index("ix_risk_observations_instrument_player_id", "risk_observations", ["instrument", "player_id"])

    op.create_table(
        "risk_decisions",
        sa.Column("decision_id", sa.String(40), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("subject_id", ID, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("player_id", PLAYER_ID, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("hits", sa.JSON(), nullable=False),
        sa.Column("shadow_hits", sa.JSON(), nullable=False),
        sa.Column("shadow_action", sa.String(16), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(OPERATIONS, name=op.f("ck_risk_decisions_operation")),
        sa.CheckConstraint(STAGES, name=op.f("ck_risk_decisions_stage")),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_risk_decisions")),
    )
    op.create_index("uq_risk_decisions_subject", "risk_decisions", ["operation", "subject_id", "stage"], unique=True)
    op.create_index("ix_risk_decisions_player_id_created_at", "risk_decisions", ["player_id", "created_at"])

    op.create_table(
        "risk_cases",
        sa.Column("case_id", CASE_ID, nullable=False),
        sa.Column("player_id", PLAYER_ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("subject_ids", sa.JSON(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("decision_note", sa.String(2000), nullable=True),
        sa.CheckConstraint("kind IN ('cdd_threshold', 'structuring', 'rapid_in_out', 'unusual_route', "
                           "'shared_instrument')", name=op.f("ck_risk_cases_kind")),
        sa.CheckConstraint("state IN ('open', 'escalated', 'cleared', 'reported')", name=op.f("ck_risk_cases_state")),
        sa.CheckConstraint("(state = 'open') = (decided_at IS NULL)", name=op.f("ck_risk_cases_decided")),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_risk_cases")),
    )
    op.create_index("uq_risk_cases_active_player_kind", "risk_cases", ["player_id", "kind"], unique=True,
                    postgresql_where=sa.text(ACTIVE_CASE), sqlite_where=sa.text(ACTIVE_CASE))
    op.create_index("ix_risk_cases_player_id_state", "risk_cases", ["player_id", "state"])
    op.create_index("ix_risk_cases_created_at_case_id", "risk_cases", ["created_at", "case_id"])
    for column in ("state", "kind"):
        op.create_index(f"ix_risk_cases_{column}_created_at", "risk_cases", [column, "created_at", "case_id"])

    op.create_table(
        "risk_case_events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", CASE_ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("reason", sa.String(2000), nullable=False),
        sa.Column("subject_ids", sa.JSON(), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("hit_key", sa.String(64), nullable=True),
        sa.CheckConstraint("kind IN ('opened', 'hit', 'clear', 'escalate', 'report')",
                           name=op.f("ck_risk_case_events_kind")),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_risk_case_events")),
    )
    op.create_index("ix_risk_case_events_case_id_event_id", "risk_case_events", ["case_id", "event_id"])
    op.create_index("uq_risk_case_events_hit_key", "risk_case_events", ["hit_key"], unique=True,
                    postgresql_where=sa.text("hit_key IS NOT NULL"), sqlite_where=sa.text("hit_key IS NOT NULL"))


def downgrade() -> None:
    for table in ("risk_case_events", "risk_cases", "risk_decisions", "risk_observations"):
        op.drop_table(table)
    for table, name, _ in LEDGER_INDEXES:
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("players") as batch:
        batch.drop_column("created_at")
