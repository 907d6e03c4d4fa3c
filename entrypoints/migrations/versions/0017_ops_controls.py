"""Ops controls: a PSP circuit forced open or closed (psp_circuits.forced) and payment methods switched off
(method_switches).

Revision ID: 0017_ops_controls
Revises: 0016_incidents
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0017_ops_controls"
down_revision: str | None = "0016_incidents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite adds a CHECK constraint only by rebuilding the table.
    with op.batch_alter_table("psp_circuits") as batch:
        batch.add_column(sa.Column("forced", sa.String(10), nullable=True))
        batch.create_check_constraint(op.f("ck_psp_circuits_forced"), "forced IS NULL OR forced = state")
    op.create_table(
        "method_switches",
        sa.Column("method", sa.String(30), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("method", name=op.f("pk_method_switches")),
    )


def downgrade() -> None:
    op.drop_table("method_switches")
    with op.batch_alter_table("psp_circuits") as batch:
        batch.drop_constraint(op.f("ck_psp_circuits_forced"), type_="check")
        batch.drop_column("forced")
