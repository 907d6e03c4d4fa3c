"""Deposits as records: the facts the deposit workflow reports, and the money the ledger moved on them.

A `payments` row holds both. The facts (status, PSP, review reason, …) are upserted by `record_payment`, newer
`updated_at` wins; the money columns are written only here, in refunds.py and in disputes.py, each in the database
transaction that moves the money they describe, and never bump `updated_at` (the facts' clock):

- captured_minor: what the PSP captured (captured_at: when first recorded, the day reconciliation expects it
  settled); credited_minor: what of it went to the player (`deposit:<id>:credit`, PSP clearing → player), once;
  credit_transfer_id that transfer;
- refunded_minor / refund_pending_minor: succeeded refunds / refunds reserved and not final yet;
- disputed_minor / charged_back_minor: open disputes / lost ones; fees_minor: every fee booked for the payment.

The PSP a payment's money was captured at is fixed from the capture on (`record_payment` keeps it): refunds reserve
against that PSP's capture.

`list_payments` is the ops list: newest first, one filter at a time or none, keyset pages; every filter has an index
that ends in (created_at, payment_id), so a page is an index range scan whatever the table's size — but the PSP
reference's, which names one payment (or the few a PSP reused it for) and is found through its own index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, case, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import transfer_ids
from ledger.accounts import player_account, psp_clearing_account
from ledger.errors import CaptureConflict, InvalidTransfer, PaymentNotFound
from ledger.fees import book_fee_transfer, fee_accounts
from ledger.fx import FxConversion, deposit_legs, fx_account, leg_accounts, record_conversion
from ledger.models import payments
from ledger.service import Ledger, TransferRequest, check_minor_units
from payloop.db import upsert_newer

DEPOSIT = "deposit"  # the credit's transfer kind (the invariants count posted ones per payment)
LIST_LIMIT_MAX = 500
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A deposit's facts as the deposit workflow knows them (datetimes tz-aware UTC)."""

    payment_id: str
    client_id: str
    player_id: str
    method: str
    currency: str
    amount_minor: int
    status: str
    created_at: datetime
    updated_at: datetime
    psp: str | None = None
    psp_reference: str | None = None
    country: str | None = None
    failure_code: str | None = None
    review_reason: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentMoney:
    captured_minor: int
    credited_minor: int
    credit_transfer_id: str | None
    refunded_minor: int
    refund_pending_minor: int
    disputed_minor: int
    charged_back_minor: int
    fees_minor: int
    uncredited_refunds_minor: int = 0  # of refunded + pending: refunds of the capture's uncredited part

    @property
    def refundable_minor(self) -> int:
        """What a refund from the player's wallet may still reserve: of the capture less refunded, reserved,
        disputed and charged back, at most the credited part not yet refunded (the rest was never the player's)."""
        taken = self.refunded_minor + self.refund_pending_minor + self.disputed_minor + self.charged_back_minor
        by_player = taken - self.uncredited_refunds_minor
        return max(0, min(self.captured_minor - taken, self.credited_minor - by_player))


@dataclass(frozen=True, slots=True)
class PaymentRow:
    """A row of the ops list: the payment's facts and its money."""

    facts: PaymentRecord
    money: PaymentMoney


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    """At most one of the equality filters is what the list's indexes serve; the created_* range combines with
    any (from inclusive, to exclusive)."""

    status: str | None = None
    player_id: str | None = None
    psp: str | None = None
    method: str | None = None
    review_reason: str | None = None
    psp_reference: str | None = None  # the PSP's own reference: one payment, or a handful (by its own index)
    created_from: datetime | None = None
    created_to: datetime | None = None


_EQUALITY_FILTERS = ("status", "player_id", "psp", "method", "review_reason", "psp_reference")
# Called last in the transaction that wrote a payment's facts, when the row holds their status (the outbox).
PaymentHook = Callable[[AsyncConnection, PaymentRecord], Awaitable[None]]


async def record_payment(engine: AsyncEngine, record: PaymentRecord, *, on_status: PaymentHook | None = None
                         ) -> None:
    """Upsert the payment's facts (never its money); a write older than the stored one changes nothing."""
    async with engine.begin() as conn:
        await _upsert_facts(conn, record)
        await _status_written(conn, record, on_status)


async def _status_written(conn: AsyncConnection, record: PaymentRecord, on_status: PaymentHook | None) -> None:
    """`on_status(conn, record)` unless a newer write holds another status (then this one changed nothing)."""
    if on_status is None:
        return
    stored = (await conn.execute(select(payments.c.status)
                                 .where(payments.c.payment_id == record.payment_id))).scalar_one()
    if stored == record.status:
        await on_status(conn, record)


async def _upsert_facts(conn: AsyncConnection, record: PaymentRecord) -> None:
    await upsert_newer(conn, payments, asdict(record), clock="updated_at", overrides=lambda offered: {
        # The capture's PSP (and its reference, once known) stays: refunds reserve against it, whatever a late
        # fact says.
        name: case((and_(payments.c.captured_minor > 0, payments.c[name].is_not(None)), payments.c[name]),
                   else_=offered[name])
        for name in ("psp", "psp_reference")
    })


async def payment_facts(engine: AsyncEngine, payment_id: str) -> PaymentRecord | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(payments).where(payments.c.payment_id == payment_id))).one_or_none()
    return from_row(PaymentRecord, row) if row else None


async def payment_money(engine: AsyncEngine, payment_id: str) -> PaymentMoney | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(payments).where(payments.c.payment_id == payment_id))).one_or_none()
    return from_row(PaymentMoney, row) if row else None


async def credit_deposit(
    ledger: Ledger, *, payment_id: str, player_id: str, psp: str, method: str, currency: str, captured_minor: int,
    credit_minor: int, fee_minor: int | None, now: datetime, facts: PaymentRecord | None = None,
    conversion: FxConversion | None = None,
    on_status: PaymentHook | None = None,
) -> str | None:
    """Record the capture, credit `credit_minor` of it to the player and book the capture fee: one transaction.

    Returns the credit's transfer id (None when nothing is credited). Idempotent: the same call again moves nothing
    and returns the same id; other amounts (or another PSP) for a recorded capture are a CaptureConflict. The
    payment must have been recorded (PaymentNotFound) — or its `facts` are given, and recorded in the same
    transaction (one write where a deposit's credit is also its first row), and `on_status` with them, last.

    With a `conversion` (a deposit in another currency than the player's wallet, ledger/fx.py) the credit goes
    into house:fx:<currency> and the conversion's wallet-currency legs and row are booked in the same transaction.
    """
    _check_capture(captured_minor, credit_minor)
    if conversion is not None and (conversion.reference, conversion.from_minor, conversion.from_currency) != (
            payment_id, credit_minor, currency):
        raise InvalidTransfer(f"the conversion of {conversion.reference} is not of this credit")
    credit = TransferRequest(
        id=transfer_ids.deposit_credit(payment_id),
        debit_account=psp_clearing_account(psp, currency),
        credit_account=fx_account(currency) if conversion else player_account(player_id, currency),
        amount=credit_minor,
        currency=currency,
        kind=DEPOSIT,
        reference=payment_id,
    ) if credit_minor else None

    async def tx(conn: AsyncConnection) -> str | None:
        if facts is not None:
            await _upsert_facts(conn, facts)
        await _record_capture(conn, payment_id, psp=psp, currency=currency, player_id=player_id,
                              captured_minor=captured_minor, credit=credit, now=now)
        credit_accounts = [credit.debit_account, credit.credit_account] if credit else []
        fx_legs = deposit_legs(conversion) if conversion and credit else []
        await ledger.lock_accounts_in(conn, credit_accounts + leg_accounts(fx_legs)
                                      + fee_accounts(psp, currency, fee_minor))
        if credit:
            await ledger.post_transfer_in(conn, credit)
        if conversion and credit:
            await ledger.post_transfers_in(conn, fx_legs)
            await record_conversion(conn, conversion, now)
        await add_payment_fee(ledger, conn, payment_id, operation="capture", reference=payment_id, psp=psp,
                              method=method, currency=currency, fee_minor=fee_minor, now=now)
        if facts is not None:
            await _status_written(conn, facts, on_status)
        return credit.id if credit else None

    return await ledger.transaction(tx)


async def record_uncredited_capture(
    ledger: Ledger, *, payment_id: str, psp: str, method: str, currency: str, captured_minor: int,
    fee_minor: int | None, now: datetime,
) -> None:
    """A capture that credits nothing (ops rejected the deposit; the money goes back as an 'uncredited' refund):
    record it and book its fee. Idempotent like credit_deposit."""
    _check_capture(captured_minor, 0)

    async def tx(conn: AsyncConnection) -> None:
        await _record_capture(conn, payment_id, psp=psp, currency=currency, player_id=None,
                              captured_minor=captured_minor, credit=None, now=now)
        await ledger.lock_accounts_in(conn, fee_accounts(psp, currency, fee_minor))
        await add_payment_fee(ledger, conn, payment_id, operation="capture", reference=payment_id, psp=psp,
                              method=method, currency=currency, fee_minor=fee_minor, now=now)

    await ledger.transaction(tx)


async def add_payment_fee(
    ledger: Ledger, conn: AsyncConnection, payment_id: str, *, operation: str, reference: str, psp: str,
    method: str | None, currency: str, fee_minor: int | None, now: datetime,
) -> None:
    """Book a fee of the payment's (capture, refund, chargeback) and count it in its fees_minor, once."""
    transfer = await book_fee_transfer(ledger, conn, operation=operation, reference=reference, psp=psp,
                                       method=method, currency=currency, fee_minor=fee_minor, now=now)
    if transfer is not None and not transfer.replayed:
        await conn.execute(update(payments).where(payments.c.payment_id == payment_id)
                           .values(fees_minor=payments.c.fees_minor + transfer.amount))


async def list_payments(
    engine: AsyncEngine, filter: PaymentFilter, *, limit: int = 50, before: str | None = None
) -> list[PaymentRow]:
    """Payments newest first (created_at, then payment_id, descending); `before` is the last payment id of the
    previous page (PaymentNotFound if unknown)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIST_LIMIT_MAX}")
    query = select(payments).order_by(payments.c.created_at.desc(), payments.c.payment_id.desc()).limit(limit)
    for name in _EQUALITY_FILTERS:
        if (value := getattr(filter, name)) is not None:
            query = query.where(payments.c[name] == value)
    if filter.created_from is not None:
        query = query.where(payments.c.created_at >= filter.created_from)
    if filter.created_to is not None:
        query = query.where(payments.c.created_at < filter.created_to)
    async with engine.connect() as conn:
        if before is not None:
            cursor = (await conn.execute(
                select(payments.c.created_at).where(payments.c.payment_id == before))).scalar_one_or_none()
            if cursor is None:
                raise PaymentNotFound(before)
            query = query.where(tuple_(payments.c.created_at, payments.c.payment_id) < tuple_(cursor, before))
        return [PaymentRow(from_row(PaymentRecord, row), from_row(PaymentMoney, row))
                for row in await conn.execute(query)]


# ---- helpers --------------------------------------------------------------------------------------------------


def _check_capture(captured_minor: int, credit_minor: int) -> None:
    check_minor_units("a capture", captured_minor)
    check_minor_units("a credit", credit_minor, lowest=0)
    if credit_minor > captured_minor:
        raise InvalidTransfer(f"credit {credit_minor} exceeds the captured {captured_minor}")


async def _record_capture(
    conn: AsyncConnection, payment_id: str, *, psp: str, currency: str, player_id: str | None,
    captured_minor: int, credit: TransferRequest | None, now: datetime,
) -> None:
    """Set the capture's money on the payment row (locking it), unless another capture was recorded there. The
    first recording sets captured_at (the day reconciliation expects the PSP to settle it); a replay keeps it."""
    credited_minor = credit.amount if credit else 0
    conditions = [
        payments.c.payment_id == payment_id,
        payments.c.currency == currency,
        payments.c.captured_minor.in_((0, captured_minor)),
        payments.c.credited_minor.in_((0, credited_minor)),
        or_(payments.c.captured_minor == 0, payments.c.psp == psp),
    ]
    if player_id is not None:
        conditions.append(payments.c.player_id == player_id)
    result = await conn.execute(update(payments).where(*conditions).values(
        captured_minor=captured_minor, credited_minor=credited_minor, psp=psp,
        credit_transfer_id=credit.id if credit else payments.c.credit_transfer_id,
        captured_at=case((payments.c.captured_minor == 0, now), else_=payments.c.captured_at),
    ))
    if result.rowcount == 1:
        return
    row = (await conn.execute(select(payments).where(payments.c.payment_id == payment_id))).one_or_none()
    if row is None:
        raise PaymentNotFound(payment_id)
    raise CaptureConflict(payment_id, (
        f"recorded {row.currency} of player {row.player_id}, captured {row.captured_minor} at {row.psp}, "
        f"credited {row.credited_minor}; asked {currency} of player {player_id}, captured {captured_minor} at "
        f"{psp}, credited {credited_minor}"))


def from_row(cls: type[R], row: Any) -> R:
    """A dataclass of the same-named columns of a row (or of another dataclass)."""
    get = row._mapping.__getitem__ if hasattr(row, "_mapping") else lambda name: getattr(row, name)
    return cls(**{f.name: get(f.name) for f in fields(cls)})
