"""Money after a payment: the payments record (facts and money), refunds, disputes, payouts and PSP fees.

Revision ID: 0011_money_after_payment
Revises: 0010_audit_idempotency_key
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0011_money_after_payment"
down_revision: str | None = "0010_audit_idempotency_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(100)
PSP = sa.String(40)


def _money(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("payment_id", ID, nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("player_id", sa.String(128), nullable=False),
        sa.Column("method", PSP, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("psp", PSP, nullable=True),
        sa.Column("psp_reference", sa.String(200), nullable=True),
        sa.Column("failure_code", ID, nullable=True),
        sa.Column("review_reason", ID, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        _money("captured_minor"),
        _money("credited_minor"),
        sa.Column("credit_transfer_id", sa.String(200), nullable=True),
        _money("refunded_minor"),
        _money("refund_pending_minor"),
        _money("uncredited_refunds_minor"),
        _money("disputed_minor"),
        _money("charged_back_minor"),
        _money("fees_minor"),
        sa.CheckConstraint("refunded_minor + refund_pending_minor <= captured_minor",
                           name=op.f("ck_payments_refunds_within_captured")),
        sa.CheckConstraint("uncredited_refunds_minor <= captured_minor - credited_minor",
                           name=op.f("ck_payments_uncredited_within_capture")),
        sa.CheckConstraint(
            "captured_minor >= 0 AND credited_minor >= 0 AND refunded_minor >= 0 AND refund_pending_minor >= 0 "
            "AND uncredited_refunds_minor >= 0 AND disputed_minor >= 0 AND charged_back_minor >= 0 AND fees_minor >= 0",
            name=op.f("ck_payments_money_not_negative"),
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_payments")),
    )
    op.create_index("ix_payments_created_at_payment_id", "payments", ["created_at", "payment_id"])
    for column in ("status", "player_id", "psp", "method", "review_reason"):
        op.create_index(f"ix_payments_{column}_created_at", "payments", [column, "created_at", "payment_id"])

    op.create_table(
        "refunds",
        sa.Column("refund_id", ID, nullable=False),
        sa.Column("payment_id", ID, nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("player_id", sa.String(128), nullable=False),
        sa.Column("psp", PSP, nullable=False),
        sa.Column("psp_payment_reference", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("funding", sa.String(16), nullable=False),
        sa.Column("held_minor", sa.BigInteger(), nullable=False),
        sa.Column("shortfall_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("review_reason", ID, nullable=True),
        sa.Column("psp_refund_reference", sa.String(200), nullable=True),
        sa.Column("failure_code", ID, nullable=True),
        sa.Column("fee_minor", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_refunds_amount_positive")),
        sa.CheckConstraint("funding IN ('player', 'uncredited')", name=op.f("ck_refunds_funding")),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed', 'in_review')",
                           name=op.f("ck_refunds_status")),
        sa.CheckConstraint(
            "held_minor >= 0 AND shortfall_minor >= 0 AND (held_minor + shortfall_minor = amount_minor "
            "OR (funding = 'uncredited' AND held_minor = 0 AND shortfall_minor = 0))",
            name=op.f("ck_refunds_funded"),
        ),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_refunds")),
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"])
    op.create_index("ix_refunds_status_updated_at", "refunds", ["status", "updated_at"])

    op.create_table(
        "disputes",
        sa.Column("psp", PSP, nullable=False),
        sa.Column("dispute_id", ID, nullable=False),
        sa.Column("payment_id", ID, nullable=False),
        sa.Column("player_id", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("held_minor", sa.BigInteger(), nullable=False),
        sa.Column("shortfall_minor", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason_code", ID, nullable=True),
        sa.Column("fee_minor", sa.BigInteger(), nullable=True),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_disputes_amount_positive")),
        sa.CheckConstraint(
            "held_minor >= 0 AND shortfall_minor >= 0 AND held_minor + shortfall_minor = amount_minor",
            name=op.f("ck_disputes_funded"),
        ),
        sa.CheckConstraint("state IN ('opened', 'won', 'lost')", name=op.f("ck_disputes_state")),
        sa.PrimaryKeyConstraint("psp", "dispute_id", name=op.f("pk_disputes")),
    )
    op.create_index(op.f("ix_disputes_payment_id"), "disputes", ["payment_id"])
    op.create_index("ix_disputes_opened_at", "disputes", ["opened_at", "psp", "dispute_id"])
    op.create_index("ix_disputes_state_opened_at", "disputes", ["state", "opened_at", "psp", "dispute_id"])
    op.create_index("ix_disputes_state_resolved_at", "disputes", ["state", "resolved_at"])

    op.create_table(
        "payouts",
        sa.Column("payout_id", ID, nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("player_id", sa.String(128), nullable=False),
        sa.Column("method", PSP, nullable=True),
        sa.Column("psp", PSP, nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("payout_id", name=op.f("pk_payouts")),
    )
    op.create_index("ix_payouts_status_updated_at", "payouts", ["status", "updated_at"])

    op.create_table(
        "psp_fees",
        sa.Column("transfer_id", sa.String(200), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("psp", PSP, nullable=False),
        sa.Column("method", PSP, nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("booked_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("operation IN ('capture', 'refund', 'payout', 'chargeback')",
                           name=op.f("ck_psp_fees_operation")),
        sa.CheckConstraint("fee_minor > 0", name=op.f("ck_psp_fees_fee_positive")),
        sa.PrimaryKeyConstraint("transfer_id", name=op.f("pk_psp_fees")),
    )
    op.create_index(op.f("ix_psp_fees_booked_at"), "psp_fees", ["booked_at"])


def downgrade() -> None:
    for table in ("psp_fees", "payouts", "disputes", "refunds", "payments"):
        op.drop_table(table)
