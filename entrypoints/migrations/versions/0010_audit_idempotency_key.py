"""Audit entries written by workflow activities carry an idempotency key (retries write once).

Revision ID: 0010_audit_idempotency_key
Revises: 0009_webhook_log_and_alerts
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_audit_idempotency_key"
down_revision: str | None = "0009_webhook_log_and_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.create_index("ix_audit_log_idempotency_key", "audit_log", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_audit_log_idempotency_key", table_name="audit_log")
    op.drop_column("audit_log", "idempotency_key")
