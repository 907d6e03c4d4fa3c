"""Reconciliation: when a payment was captured, the indexes that find a PSP's movements of one day, and the runs,
lines, settlements and cases of ledger/reconciliation.py.

Revision ID: 0013_reconciliation
Revises: 0012_webhook_event_kinds
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from payloop.db import UtcDateTime

revision: str = "0013_reconciliation"
down_revision: str | None = "0012_webhook_event_kinds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PSP = sa.String(40)
RUN_ID = sa.String(200)
LINE_KEY = sa.String(250)
CASE_ID = sa.String(40)
CLASSES = ("'matched', 'missing_in_ledger', 'missing_at_psp', 'expected', 'amount_mismatch', 'currency_mismatch', "
           "'fee_variance', 'duplicate', 'status_mismatch'")
CASE_CLASSES = ("'missing_in_ledger', 'missing_at_psp', 'amount_mismatch', 'currency_mismatch', 'fee_variance', "
                "'duplicate', 'status_mismatch'")
# (table, index, columns) of the movements' day look-ups.
MOVEMENT_INDEXES = (
    ("payments", "ix_payments_psp_captured_at", ["psp", "captured_at"]),
    ("payments", "ix_payments_psp_reference", ["psp_reference"]),
    ("refunds", "ix_refunds_psp_status_updated_at", ["psp", "status", "updated_at"]),
    ("refunds", "ix_refunds_psp_refund_reference", ["psp_refund_reference"]),
    ("disputes", "ix_disputes_psp_opened_at", ["psp", "opened_at"]),
    ("disputes", "ix_disputes_psp_state_resolved_at", ["psp", "state", "resolved_at"]),
    ("payouts", "ix_payouts_psp_status_updated_at", ["psp", "status", "updated_at"]),
)


def _about_a_line() -> list[sa.Column]:
    """What a line (or a ledger item no line settled) is about, its amounts as the PSP reported them and as the
    ledger booked the item: recon_lines' and recon_cases' columns."""
    return [
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("item_key", sa.String(150), nullable=True),
        sa.Column("method", PSP, nullable=True),
        sa.Column("payment_id", sa.String(100), nullable=True),
        sa.Column("psp_reference", sa.String(200), nullable=True),
        sa.Column("line_id", sa.String(200), nullable=True),
        sa.Column("booked_on", sa.Date(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("gross_minor", sa.BigInteger(), nullable=True),
        sa.Column("fee_minor", sa.BigInteger(), nullable=True),
        sa.Column("ledger_currency", sa.String(3), nullable=True),
        sa.Column("ledger_gross_minor", sa.BigInteger(), nullable=True),
        sa.Column("ledger_fee_minor", sa.BigInteger(), nullable=True),
    ]


def upgrade() -> None:
    # Rows captured before stay NULL: reconciliation takes their created_at instead.
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("captured_at", UtcDateTime(), nullable=True))
    for table, name, columns in MOVEMENT_INDEXES:
        op.create_index(name, table, columns)

    op.create_table(
        "recon_runs",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("psp", PSP, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("as_of", UtcDateTime(), nullable=True),
        sa.Column("evaluated_at", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.String(500), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint("state IN ('running', 'completed', 'failed')", name=op.f("ck_recon_runs_state")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_recon_runs")),
    )
    op.create_index("ix_recon_runs_psp_day", "recon_runs", ["psp", "day"])
    op.create_index("ix_recon_runs_started_at_run_id", "recon_runs", ["started_at", "run_id"])

    op.create_table(
        "recon_lines",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("line_key", LINE_KEY, nullable=False),
        sa.Column("class", sa.String(20), nullable=False),
        *_about_a_line(),
        sa.Column("case_id", CASE_ID, nullable=True),
        sa.CheckConstraint(f"class IN ({CLASSES})", name=op.f("ck_recon_lines_class")),
        sa.PrimaryKeyConstraint("run_id", "line_key", name=op.f("pk_recon_lines")),
    )
    op.create_index("ix_recon_lines_kind_item_key_run_id", "recon_lines", ["kind", "item_key", "run_id"])

    op.create_table(
        "recon_settlements",
        sa.Column("psp", PSP, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("item_key", sa.String(250), nullable=False),
        sa.Column("line_id", sa.String(200), nullable=True),
        sa.Column("run_id", RUN_ID, nullable=True),
        sa.Column("case_id", CASE_ID, nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("gross_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("net_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_difference_minor", sa.BigInteger(), nullable=False),
        sa.Column("paid_out_minor", sa.BigInteger(), nullable=False),
        sa.Column("method", PSP, nullable=True),
        sa.Column("booked_on", sa.Date(), nullable=False),
        sa.Column("settled_at", UtcDateTime(), nullable=False),
        sa.Column("transfer_id", sa.String(200), nullable=False),
        sa.CheckConstraint("net_minor = gross_minor - fee_minor", name=op.f("ck_recon_settlements_net")),
        sa.CheckConstraint("paid_out_minor >= 0", name=op.f("ck_recon_settlements_paid_out_not_negative")),
        sa.PrimaryKeyConstraint("psp", "kind", "item_key", name=op.f("pk_recon_settlements")),
    )
    op.create_index("ix_recon_settlements_booked_on_psp", "recon_settlements", ["booked_on", "psp"])
    # A report line settles at most one thing, once (partial: the rows a resolution wrote without a line).
    op.create_index("uq_recon_settlements_psp_line_id", "recon_settlements", ["psp", "line_id"], unique=True,
                    postgresql_where=sa.text("line_id IS NOT NULL"), sqlite_where=sa.text("line_id IS NOT NULL"))

    op.create_table(
        "recon_cases",
        sa.Column("case_id", CASE_ID, nullable=False),
        sa.Column("psp", PSP, nullable=False),
        sa.Column("line_key", LINE_KEY, nullable=False),
        sa.Column("class", sa.String(20), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_about_a_line(),
        sa.Column("first_run_id", RUN_ID, nullable=False),
        sa.Column("last_run_id", RUN_ID, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("resolution_action", sa.String(16), nullable=True),
        sa.Column("resolution_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("resolution_rematch_with", sa.String(150), nullable=True),
        sa.Column("resolution_note", sa.String(1000), nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("resolution_transfer_ids", sa.JSON(), nullable=True),
        sa.CheckConstraint(f"class IN ({CASE_CLASSES})", name=op.f("ck_recon_cases_class")),
        sa.CheckConstraint("state IN ('open', 'resolved')", name=op.f("ck_recon_cases_state")),
        sa.CheckConstraint("resolution_action IS NULL OR resolution_action IN ('accept', 'adjust', 'write_off', "
                           "'rematch', 'auto_matched')", name=op.f("ck_recon_cases_action")),
        sa.CheckConstraint("(state = 'open') = (resolved_at IS NULL)", name=op.f("ck_recon_cases_resolved")),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_recon_cases")),
        sa.UniqueConstraint("psp", "line_key", name="uq_recon_cases_psp_line_key"),
    )
    op.create_index("ix_recon_cases_created_at_case_id", "recon_cases", ["created_at", "case_id"])
    op.create_index("ix_recon_cases_kind_item_key_state", "recon_cases", ["kind", "item_key", "state"])
    for column in ("state", "psp", "class"):
        op.create_index(f"ix_recon_cases_{column}_created_at", "recon_cases", [column, "created_at", "case_id"])


def downgrade() -> None:
    for table in ("recon_cases", "recon_settlements", "recon_lines", "recon_runs"):
        op.drop_table(table)
    for table, name, _ in MOVEMENT_INDEXES:
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("captured_at")
