"""Refunds: a captured payment's money sent back through its PSP, reserved first, moved only on the PSP's word.

`request_refund` does three things in one transaction, or nothing:

1. Reserve the amount on the payment: `refund_pending_minor += amount` as one conditional UPDATE, which only
   matches while captured - refunded - pending - disputed - charged back covers the amount (and, for a refund the
   player funds, while something was credited). Concurrent requests queue on the payment's row; the loser finds
   nothing left and is refused.
2. Hold the money, by funding:
   - 'player': the player gives back what they were credited. A hold `player → psp:<psp>` (pending) for what the
     player has available; with `allow_shortfall`, a second hold `house:player_receivables → psp:<psp>` for what
     the balance lacks (the player then owes it to the house). Without it, a short balance is InsufficientFunds.
     A deposit converted into the wallet's currency is given back at its locked rate (ledger/fx.py, FxReturn):
     the holds are in the wallet currency into house:fx (with the margin's share), and the refund's own holds
     (same ids, split as the wallet share is) run from house:fx in the payment's currency.
   - 'uncredited': money the player never got (a deposit rejected in review after capture, the part of a capture
     ops did not approve, a stray capture at a PSP the deposit failed over from). Nothing to hold; only the
     refund's fee will be booked. A stray capture at another PSP than the payment's was never part of its
     captured_minor, so such a refund (another `psp`, funding 'uncredited') reserves nothing on the payment.
3. Write the `refunds` row (status 'pending').

`settle_refund` applies the PSP's final word: 'succeeded' posts the hold(s) (the PSP clearing account, which owes
us, drops by the refund), moves the reservation to refunded_minor and books the refund's fee; 'failed' voids the
hold(s) and releases the reservation (a fee the PSP reports on a failed refund is booked too: it kept it). A refund
whose outcome is unknown is put `in_review` with its money kept where it is.

Every call is idempotent on the refund id; the same id with other parameters, or another final outcome, raises.
Lock order, as in disputes.py: the refund's row, then the payment's, then the accounts in sorted-id order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import transfer_ids
from ledger.accounts import player_account, player_receivables_account, psp_clearing_account
from ledger.errors import AlreadyFinal, InvalidTransfer, RecordConflict, RecordNotFound
from ledger.fees import fee_accounts
from ledger.fx import REFUND as FX_REFUND
from ledger.fx import FxConversion, deposit_conversion_in, fx_account, plan_return, resolve_return_in, return_accounts
from ledger.models import payments, refunds
from ledger.payments import PaymentMoney, add_payment_fee, from_row
from ledger.service import Ledger, TransferRequest, check_minor_units
from payloop.db import insert_if_missing
from payloop.money import CURRENCY_EXPONENTS

PLAYER_FUNDED = "player"
UNCREDITED = "uncredited"
PENDING, SUCCEEDED, FAILED, IN_REVIEW = "pending", "succeeded", "failed", "in_review"
OPEN = (PENDING, IN_REVIEW)
HOLD_KIND, SHORTFALL_KIND = "refund", "refund_shortfall"  # the holds' transfer kinds (reference: the refund id)


@dataclass(frozen=True, slots=True)
class RefundRecord:
    refund_id: str
    payment_id: str
    client_id: str
    player_id: str
    psp: str
    psp_payment_reference: str
    currency: str
    amount_minor: int
    reason: str | None
    funding: str
    held_minor: int
    shortfall_minor: int
    status: str
    review_reason: str | None
    psp_refund_reference: str | None
    failure_code: str | None
    fee_minor: int | None
    created_at: datetime
    updated_at: datetime


# Called last in the transaction that changed a refund's status, with the changed record (the outbox).
RefundHook = Callable[[AsyncConnection, "RefundRecord"], Awaitable[None]]


class RefundRefused(Exception):
    """The refund cannot be made; nothing was written. `code`: payment_not_found, payment_not_refundable (nothing
    captured, or for a player-funded refund nothing credited), refund_exceeds_refundable, currency_mismatch."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def request_refund(
    ledger: Ledger, *, refund_id: str, payment_id: str, client_id: str, amount_minor: int, currency: str,
    reason: str | None, funding: str, allow_shortfall: bool, now: datetime, psp: str | None = None,
    psp_payment_reference: str | None = None,
) -> RefundRecord:
    """Reserve, hold and record a refund (module docstring); the stored record if `refund_id` exists with the same
    parameters, RecordConflict if with others. RefundRefused or InsufficientFunds leave nothing behind."""
    _check_request(amount_minor, currency, funding)
    asked = {"payment_id": payment_id, "client_id": client_id, "amount_minor": amount_minor, "currency": currency,
             "reason": reason, "funding": funding, "psp": psp, "psp_payment_reference": psp_payment_reference}

    async def tx(conn: AsyncConnection) -> RefundRecord:
        if (stored := await _get(conn, refund_id)) is not None:
            return _replay(stored, asked)
        payment = (await conn.execute(select(payments).where(payments.c.payment_id == payment_id))).one_or_none()
        row = _new_row(refund_id, asked, payment, now)
        # Claim the id first: a concurrent request with the same id waits here, then replays.
        if not await insert_if_missing(conn, refunds, row):
            return _replay(await _get_one(conn, refund_id), asked)
        if _reserves(row, payment):
            await _reserve(conn, payment_id, amount_minor, funding)
        if funding == PLAYER_FUNDED:
            held, shortfall = await _hold(ledger, conn, row, allow_shortfall)
            if shortfall:
                await conn.execute(update(refunds).where(refunds.c.refund_id == refund_id)
                                   .values(held_minor=held, shortfall_minor=shortfall))
        return await _get_one(conn, refund_id)

    return await ledger.transaction(tx)


async def settle_refund(
    ledger: Ledger, refund_id: str, *, outcome: str, psp_refund_reference: str | None, failure_code: str | None,
    fee_minor: int | None, method: str | None, now: datetime, on_status: RefundHook | None = None,
) -> RefundRecord:
    """The PSP's final word on a pending or in-review refund (module docstring). The same outcome again returns the
    record; another outcome, or another fee, of a final refund raises AlreadyFinal / RecordConflict."""
    if outcome not in (SUCCEEDED, FAILED):
        raise ValueError(f"a refund settles as {SUCCEEDED} or {FAILED}, not {outcome!r}")

    async def tx(conn: AsyncConnection) -> RefundRecord:
        settled = (await conn.execute(
            update(refunds)
            .where(refunds.c.refund_id == refund_id, refunds.c.status.in_(OPEN))
            .values(status=outcome, psp_refund_reference=psp_refund_reference, failure_code=failure_code,
                    fee_minor=fee_minor, updated_at=now)
            .returning(*refunds.c)
        )).one_or_none()
        if settled is None:
            stored = await _get_one(conn, refund_id)
            if stored.status != outcome:
                raise AlreadyFinal("refund", refund_id, stored.status)
            if (stored.fee_minor or 0) != (fee_minor or 0):
                raise RecordConflict("refund", refund_id, f"fee {stored.fee_minor}, not {fee_minor}")
            return stored
        refund = from_row(RefundRecord, settled)
        await _release(conn, refund, succeeded=outcome == SUCCEEDED)
        conversion = await deposit_conversion_in(conn, refund.payment_id) if refund.funding == PLAYER_FUNDED \
            else None
        await ledger.lock_accounts_in(conn, _hold_accounts(refund, conversion)
                                      + fee_accounts(refund.psp, refund.currency, fee_minor))
        resolve = ledger.post_hold_in if outcome == SUCCEEDED else ledger.void_hold_in
        for transfer_id, amount in _holds(refund):
            if amount:
                await resolve(conn, transfer_id)
        if conversion is not None:
            await resolve_return_in(ledger, conn, FX_REFUND, refund_id, post=outcome == SUCCEEDED)
        await add_payment_fee(ledger, conn, refund.payment_id, operation="refund", reference=refund_id,
                              psp=refund.psp, method=method, currency=refund.currency, fee_minor=fee_minor, now=now)
        if on_status is not None:
            await on_status(conn, refund)
        return refund

    return await ledger.transaction(tx)


async def mark_refund_in_review(ledger: Ledger, refund_id: str, *, review_reason: str, now: datetime,
                                on_status: RefundHook | None = None) -> RefundRecord:
    """The PSP's outcome is unknown: a person decides; the money stays held and reserved. Idempotent; a final
    refund raises AlreadyFinal."""

    async def tx(conn: AsyncConnection) -> RefundRecord:
        marked = (await conn.execute(
            update(refunds)
            .where(refunds.c.refund_id == refund_id, refunds.c.status == PENDING)
            .values(status=IN_REVIEW, review_reason=review_reason, updated_at=now)
            .returning(*refunds.c)
        )).one_or_none()
        if marked is not None:
            refund = from_row(RefundRecord, marked)
            if on_status is not None:
                await on_status(conn, refund)
            return refund
        stored = await _get_one(conn, refund_id)
        if stored.status != IN_REVIEW:
            raise AlreadyFinal("refund", refund_id, stored.status)
        return stored

    return await ledger.transaction(tx)


async def get_refund(engine: AsyncEngine, refund_id: str) -> RefundRecord | None:
    async with engine.connect() as conn:
        return await _get(conn, refund_id)


async def payment_refunds(engine: AsyncEngine, payment_id: str) -> list[RefundRecord]:
    """The payment's refunds, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(refunds).where(refunds.c.payment_id == payment_id)
                                  .order_by(refunds.c.created_at, refunds.c.refund_id))
        return [from_row(RefundRecord, row) for row in rows]


# ---- helpers --------------------------------------------------------------------------------------------------


def _check_request(amount_minor: int, currency: str, funding: str) -> None:
    check_minor_units("a refund", amount_minor)
    if currency not in CURRENCY_EXPONENTS:
        raise InvalidTransfer(f"unsupported currency {currency!r}")
    if funding not in (PLAYER_FUNDED, UNCREDITED):
        raise InvalidTransfer(f"funding is {PLAYER_FUNDED!r} or {UNCREDITED!r}, not {funding!r}")


def _new_row(refund_id: str, asked: dict[str, Any], payment: Any, now: datetime) -> dict[str, Any]:
    """The refunds row to claim, from the request and its payment; RefundRefused when there is nothing to refund."""
    if payment is None:
        raise RefundRefused("payment_not_found", f"payment {asked['payment_id']} not found")
    # A capture outside the payment's own (a stray one at another PSP, or one in another currency than asked) is
    # refunded by naming it; only uncredited money can be such a capture.
    outside = asked["funding"] == UNCREDITED and asked["psp_payment_reference"] is not None and (
        (asked["psp"] or payment.psp) != payment.psp or asked["currency"] != payment.currency)
    if payment.currency != asked["currency"] and not outside:
        raise RefundRefused("currency_mismatch",
                            f"payment {payment.payment_id} is in {payment.currency}, not {asked['currency']}")
    psp = asked["psp"] or payment.psp
    reference = asked["psp_payment_reference"] or (payment.psp_reference if psp == payment.psp else None)
    if psp is None or reference is None:
        raise RefundRefused("payment_not_refundable", f"payment {payment.payment_id} has no capture at a PSP")
    if psp != payment.psp and asked["funding"] != UNCREDITED:
        raise InvalidTransfer(f"a refund at {psp}, not the payment's PSP {payment.psp}, refunds a stray capture: "
                              "its funding is 'uncredited'")
    return {
        "refund_id": refund_id, "payment_id": payment.payment_id, "client_id": asked["client_id"],
        "player_id": payment.player_id, "psp": psp, "psp_payment_reference": reference,
        "currency": asked["currency"], "amount_minor": asked["amount_minor"], "reason": asked["reason"],
        "funding": asked["funding"], "status": PENDING, "created_at": now, "updated_at": now,
        # Provisional (one transaction): the player holds it all unless a shortfall is allowed and needed.
        "held_minor": asked["amount_minor"] if asked["funding"] == PLAYER_FUNDED else 0, "shortfall_minor": 0,
    }


def _reserves(refund: Any, payment: Any) -> bool:
    """Only a refund of the payment's own capture (its PSP and currency) reserves on the payment row."""
    return refund["psp"] == payment.psp and refund["currency"] == payment.currency


async def _reserve(conn: AsyncConnection, payment_id: str, amount_minor: int, funding: str) -> None:
    """One conditional UPDATE: the database decides between concurrent refunds. The player's refunds take the
    credited part of the capture, uncredited ones the rest."""
    p = payments.c
    taken = p.refunded_minor + p.refund_pending_minor + p.disputed_minor + p.charged_back_minor
    conditions = [p.payment_id == payment_id, p.captured_minor - taken >= amount_minor]
    values = {"refund_pending_minor": p.refund_pending_minor + amount_minor}
    if funding == PLAYER_FUNDED:
        conditions += [p.credited_minor > 0, p.credited_minor - (taken - p.uncredited_refunds_minor) >= amount_minor]
    else:
        conditions.append(p.captured_minor - p.credited_minor - p.uncredited_refunds_minor >= amount_minor)
        values["uncredited_refunds_minor"] = p.uncredited_refunds_minor + amount_minor
    reserved = await conn.execute(update(payments).where(*conditions).values(values))
    if reserved.rowcount == 1:
        return
    row = (await conn.execute(select(payments).where(p.payment_id == payment_id))).one()
    if row.captured_minor == 0 or (funding == PLAYER_FUNDED and row.credited_minor == 0):
        raise RefundRefused("payment_not_refundable",
                            f"payment {payment_id} has nothing {'credited' if row.captured_minor else 'captured'}")
    money = from_row(PaymentMoney, row)
    refundable = money.refundable_minor if funding == PLAYER_FUNDED else max(
        0, money.captured_minor - money.credited_minor - money.uncredited_refunds_minor)
    raise RefundRefused("refund_exceeds_refundable",
                        f"payment {payment_id}: {amount_minor} asked, {refundable} refundable")


async def _hold(ledger: Ledger, conn: AsyncConnection, row: dict[str, Any], allow_shortfall: bool) -> tuple[int, int]:
    """Hold the player's part (all of it, or what is available when a shortfall is allowed) and the shortfall."""
    if (conversion := await deposit_conversion_in(conn, row["payment_id"])) is not None:
        return await _hold_converted(ledger, conn, row, conversion, allow_shortfall)
    player = player_account(row["player_id"], row["currency"])
    receivables = player_receivables_account(row["currency"])
    clearing = psp_clearing_account(row["psp"], row["currency"])
    balances = await ledger.lock_accounts_in(conn, [player, clearing] + ([receivables] if allow_shortfall else []))
    amount = row["amount_minor"]
    held = min(amount, max(0, balances[player].available)) if allow_shortfall else amount
    await _hold_payment_side(ledger, conn, row, (player, held), (receivables, amount - held))
    return held, amount - held


async def _hold_converted(ledger: Ledger, conn: AsyncConnection, row: dict[str, Any], conversion: FxConversion,
                          allow_shortfall: bool) -> tuple[int, int]:
    """A converted deposit's refund (ledger/fx.py): the player gives back the credit's share in the wallet
    currency, the refund's own holds are paid out of house:fx in the payment's, split as the wallet share is."""
    position = fx_account(row["currency"])
    returned = await plan_return(ledger, conn, conversion, operation=FX_REFUND, key=row["refund_id"],
                                 amount_minor=row["amount_minor"], allow_shortfall=allow_shortfall,
                                 lock_also=[position, psp_clearing_account(row["psp"], row["currency"])])
    for leg in returned.legs():
        await ledger.hold_in(conn, leg)
    held, shortfall = returned.payment_split()
    await _hold_payment_side(ledger, conn, row, (position, held), (position, shortfall))
    return held, shortfall


async def _hold_payment_side(ledger: Ledger, conn: AsyncConnection, row: dict[str, Any], held: tuple[str, int],
                             shortfall: tuple[str, int]) -> None:
    """The refund's holds → PSP clearing: (debit account, amount) of its held part and of its shortfall."""
    clearing = psp_clearing_account(row["psp"], row["currency"])
    for transfer_id, (debit, value), kind in (
        (transfer_ids.refund_hold(row["refund_id"]), held, HOLD_KIND),
        (transfer_ids.refund_shortfall(row["refund_id"]), shortfall, SHORTFALL_KIND),
    ):
        if value:
            await ledger.hold_in(conn, TransferRequest(transfer_id, debit, clearing, value, row["currency"], kind,
                                                       row["refund_id"]))


async def _release(conn: AsyncConnection, refund: RefundRecord, *, succeeded: bool) -> None:
    """Release the reservation (into refunded_minor on success); only a refund of the payment's own capture
    reserved (see _reserves)."""
    p = payments.c
    values = {"refund_pending_minor": p.refund_pending_minor - refund.amount_minor}
    if succeeded:
        values["refunded_minor"] = p.refunded_minor + refund.amount_minor
    elif refund.funding == UNCREDITED:
        values["uncredited_refunds_minor"] = p.uncredited_refunds_minor - refund.amount_minor
    await conn.execute(update(payments).where(p.payment_id == refund.payment_id, p.psp == refund.psp,
                                              p.currency == refund.currency).values(values))


def _holds(refund: RefundRecord) -> list[tuple[str, int]]:
    return [(transfer_ids.refund_hold(refund.refund_id), refund.held_minor),
            (transfer_ids.refund_shortfall(refund.refund_id), refund.shortfall_minor)]


def _hold_accounts(refund: RefundRecord, conversion: FxConversion | None) -> list[str]:
    if refund.funding != PLAYER_FUNDED:
        return []
    if conversion is not None:
        return [fx_account(refund.currency), psp_clearing_account(refund.psp, refund.currency),
                *return_accounts(conversion)]
    return [player_account(refund.player_id, refund.currency), psp_clearing_account(refund.psp, refund.currency)] + (
        [player_receivables_account(refund.currency)] if refund.shortfall_minor else [])


def _replay(stored: RefundRecord, asked: dict[str, Any]) -> RefundRecord:
    defaulted = ("psp", "psp_payment_reference")  # None asks for the payment's: compared only when named
    differ = [name for name, value in asked.items()
              if not (name in defaulted and value is None) and getattr(stored, name) != value]
    if differ:
        raise RecordConflict("refund", stored.refund_id, "other " + ", ".join(differ))
    return stored


async def _get(conn: AsyncConnection, refund_id: str) -> RefundRecord | None:
    row = (await conn.execute(select(refunds).where(refunds.c.refund_id == refund_id))).one_or_none()
    return from_row(RefundRecord, row) if row else None


async def _get_one(conn: AsyncConnection, refund_id: str) -> RefundRecord:
    if (refund := await _get(conn, refund_id)) is None:
        raise RecordNotFound("refund", refund_id)
    return refund
