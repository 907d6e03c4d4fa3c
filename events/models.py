"""The outbound events' tables: the outbox (`events`), the platforms' endpoints, and one delivery per event and
endpoint."""

from __future__ import annotations

import sqlalchemy as sa

from payloop.db import UtcDateTime, metadata

# SQLite makes only an INTEGER primary key its rowid (auto-increment); PostgreSQL gets a BIGINT identity.
_SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

events = sa.Table(
    "events",
    metadata,
    # The order events were committed in (events/outbox.py serializes the inserts): the public id is built from it.
    sa.Column("seq", _SEQUENCE, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(60), nullable=False),
    sa.Column("client_id", sa.String(100), nullable=False),
    # What deliveries are ordered by: the payment (or payout, player) the event is about.
    sa.Column("ordering_key", sa.String(100), nullable=False),
    # One event per state change: a retried activity finds it and adds nothing.
    sa.Column("dedupe_key", sa.String(200), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("dedupe_key", name="uq_events_dedupe_key"),
    sa.Index("ix_events_client_id_seq", "client_id", "seq"),
)

event_endpoints = sa.Table(
    "event_endpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("event_types", sa.JSON),  # null: every type
    sa.Column("secret", sa.String(100), nullable=False),  # `whsec_<base64>`, the signing key
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("deleted_at", UtcDateTime),
    sa.Index("ix_event_endpoints_client_id", "client_id"),
)

event_deliveries = sa.Table(
    "event_deliveries",
    metadata,
    sa.Column("id", _SEQUENCE, primary_key=True, autoincrement=True),
    sa.Column("event_seq", sa.BigInteger, sa.ForeignKey("events.seq"), nullable=False),
    sa.Column("endpoint_id", sa.String(40), sa.ForeignKey("event_endpoints.id"), nullable=False),
    sa.Column("ordering_key", sa.String(100), nullable=False),  # the event's, so head-of-line reads one index
    sa.Column("state", sa.String(12), nullable=False),  # pending | delivering | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    # pending: when it is due; delivering: when its claim lapses (a worker died mid-send) and it is due again.
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.String(200)),  # what went wrong, never a body or a secret
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime),
    sa.UniqueConstraint("event_seq", "endpoint_id", name="uq_event_deliveries_event_seq"),
    sa.Index("ix_event_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    sa.Index("ix_event_deliveries_state_id", "state", "id"),
    sa.Index("ix_event_deliveries_endpoint_id_ordering_key_event_seq", "endpoint_id", "ordering_key", "event_seq"),
)
