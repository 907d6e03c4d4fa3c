"""Disputes (chargebacks): the PSP pulls a payment's money back at once; the house takes it from the player and,
on a loss, books it as a chargeback, or gives it back when the dispute is won.

For a dispute of D on a payment at PSP P (transfer ids `dispute:<P>:<dispute_id>:<step>`, kind `dispute_<step>`):

- opened: post `house:disputes → psp:P` D ("pulled": the PSP owes us D less); hold `player → house:chargebacks`
  H = min(player's available, D); post `house:player_receivables → house:chargebacks` S = D - H when S > 0
  ("shortfall": what the player's balance lacks, owed to the house; a balance never goes below zero).
  payments.disputed_minor += D.
- lost: post the hold; post `house:chargebacks → house:disputes` D ("chargeback"); book the PSP's chargeback fee.
  disputed_minor -= D, charged_back_minor += D.
- won: void the hold; post `psp:P → house:disputes` D ("returned": the PSP gives it back); post
  `house:chargebacks → house:player_receivables` S ("shortfall_reversal"). disputed_minor -= D.

A converted deposit's dispute (ledger/fx.py, FxReturn) takes its share from the player in the wallet currency
(hold, receivable and the margin's share, pending into house:fx; posted when lost, voided when won); its hold and
shortfall above run from (and the shortfall's reversal back to) house:fx in the payment's currency, split as the
wallet share is.

After either outcome house:disputes nets zero for the dispute, so its balance is minus the open disputes' amounts:
each dispute's money is in exactly one place (ledger/invariants.py checks it). A fee the PSP reports on a won
dispute is booked too (it kept it). Every call is idempotent on (psp, dispute_id); the same key with another
payment or amount, or another outcome once resolved, raises. Lock order: the dispute's row, then the payment's, then
the accounts in sorted-id order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import transfer_ids
from ledger.accounts import (
    chargebacks_account,
    disputes_account,
    player_account,
    player_receivables_account,
    psp_clearing_account,
)
from ledger.errors import AlreadyFinal, InvalidTransfer, RecordConflict, RecordNotFound
from ledger.fees import fee_accounts
from ledger.fx import DISPUTE as FX_DISPUTE
from ledger.fx import FxConversion, deposit_conversion_in, fx_account, plan_return, resolve_return_in, return_accounts
from ledger.models import disputes, payments
from ledger.payments import add_payment_fee, from_row
from ledger.service import Ledger, TransferRequest, check_minor_units
from payloop.db import insert_if_missing
from payloop.money import CURRENCY_EXPONENTS

OPENED, WON, LOST = "opened", "won", "lost"
LIST_LIMIT_MAX = 500


@dataclass(frozen=True, slots=True)
class DisputeRecord:
    psp: str
    dispute_id: str
    payment_id: str
    player_id: str
    currency: str
    amount_minor: int
    held_minor: int  # taken from the player's balance
    shortfall_minor: int  # owed by the player (house player receivables)
    state: str
    reason_code: str | None
    fee_minor: int | None
    opened_at: datetime
    resolved_at: datetime | None

    @property
    def key(self) -> str:
        """`<psp>:<dispute_id>`: its transfers' reference, and list_disputes' page cursor."""
        return transfer_ids.dispute_key(self.psp, self.dispute_id)


# Called last in the transaction that opened or resolved a dispute, with its record (the outbox).
DisputeHook = Callable[[AsyncConnection, "DisputeRecord"], Awaitable[None]]


class DisputeRefused(Exception):
    """The dispute names no payment of ours (`payment_not_found`) or another currency (`currency_mismatch`);
    nothing was written."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def open_dispute(
    ledger: Ledger, *, psp: str, dispute_id: str, payment_id: str, amount_minor: int, currency: str,
    reason_code: str | None, now: datetime, on_status: DisputeHook | None = None,
) -> DisputeRecord:
    """Book an opened dispute (module docstring); the stored record if it was booked with the same payment and
    amount, RecordConflict if with others."""
    check_minor_units("a dispute", amount_minor)
    if currency not in CURRENCY_EXPONENTS:
        raise InvalidTransfer(f"unsupported currency {currency!r}")
    asked = {"payment_id": payment_id, "amount_minor": amount_minor, "currency": currency}

    async def tx(conn: AsyncConnection) -> DisputeRecord:
        if (stored := await _get(conn, psp, dispute_id)) is not None:
            return _replay(stored, asked)
        payment = (await conn.execute(select(payments).where(payments.c.payment_id == payment_id))).one_or_none()
        if payment is None:
            raise DisputeRefused("payment_not_found", f"payment {payment_id} not found")
        if payment.currency != currency:
            raise DisputeRefused("currency_mismatch", f"payment {payment_id} is in {payment.currency}, not {currency}")
        claimed = await insert_if_missing(conn, disputes, {
            "psp": psp, "dispute_id": dispute_id, "payment_id": payment_id, "player_id": payment.player_id,
            "currency": currency, "amount_minor": amount_minor, "state": OPENED, "reason_code": reason_code,
            "opened_at": now,
            # Provisional (one transaction): the player holds it all unless the balance is short.
            "held_minor": amount_minor, "shortfall_minor": 0,
        })
        if not claimed:  # a concurrent call with the same key committed first
            return _replay(await _get_one(conn, psp, dispute_id), asked)
        await conn.execute(update(payments).where(payments.c.payment_id == payment_id)
                           .values(disputed_minor=payments.c.disputed_minor + amount_minor))
        dispute = await _get_one(conn, psp, dispute_id)
        conversion = await deposit_conversion_in(conn, payment_id)
        payer, receivables = (fx_account(currency), fx_account(currency)) if conversion else (
            player_account(dispute.player_id, currency), player_receivables_account(currency))
        if conversion is not None:
            returned = await plan_return(ledger, conn, conversion, operation=FX_DISPUTE, key=dispute.key,
                                         amount_minor=amount_minor, allow_shortfall=True,
                                         lock_also=_accounts(dispute, conversion))
            for leg in returned.legs():
                await ledger.hold_in(conn, leg)
            held, _ = returned.payment_split()
        else:
            balances = await ledger.lock_accounts_in(conn, _accounts(dispute, conversion))
            held = min(amount_minor, max(0, balances[payer].available))
        dispute = replace(dispute, held_minor=held, shortfall_minor=amount_minor - held)
        await ledger.post_transfer_in(conn, _move(dispute, "pulled", disputes_account(currency),
                                                  psp_clearing_account(psp, currency), amount_minor))
        if held:
            await ledger.hold_in(conn, _move(dispute, "hold", payer, chargebacks_account(currency), held))
        if dispute.shortfall_minor:
            await ledger.post_transfer_in(conn, _move(dispute, "shortfall", receivables,
                                                      chargebacks_account(currency), dispute.shortfall_minor))
            await conn.execute(update(disputes).where(*_pk(psp, dispute_id))
                               .values(held_minor=held, shortfall_minor=dispute.shortfall_minor))
        if on_status is not None:
            await on_status(conn, dispute)
        return dispute

    return await ledger.transaction(tx)


async def resolve_dispute(
    ledger: Ledger, *, psp: str, dispute_id: str, outcome: str, fee_minor: int | None, method: str | None,
    now: datetime, on_status: DisputeHook | None = None,
) -> DisputeRecord:
    """Book the dispute's outcome (module docstring). The same outcome again returns the record; another outcome
    (or another fee) of a resolved dispute raises AlreadyFinal / RecordConflict."""
    if outcome not in (WON, LOST):
        raise ValueError(f"a dispute is {WON} or {LOST}, not {outcome!r}")

    async def tx(conn: AsyncConnection) -> DisputeRecord:
        resolved = (await conn.execute(
            update(disputes).where(*_pk(psp, dispute_id), disputes.c.state == OPENED)
            .values(state=outcome, fee_minor=fee_minor, resolved_at=now).returning(*disputes.c)
        )).one_or_none()
        if resolved is None:
            stored = await _get_one(conn, psp, dispute_id)
            if stored.state != outcome:
                raise AlreadyFinal("dispute", stored.key, stored.state)
            if (stored.fee_minor or 0) != (fee_minor or 0):
                raise RecordConflict("dispute", stored.key, f"fee {stored.fee_minor}, not {fee_minor}")
            return stored
        dispute = from_row(DisputeRecord, resolved)
        amount = dispute.amount_minor
        money = {"disputed_minor": payments.c.disputed_minor - amount}
        if outcome == LOST:
            money["charged_back_minor"] = payments.c.charged_back_minor + amount
        await conn.execute(update(payments).where(payments.c.payment_id == dispute.payment_id).values(money))
        conversion = await deposit_conversion_in(conn, dispute.payment_id)
        await ledger.lock_accounts_in(conn, _accounts(dispute, conversion)
                                      + fee_accounts(psp, dispute.currency, fee_minor))
        if dispute.held_minor:
            resolve = ledger.post_hold_in if outcome == LOST else ledger.void_hold_in
            await resolve(conn, transfer_ids.dispute(psp, dispute_id, "hold"))
        for req in _resolution(dispute, conversion):
            await ledger.post_transfer_in(conn, req)
        if conversion is not None:
            await resolve_return_in(ledger, conn, FX_DISPUTE, dispute.key, post=outcome == LOST)
        await add_payment_fee(ledger, conn, dispute.payment_id, operation="chargeback", reference=dispute.key,
                              psp=psp, method=method, currency=dispute.currency, fee_minor=fee_minor, now=now)
        if on_status is not None:
            await on_status(conn, dispute)
        return dispute

    return await ledger.transaction(tx)


async def get_dispute(engine: AsyncEngine, psp: str, dispute_id: str) -> DisputeRecord | None:
    async with engine.connect() as conn:
        return await _get(conn, psp, dispute_id)


async def list_disputes(
    engine: AsyncEngine, *, state: str | None = None, limit: int = 100, before: str | None = None
) -> list[DisputeRecord]:
    """Disputes newest first (opened_at, then psp and dispute id, descending); `before` is the `key` of the last
    dispute of the previous page (RecordNotFound if unknown)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIST_LIMIT_MAX}")
    d = disputes.c
    query = select(disputes).order_by(d.opened_at.desc(), d.psp.desc(), d.dispute_id.desc()).limit(limit)
    if state is not None:
        query = query.where(d.state == state)
    async with engine.connect() as conn:
        if before is not None:
            psp, _, dispute_id = before.partition(":")  # PSP names have no ':'; dispute ids may
            cursor = (await conn.execute(select(d.opened_at).where(*_pk(psp, dispute_id)))).scalar_one_or_none()
            if cursor is None:
                raise RecordNotFound("dispute", before)
            query = query.where(tuple_(d.opened_at, d.psp, d.dispute_id) < tuple_(cursor, psp, dispute_id))
        return [from_row(DisputeRecord, row) for row in await conn.execute(query)]


# ---- helpers --------------------------------------------------------------------------------------------------


def _move(dispute: DisputeRecord, step: str, debit: str, credit: str, amount: int) -> TransferRequest:
    return TransferRequest(transfer_ids.dispute(dispute.psp, dispute.dispute_id, step), debit, credit, amount,
                           dispute.currency, f"dispute_{step}", dispute.key)


def _resolution(dispute: DisputeRecord, conversion: FxConversion | None) -> list[TransferRequest]:
    """The postings of an outcome (besides the hold's post or void). A converted deposit's shortfall came from
    house:fx (its receivable is in the wallet currency: ledger/fx.py) and goes back there."""
    currency, amount = dispute.currency, dispute.amount_minor
    receivables = fx_account(currency) if conversion else player_receivables_account(currency)
    if dispute.state == LOST:
        return [_move(dispute, "chargeback", chargebacks_account(currency), disputes_account(currency), amount)]
    returned = [_move(dispute, "returned", psp_clearing_account(dispute.psp, currency), disputes_account(currency),
                      amount)]
    if dispute.shortfall_minor:
        returned.append(_move(dispute, "shortfall_reversal", chargebacks_account(currency), receivables,
                              dispute.shortfall_minor))
    return returned


def _accounts(dispute: DisputeRecord, conversion: FxConversion | None) -> list[str]:
    currency = dispute.currency
    common = [disputes_account(currency), chargebacks_account(currency), psp_clearing_account(dispute.psp, currency)]
    if conversion is not None:
        return common + [fx_account(currency), *return_accounts(conversion)]
    return common + [player_receivables_account(currency), player_account(dispute.player_id, currency)]


def _pk(psp: str, dispute_id: str) -> tuple[Any, Any]:
    return disputes.c.psp == psp, disputes.c.dispute_id == dispute_id


def _replay(stored: DisputeRecord, asked: dict[str, Any]) -> DisputeRecord:
    differ = [name for name, value in asked.items() if getattr(stored, name) != value]
    if differ:
        raise RecordConflict("dispute", stored.key, "other " + ", ".join(differ))
    return stored


async def _get(conn: AsyncConnection, psp: str, dispute_id: str) -> DisputeRecord | None:
    row = (await conn.execute(select(disputes).where(*_pk(psp, dispute_id)))).one_or_none()
    return from_row(DisputeRecord, row) if row else None


async def _get_one(conn: AsyncConnection, psp: str, dispute_id: str) -> DisputeRecord:
    if (dispute := await _get(conn, psp, dispute_id)) is None:
        raise RecordNotFound("dispute", transfer_ids.dispute_key(psp, dispute_id))
    return dispute
