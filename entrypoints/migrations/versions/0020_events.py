"""Outbound events: the outbox, the platforms' endpoints and the deliveries to them.

Revision ID: 0020_events
Revises: 0019_checkout
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0020_events"
down_revision: str | None = "0019_checkout"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", _SEQUENCE, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(60), nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("ordering_key", sa.String(100), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("dedupe_key", name="uq_events_dedupe_key"),
    )
    op.create_index("ix_events_client_id_seq", "events", ["client_id", "seq"])
    op.create_table(
        "event_endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("event_types", sa.JSON),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("deleted_at", UtcDateTime),
    )
    op.create_index("ix_event_endpoints_client_id", "event_endpoints", ["client_id"])
    op.create_table(
        "event_deliveries",
        sa.Column("id", _SEQUENCE, primary_key=True, autoincrement=True),
        sa.Column("event_seq", sa.BigInteger, sa.ForeignKey("events.seq"), nullable=False),
        sa.Column("endpoint_id", sa.String(40), sa.ForeignKey("event_endpoints.id"), nullable=False),
        sa.Column("ordering_key", sa.String(100), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.String(200)),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("delivered_at", UtcDateTime),
        sa.UniqueConstraint("event_seq", "endpoint_id", name="uq_event_deliveries_event_seq"),
    )
    op.create_index("ix_event_deliveries_state_next_attempt_at", "event_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_event_deliveries_state_id", "event_deliveries", ["state", "id"])
    op.create_index("ix_event_deliveries_endpoint_id_ordering_key_event_seq", "event_deliveries",
                    ["endpoint_id", "ordering_key", "event_seq"])


def downgrade() -> None:
    op.drop_table("event_deliveries")
    op.drop_table("event_endpoints")
    op.drop_index("ix_events_client_id_seq", table_name="events")
    op.drop_table("events")
