"""Ledger: accounts and transfers.

Revision ID: 0001_ledger
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_ledger"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("floor", sa.BigInteger(), nullable=True),
        sa.Column("posted_balance", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending_debits", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending_credits", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "floor IS NULL OR posted_balance - pending_debits >= floor", name=op.f("ck_ledger_accounts_floor")
        ),
        sa.CheckConstraint(
            "pending_debits >= 0 AND pending_credits >= 0", name=op.f("ck_ledger_accounts_pending_non_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
    )
    op.create_index(op.f("ix_ledger_accounts_owner"), "ledger_accounts", ["owner"])

    op.create_table(
        "ledger_transfers",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("debit_account_id", sa.String(200), nullable=False),
        sa.Column("credit_account_id", sa.String(200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transfers_amount_positive")),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name=op.f("ck_ledger_transfers_distinct_accounts")),
        sa.CheckConstraint("status IN ('posted', 'pending', 'voided')", name=op.f("ck_ledger_transfers_status")),
        sa.ForeignKeyConstraint(
            ["debit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_debit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_credit_account_id_ledger_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transfers")),
    )
    op.create_index(op.f("ix_ledger_transfers_reference"), "ledger_transfers", ["reference"])
    op.create_index(
        "ix_ledger_transfers_debit_account_id_created_at", "ledger_transfers", ["debit_account_id", "created_at"]
    )
    op.create_index(
        "ix_ledger_transfers_credit_account_id_created_at", "ledger_transfers", ["credit_account_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("ledger_transfers")
    op.drop_table("ledger_accounts")
