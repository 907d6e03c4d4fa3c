"""The ops console's sessions: the hash of each session's token, its client, its CSRF token and its clock.

Revision ID: 0018_ops_sessions
Revises: 0017_ops_controls
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0018_ops_sessions"
down_revision: str | None = "0017_ops_controls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ops_sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("last_seen_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_ops_sessions_last_seen_at", "ops_sessions", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_ops_sessions_last_seen_at", table_name="ops_sessions")
    op.drop_table("ops_sessions")
