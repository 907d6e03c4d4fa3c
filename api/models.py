"""The API's own tables: the Idempotency-Key store and the webhook inbox (with its dead letters)."""

import sqlalchemy as sa

from payloop.db import UtcDateTime, metadata

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("client_id", sa.String(100), primary_key=True),
    sa.Column("endpoint", sa.String(100), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # The payment / payout this key created: chosen when the key is first claimed, so a retry after a crash
    # reaches the same one, and a key reused after expiry never reaches an old one.
    sa.Column("resource_id", sa.String(100), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),  # in_flight | released (retry may claim) | done
    sa.Column("response_status", sa.Integer),
    sa.Column("response_body", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("psp", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("payment_id", sa.String(100), nullable=False, index=True),
    sa.Column("psp_reference", sa.String(200), nullable=False),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("failure_code", sa.String(100)),
    sa.Column("state", sa.String(20), nullable=False),  # received | signalled | dead_letter
    sa.Column("dead_letter_reason", sa.String(100)),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("psp", "event_id", name="uq_webhook_events_psp_event_id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    # What happened to each delivery: received/verified, duplicate, signalled, dead_letter, rejected (and why).
    # A rejected delivery is unverified, so it has no trusted event id: only the PSP and the reason are kept.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("psp", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(200), index=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("detail", sa.String(200)),
    sa.Column("at", UtcDateTime, nullable=False),
)
