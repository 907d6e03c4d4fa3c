"""Incidents (incidents/models.py): the incident, at most one open per class and scope, its timeline and the
payments and payouts it is about; the indexes the monitor's detection and the alerts list read through.

Revision ID: 0016_incidents
Revises: 0015_audit_incident_id
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0016_incidents"
down_revision: str | None = "0015_audit_incident_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INCIDENT_ID = sa.String(40)
CLASSES = ("incident_class IN ('failed_deposits', 'delayed_withdrawals', 'callback_errors', 'currency_mismatch', "
           "'transaction_timeout', 'gateway_downtime')")
OPEN = sa.text("state = 'open'")
DETECTION_INDEXES = (
    ("payments", "ix_payments_updated_at_status", ["updated_at", "status"]),
    ("webhook_deliveries", "ix_webhook_deliveries_at", ["at"]),
    ("webhook_events", "ix_webhook_events_state_updated_at", ["state", "updated_at"]),
    ("alerts", "ix_alerts_at", ["at"]),
    ("alerts", "ix_alerts_kind_id", ["kind", "id"]),
)


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("incident_id", INCIDENT_ID, primary_key=True),
        sa.Column("incident_class", sa.String(30), nullable=False),
        sa.Column("scope", sa.String(120), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(100), nullable=True),
        sa.Column("first_seen_at", UtcDateTime(), nullable=True),
        sa.Column("diagnosis", sa.String(500), nullable=False),
        sa.Column("figures_at_open", sa.JSON(), nullable=False),
        sa.Column("figures_now", sa.JSON(), nullable=False),
        sa.CheckConstraint(CLASSES, name=op.f("ck_incidents_incident_class")),
        sa.CheckConstraint("state IN ('open', 'resolved')", name=op.f("ck_incidents_state")),
    )
    op.create_index("uq_incidents_open_class_scope", "incidents", ["incident_class", "scope"], unique=True,
                    sqlite_where=OPEN, postgresql_where=OPEN)
    op.create_index("ix_incidents_state_opened_at", "incidents", ["state", "opened_at", "incident_id"])
    op.create_index("ix_incidents_class_opened_at", "incidents", ["incident_class", "opened_at", "incident_id"])
    op.create_table(
        "incident_events",
        sa.Column("event_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", INCIDENT_ID, sa.ForeignKey("incidents.incident_id",
                                                            name=op.f("fk_incident_events_incident_id_incidents")),
                  nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.CheckConstraint("kind IN ('opened', 'reopened', 'updated', 'resolved')",
                           name=op.f("ck_incident_events_kind")),
    )
    op.create_index("ix_incident_events_incident_id", "incident_events", ["incident_id"])
    op.create_table(
        "incident_payments",
        sa.Column("incident_id", INCIDENT_ID, sa.ForeignKey("incidents.incident_id",
                                                            name=op.f("fk_incident_payments_incident_id_incidents")),
                  nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("object_id", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", "kind", "object_id", name=op.f("pk_incident_payments")),
        sa.CheckConstraint("kind IN ('payment', 'payout')", name=op.f("ck_incident_payments_kind")),
    )
    for table, name, columns in DETECTION_INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for table, name, _ in reversed(DETECTION_INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("incident_payments")
    op.drop_index("ix_incident_events_incident_id", table_name="incident_events")
    op.drop_table("incident_events")
    for name in ("ix_incidents_class_opened_at", "ix_incidents_state_opened_at", "uq_incidents_open_class_scope"):
        op.drop_index(name, table_name="incidents")
    op.drop_table("incidents")
