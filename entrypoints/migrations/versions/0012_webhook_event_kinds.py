"""The webhook inbox keeps what an event is about (payment, payout, refund, dispute), the PSP's reported fee, and a
dispute's id and reason code.

Revision ID: 0012_webhook_event_kinds
Revises: 0011_money_after_payment
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_webhook_event_kinds"
down_revision: str | None = "0011_money_after_payment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_events", sa.Column("kind", sa.String(10), nullable=False, server_default="payment"))
    op.add_column("webhook_events", sa.Column("fee_minor", sa.BigInteger(), nullable=True))
    op.add_column("webhook_events", sa.Column("dispute_id", sa.String(200), nullable=True))
    op.add_column("webhook_events", sa.Column("reason_code", sa.String(50), nullable=True))
    # Events stored before were about payments or payouts; our payout ids are `po_…` (api/routes/payouts.py).
    events = sa.table("webhook_events", sa.column("payment_id", sa.String), sa.column("kind", sa.String))
    op.execute(events.update().where(events.c.payment_id.like("po\\_%", escape="\\")).values(kind="payout"))


def downgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("reason_code")
        batch.drop_column("dispute_id")
        batch.drop_column("fee_minor")
        batch.drop_column("kind")
