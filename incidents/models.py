"""The incidents' tables: the incident (at most one open per class and scope), its timeline, and the payments and
payouts it is about."""

from __future__ import annotations

import sqlalchemy as sa

from payloop.db import UtcDateTime, metadata

INCIDENT_CLASSES = ("failed_deposits", "delayed_withdrawals", "callback_errors", "currency_mismatch",
                    "transaction_timeout", "gateway_downtime")
INCIDENT_STATES = ("open", "resolved")
EVENT_KINDS = ("opened", "reopened", "updated", "resolved")
AFFECTED_KINDS = ("payment", "payout")
INCIDENT_ID = sa.String(40)


def _one_of(column: str, words: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{word}'" for word in words) + ")"


incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("incident_id", INCIDENT_ID, primary_key=True),  # inc_<32 hex>
    sa.Column("incident_class", sa.String(30), nullable=False),
    sa.Column("scope", sa.String(120), nullable=False),  # "psp=card,method=card", "psp=card" or "all"
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("opened_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.Column("resolved_by", sa.String(100), nullable=True),  # "monitor", or the ops client
    sa.Column("first_seen_at", UtcDateTime, nullable=True),  # the oldest sign of the cause the detector saw
    sa.Column("diagnosis", sa.String(500), nullable=False),
    sa.Column("figures_at_open", sa.JSON, nullable=False),
    sa.Column("figures_now", sa.JSON, nullable=False),
    sa.CheckConstraint(_one_of("incident_class", INCIDENT_CLASSES), name="incident_class"),
    sa.CheckConstraint(_one_of("state", INCIDENT_STATES), name="state"),
    # The dedupe: one open incident per class and scope (a resolved one may be followed by a new one).
    sa.Index("uq_incidents_open_class_scope", "incident_class", "scope", unique=True,
             sqlite_where=sa.text("state = 'open'"), postgresql_where=sa.text("state = 'open'")),
    # The ops list (newest first, per state and class) and the open-incidents gauge.
    sa.Index("ix_incidents_state_opened_at", "state", "opened_at", "incident_id"),
    sa.Index("ix_incidents_class_opened_at", "incident_class", "opened_at", "incident_id"),
)

incident_events = sa.Table(
    "incident_events",
    metadata,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", INCIDENT_ID, sa.ForeignKey("incidents.incident_id"), nullable=False, index=True),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.CheckConstraint(_one_of("kind", EVENT_KINDS), name="kind"),
)

incident_payments = sa.Table(
    "incident_payments",
    metadata,
    sa.Column("incident_id", INCIDENT_ID, sa.ForeignKey("incidents.incident_id"), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("object_id", sa.String(100), nullable=False),
    sa.PrimaryKeyConstraint("incident_id", "kind", "object_id"),
    sa.CheckConstraint(_one_of("kind", AFFECTED_KINDS), name="kind"),
)
