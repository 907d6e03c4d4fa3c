"""PSP health: one row per PSP call (psp_attempts) and the circuit breaker's state per PSP (psp_circuits).

Revision ID: 0008_psp_health
Revises: 0007_deposit_limit_usage
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0008_psp_health"
down_revision: str | None = "0007_deposit_limit_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "psp_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("psp", sa.String(50), nullable=False),
        sa.Column("operation", sa.String(40), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(100), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("outcome IN ('success', 'failure')", name=op.f("ck_psp_attempts_outcome")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_psp_attempts")),
    )
    op.create_index(op.f("ix_psp_attempts_at"), "psp_attempts", ["at"])
    op.create_index("ix_psp_attempts_psp_at", "psp_attempts", ["psp", "at"])
    op.create_table(
        "psp_circuits",
        sa.Column("psp", sa.String(50), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=True),
        sa.Column("probes_in_flight", sa.Integer(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("state IN ('closed', 'open', 'half_open')", name=op.f("ck_psp_circuits_state")),
        sa.PrimaryKeyConstraint("psp", name=op.f("pk_psp_circuits")),
    )


def downgrade() -> None:
    op.drop_table("psp_circuits")
    op.drop_table("psp_attempts")
