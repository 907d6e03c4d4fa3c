"""The API's own tables: the Idempotency-Key store, the webhook delivery log (the inbox of verified events is
`psp/inbox.py`: the workflows' activities read their evidence from it) and the ops console's sessions."""

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
    sa.Index("ix_webhook_deliveries_at", "at"),  # the monitor's window of callback errors, the pruner
)

ops_sessions = sa.Table(
    "ops_sessions",
    metadata,
    # An ops console sign-in (api/console/sessions.py). Only the SHA-256 of the cookie's random token is kept, so
    # a read of this table signs nobody in; deleting the row ends the session (sign-out, expiry).
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False),  # the ops-scoped API key's client
    sa.Column("csrf_token", sa.String(64), nullable=False),  # every console form carries it
    sa.Column("created_at", UtcDateTime, nullable=False),  # the absolute expiry counts from here
    sa.Column("last_seen_at", UtcDateTime, nullable=False, index=True),  # the idle expiry from here
)
