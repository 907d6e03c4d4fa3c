"""An audit entry may name the incident its ops action was taken for (the incident report's corrections).

Revision ID: 0015_audit_incident_id
Revises: 0014_risk
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_audit_incident_id"
down_revision: str | None = "0014_risk"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("incident_id", sa.String(40), nullable=True))
    op.create_index("ix_audit_log_incident_id", "audit_log", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_incident_id", table_name="audit_log")
    op.drop_column("audit_log", "incident_id")
