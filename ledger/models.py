"""Ledger tables (SQLAlchemy Core) on the shared `payloop.db.metadata`.

Balance convention: posted_balance = credits - debits, so the balances of one currency always sum to zero.
A transfer posted directly has resolved_at NULL; a hold gets resolved_at when it is posted or voided.

Beside the accounts and transfers, the records of money after a payment (ledger/payments.py, refunds.py,
disputes.py, fees.py): each is written in the same database transaction as the transfers it explains, so the
invariants can hold them against each other.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
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


# ---- money after a payment -------------------------------------------------------------------------------------

ID = String(100)
PSP = String(40)


def _money(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, default=0, server_default=text("0"))


# The deposits' read model (facts, upserted by the deposit workflow, newer wins) and their money record (set only by
# the ledger's functions, in the transaction that moves the money).
payments = Table(
    "payments",
    metadata,
    Column("payment_id", ID, primary_key=True),
    Column("client_id", ID, nullable=False),
    Column("player_id", String(128), nullable=False),
    Column("method", PSP, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("country", String(2), nullable=True),
    Column("status", String(20), nullable=False),
    Column("psp", PSP, nullable=True),
    Column("psp_reference", String(200), nullable=True),
    Column("failure_code", ID, nullable=True),
    Column("review_reason", ID, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    _money("captured_minor"),
    _money("credited_minor"),
    Column("credit_transfer_id", String(200), nullable=True),
    _money("refunded_minor"),  # succeeded refunds
    _money("refund_pending_minor"),  # reserved by refunds not final yet
    # Of refunded + pending: the refunds of captured money the player was never credited with (a review approved
    # less, or rejected it). Only that part of the capture is theirs; the player's refunds take the credited part.
    _money("uncredited_refunds_minor"),
    _money("disputed_minor"),  # open disputes
    _money("charged_back_minor"),  # lost disputes
    _money("fees_minor"),  # every fee booked for the payment: capture, its refunds, its chargebacks
    # When the capture was first recorded: the day reconciliation expects the PSP to settle it. NULL on rows
    # captured before the column existed: their created_at stands in.
    Column("captured_at", UtcDateTime, nullable=True),
    # The reservation of a refund is a conditional UPDATE; this is its last line of defence.
    CheckConstraint("refunded_minor + refund_pending_minor <= captured_minor", name="refunds_within_captured"),
    CheckConstraint("uncredited_refunds_minor <= captured_minor - credited_minor", name="uncredited_within_capture"),
    CheckConstraint(
        "captured_minor >= 0 AND credited_minor >= 0 AND refunded_minor >= 0 AND refund_pending_minor >= 0 "
        "AND uncredited_refunds_minor >= 0 AND disputed_minor >= 0 AND charged_back_minor >= 0 AND fees_minor >= 0",
        name="money_not_negative",
    ),
    # The ops list: newest first, overall and per filter (payment_id breaks ties, as in the keyset).
    Index("ix_payments_created_at_payment_id", "created_at", "payment_id"),
    *(
        Index(f"ix_payments_{column}_created_at", column, "created_at", "payment_id")
        for column in ("status", "player_id", "psp", "method", "review_reason")
    ),
    # Reconciliation: a PSP's captures of one day, and a report line found by the PSP's reference.
    Index("ix_payments_psp_captured_at", "psp", "captured_at"),
    Index("ix_payments_psp_reference", "psp_reference"),
    # The monitor (incidents/detection.py): the deposits that ended, or moved, within its window.
    Index("ix_payments_updated_at_status", "updated_at", "status"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", ID, primary_key=True),
    Column("payment_id", ID, nullable=False, index=True),
    Column("client_id", ID, nullable=False),
    Column("player_id", String(128), nullable=False),
    Column("psp", PSP, nullable=False),
    Column("psp_payment_reference", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("reason", String(200), nullable=True),
    Column("funding", String(16), nullable=False),
    Column("held_minor", BigInteger, nullable=False),  # the player's hold
    Column("shortfall_minor", BigInteger, nullable=False),  # the house player receivables' hold
    Column("status", String(16), nullable=False),
    Column("review_reason", ID, nullable=True),
    Column("psp_refund_reference", String(200), nullable=True),
    Column("failure_code", ID, nullable=True),
    Column("fee_minor", BigInteger, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("funding IN ('player', 'uncredited')", name="funding"),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed', 'in_review')", name="status"),
    CheckConstraint(
        "held_minor >= 0 AND shortfall_minor >= 0 AND (held_minor + shortfall_minor = amount_minor "
        "OR (funding = 'uncredited' AND held_minor = 0 AND shortfall_minor = 0))",
        name="funded",
    ),
    Index("ix_refunds_status_updated_at", "status", "updated_at"),
    # Reconciliation: a PSP's succeeded refunds of one day; a report line found by the PSP's refund reference.
    Index("ix_refunds_psp_status_updated_at", "psp", "status", "updated_at"),
    Index("ix_refunds_psp_refund_reference", "psp_refund_reference"),
)

disputes = Table(
    "disputes",
    metadata,
    Column("psp", PSP, nullable=False),
    Column("dispute_id", ID, nullable=False),
    Column("payment_id", ID, nullable=False, index=True),
    Column("player_id", String(128), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("held_minor", BigInteger, nullable=False),
    Column("shortfall_minor", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason_code", ID, nullable=True),
    Column("fee_minor", BigInteger, nullable=True),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("psp", "dispute_id"),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("held_minor >= 0 AND shortfall_minor >= 0 AND held_minor + shortfall_minor = amount_minor",
                    name="funded"),
    CheckConstraint("state IN ('opened', 'won', 'lost')", name="state"),
    Index("ix_disputes_opened_at", "opened_at", "psp", "dispute_id"),
    Index("ix_disputes_state_opened_at", "state", "opened_at", "psp", "dispute_id"),
    Index("ix_disputes_state_resolved_at", "state", "resolved_at"),
    # Reconciliation: a PSP's disputes opened / resolved on one day.
    Index("ix_disputes_psp_opened_at", "psp", "opened_at"),
    Index("ix_disputes_psp_state_resolved_at", "psp", "state", "resolved_at"),
    Index("ix_disputes_player_id", "player_id"),  # risk: a player's chargebacks
)

# Written by the withdrawal workflow at its end, for the margin report.
payouts = Table(
    "payouts",
    metadata,
    Column("payout_id", ID, primary_key=True),
    Column("client_id", ID, nullable=False),
    Column("player_id", String(128), nullable=False),
    Column("method", PSP, nullable=True),
    Column("psp", PSP, nullable=True),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("fee_minor", BigInteger, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_payouts_status_updated_at", "status", "updated_at"),
    Index("ix_payouts_psp_status_updated_at", "psp", "status", "updated_at"),  # reconciliation: paid on one day
    Index("ix_payouts_player_id_status", "player_id", "status", "created_at"),  # risk: a player's payouts
)

# One row per fee transfer, in its transaction: what the margin report sums.
psp_fees = Table(
    "psp_fees",
    metadata,
    Column("transfer_id", String(200), primary_key=True),
    Column("operation", String(16), nullable=False),
    Column("reference", String(200), nullable=False),
    Column("psp", PSP, nullable=False),
    Column("method", PSP, nullable=True),
    Column("currency", String(3), nullable=False),
    Column("fee_minor", BigInteger, nullable=False),
    Column("booked_at", UtcDateTime, nullable=False, index=True),
    CheckConstraint("operation IN ('capture', 'refund', 'payout', 'chargeback')", name="operation"),
    CheckConstraint("fee_minor > 0", name="fee_positive"),
)


# ---- reconciliation (ledger/reconciliation.py) ------------------------------------------------------------------

RECON_CLASSES = ("matched", "missing_in_ledger", "missing_at_psp", "expected", "amount_mismatch",
                 "currency_mismatch", "fee_variance", "duplicate", "status_mismatch")
CASE_CLASSES = tuple(c for c in RECON_CLASSES if c not in ("matched", "expected"))  # every other class opens a case
RUN_STATES = ("running", "completed", "failed")
CASE_STATES = ("open", "resolved")
# auto_matched: closed by reconciliation itself when a line settled what the case was about (no money moves).
CASE_ACTIONS = ("accept", "adjust", "write_off", "rematch", "auto_matched")
RUN_ID = String(200)
LINE_KEY = String(250)  # `line:<line_id>` or `ledger:<kind>:<item_key>`
CASE_ID = String(40)


def _one_of(column: str, words: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{word}'" for word in words) + ")"


def _about_a_line() -> list[Column[object]]:
    """What a report line (or a ledger item no line settled) is about: its kind, the ledger item found (None:
    none), the line's id, reference and day, its amounts as the PSP reported them and as the ledger booked the
    item."""
    return [
        Column("kind", String(20), nullable=False),
        Column("item_key", String(150), nullable=True),
        Column("method", PSP, nullable=True),
        Column("payment_id", ID, nullable=True),  # the deposit it is about (a refund's or a dispute's payment)
        Column("psp_reference", String(200), nullable=True),
        Column("line_id", String(200), nullable=True),  # None for a ledger item no line settled
        Column("booked_on", Date, nullable=True),
        Column("currency", String(3), nullable=True),  # as reported
        Column("gross_minor", BigInteger, nullable=True),
        Column("fee_minor", BigInteger, nullable=True),
        Column("ledger_currency", String(3), nullable=True),  # as booked
        Column("ledger_gross_minor", BigInteger, nullable=True),
        Column("ledger_fee_minor", BigInteger, nullable=True),
    ]


# One run per (PSP, day, as-of): its evaluation moment frozen, its counts and sums per class once closed.
recon_runs = Table(
    "recon_runs",
    metadata,
    Column("run_id", RUN_ID, primary_key=True),
    Column("psp", PSP, nullable=False),
    Column("day", Date, nullable=False),
    Column("as_of", UtcDateTime, nullable=True),
    Column("evaluated_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("failure_reason", String(500), nullable=True),
    Column("counts", JSON, nullable=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    CheckConstraint(_one_of("state", RUN_STATES), name="state"),
    Index("ix_recon_runs_psp_day", "psp", "day"),
    Index("ix_recon_runs_started_at_run_id", "started_at", "run_id"),
)

# Every report line of a run and every ledger item of its day the run classified: exactly one class each.
recon_lines = Table(
    "recon_lines",
    metadata,
    Column("run_id", RUN_ID, nullable=False),
    Column("line_key", LINE_KEY, nullable=False),
    Column("class", String(20), nullable=False),
    *_about_a_line(),
    Column("case_id", CASE_ID, nullable=True),
    PrimaryKeyConstraint("run_id", "line_key"),
    CheckConstraint(_one_of("class", RECON_CLASSES), name="class"),
    # An item named by a line (of this run or another): close_run leaves it to that line.
    Index("ix_recon_lines_kind_item_key_run_id", "kind", "item_key", "run_id"),
)

# Which line settled each ledger item: the primary key makes a second line for the same item a duplicate, even
# under concurrent runs. Its money moved by transfer_id (and transfer_id + ':fee_difference' / ':paid_out').
recon_settlements = Table(
    "recon_settlements",
    metadata,
    Column("psp", PSP, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("item_key", String(250), nullable=False),
    Column("line_id", String(200), nullable=True),  # None: settled by a case's resolution without a line
    Column("run_id", RUN_ID, nullable=True),
    Column("case_id", CASE_ID, nullable=True),
    Column("currency", String(3), nullable=False),
    Column("gross_minor", BigInteger, nullable=False),
    Column("fee_minor", BigInteger, nullable=False),
    Column("net_minor", BigInteger, nullable=False),
    Column("fee_difference_minor", BigInteger, nullable=False),
    Column("paid_out_minor", BigInteger, nullable=False),
    Column("method", PSP, nullable=True),
    Column("booked_on", Date, nullable=False),
    Column("settled_at", UtcDateTime, nullable=False),
    Column("transfer_id", String(200), nullable=False),
    PrimaryKeyConstraint("psp", "kind", "item_key"),
    CheckConstraint("net_minor = gross_minor - fee_minor", name="net"),
    CheckConstraint("paid_out_minor >= 0", name="paid_out_not_negative"),
    Index("ix_recon_settlements_booked_on_psp", "booked_on", "psp"),
    # A report line settles at most one thing, once: whether under its item (a match, a rematch, a resolution) or
    # under its own key `line:<line_id>` (a resolution of a line without an item it may settle).
    Index("uq_recon_settlements_psp_line_id", "psp", "line_id", unique=True,
          postgresql_where=text("line_id IS NOT NULL"), sqlite_where=text("line_id IS NOT NULL")),
)

recon_cases = Table(
    "recon_cases",
    metadata,
    Column("case_id", CASE_ID, primary_key=True),
    Column("psp", PSP, nullable=False),
    Column("line_key", LINE_KEY, nullable=False),
    Column("class", String(20), nullable=False),
    Column("state", String(16), nullable=False),
    Column("day", Date, nullable=False),
    *_about_a_line(),
    Column("first_run_id", RUN_ID, nullable=False),
    Column("last_run_id", RUN_ID, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("resolution_action", String(16), nullable=True),
    Column("resolution_amount_minor", BigInteger, nullable=True),
    Column("resolution_rematch_with", String(150), nullable=True),
    Column("resolution_note", String(1000), nullable=True),
    Column("resolved_by", String(128), nullable=True),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("resolution_transfer_ids", JSON, nullable=True),
    UniqueConstraint("psp", "line_key", name="uq_recon_cases_psp_line_key"),
    CheckConstraint(_one_of("class", CASE_CLASSES), name="class"),
    CheckConstraint(_one_of("state", CASE_STATES), name="state"),
    CheckConstraint("resolution_action IS NULL OR " + _one_of("resolution_action", CASE_ACTIONS), name="action"),
    CheckConstraint("(state = 'open') = (resolved_at IS NULL)", name="resolved"),
    # The ops list: newest first, overall and per filter (case_id breaks ties, as in the keyset).
    Index("ix_recon_cases_created_at_case_id", "created_at", "case_id"),
    # The open case of a line about an item: closing a run leaves that item to it.
    Index("ix_recon_cases_kind_item_key_state", "kind", "item_key", "state"),
    *(Index(f"ix_recon_cases_{column}_created_at", column, "created_at", "case_id")
      for column in ("state", "psp", "class")),
)
