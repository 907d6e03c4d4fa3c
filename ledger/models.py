"""Ledger tables (SQLAlchemy Core) on the shared `payloop.db.metadata`.

Balance convention: posted_balance = credits - debits, so the balances of one currency always sum to zero.
A transfer posted directly has resolved_at NULL; a hold gets resolved_at when it is posted or voided.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    text,
)
from payloop.db import UtcDateTime, metadata, utcnow




ACCOUNT_ID = String(200)

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", ACCOUNT_ID, primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("owner", String(128), nullable=False, index=True),
    # Lowest allowed available balance (posted - pending_debits); NULL = unbounded.
    Column("floor", BigInteger, nullable=True),
    Column("posted_balance", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("pending_debits", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("pending_credits", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("created_at", UtcDateTime, nullable=False, default=utcnow),
    Column("updated_at", UtcDateTime, nullable=False, default=utcnow),
    # The database itself refuses an overdraft, whatever the application code does.
    CheckConstraint("floor IS NULL OR posted_balance - pending_debits >= floor", name="floor"),
    CheckConstraint("pending_debits >= 0 AND pending_credits >= 0", name="pending_non_negative"),
)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    # The idempotency key, derived from the business operation (e.g. "deposit:pay_123:credit").
    Column("id", String(200), primary_key=True),
    Column("debit_account_id", ACCOUNT_ID, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("credit_account_id", ACCOUNT_ID, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("reference", String(200), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    # sha256 of the request body: a replay with another body is a conflict.
    Column("fingerprint", String(64), nullable=False),
    Column("metadata", JSON, nullable=True),
    Column("created_at", UtcDateTime, nullable=False, default=utcnow),
    Column("resolved_at", UtcDateTime, nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
    CheckConstraint("status IN ('posted', 'pending', 'voided')", name="status"),
    Index("ix_ledger_transfers_debit_account_id_created_at", "debit_account_id", "created_at"),
    Index("ix_ledger_transfers_credit_account_id_created_at", "credit_account_id", "created_at"),
)
