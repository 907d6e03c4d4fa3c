"""The API's own tables: the Idempotency-Key store, the webhook delivery log (the inbox of verified events is
`psp/inbox.py`: the workflows' activities read their evidence from it), the ops console's sessions and the
players' checkout sessions."""

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

checkout_sessions = sa.Table(
    "checkout_sessions",
    metadata,
    # A checkout a platform opened for one of its players (api/checkout/sessions.py). Its URL carries the id with a
    # signature and the expiry; what the player may do is read from here, never from the URL.
    sa.Column("session_id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False),  # the platform's: its payments are started as it
    sa.Column("player_id", sa.String(64), nullable=False),
    sa.Column("currency", sa.String(3)),  # preselected; null = the player chooses
    sa.Column("amount_minor", sa.BigInteger),  # preselected, in currency; null = the player enters it
    sa.Column("country", sa.String(2)),
    sa.Column("locale", sa.String(10)),  # null = from the browser's Accept-Language
    sa.Column("return_url", sa.String(2000), nullable=False),
    # Whether the key that opened it had the `wallet` scope: only then does the checkout show the balance and pay out.
    sa.Column("may_withdraw", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
)

checkout_attempts = sa.Table(
    "checkout_attempts",
    metadata,
    # One submitted checkout form: its attempt id is in the form, so a double click or a resubmitted form is the
    # same attempt, hence the same Idempotency-Key and the same payment or payout.
    sa.Column("session_id", sa.String(40), primary_key=True),
    sa.Column("attempt_id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),  # deposit | payout
    sa.Column("resource_id", sa.String(40), nullable=False),  # pay_… / po_…
    sa.Column("created_at", UtcDateTime, nullable=False),
)
