"""PSP fees: what a PSP keeps from what it settles, booked once per operation.

The fee of a settled PSP operation (capture, refund, payout, chargeback) is one transfer
`house:fees:<psp>:<CUR> → psp:<psp>:<CUR>` with the id `fee:<operation>:<reference>`: the PSP keeps it, so its
clearing account (what it owes us) drops to the net it will settle, and the house books the expense on the PSP's
fee account. A zero fee moves nothing and leaves no row. Every fee transfer has a `psp_fees` row written in the same
transaction (operation, reference, PSP, method, currency, amount, when): what the margin report sums.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger import transfer_ids
from ledger.accounts import fee_account, psp_clearing_account
from ledger.models import psp_fees
from ledger.service import Ledger, Transfer, TransferRequest, check_minor_units
from payloop.db import insert_if_missing

FEE = "fee"  # the transfers' kind


def fee_accounts(psp: str, currency: str, fee_minor: int | None) -> list[str]:
    """The accounts a fee moves (none for no fee): for a caller that locks its accounts up front."""
    return [fee_account(psp, currency), psp_clearing_account(psp, currency)] if fee_minor else []


async def book_fee_in(
    ledger: Ledger, conn: AsyncConnection, *, operation: str, reference: str, psp: str, method: str | None,
    currency: str, fee_minor: int | None, now: datetime,
) -> str | None:
    """Book the fee inside the caller's transaction; its transfer id, or None for no fee. Idempotent: the same fee
    again is a replay, another amount for the same operation a TransferConflict."""
    transfer = await book_fee_transfer(ledger, conn, operation=operation, reference=reference, psp=psp,
                                       method=method, currency=currency, fee_minor=fee_minor, now=now)
    return transfer.id if transfer else None


async def book_fee(
    ledger: Ledger, *, operation: str, reference: str, psp: str, method: str | None, currency: str,
    fee_minor: int | None, now: datetime,
) -> str | None:
    """book_fee_in in a transaction of its own (a payout's fee, which no other row of the ledger's explains)."""
    return await ledger.transaction(lambda conn: book_fee_in(
        ledger, conn, operation=operation, reference=reference, psp=psp, method=method, currency=currency,
        fee_minor=fee_minor, now=now))


async def book_fee_transfer(
    ledger: Ledger, conn: AsyncConnection, *, operation: str, reference: str, psp: str, method: str | None,
    currency: str, fee_minor: int | None, now: datetime,
) -> Transfer | None:
    """book_fee_in's transfer itself: `replayed` tells a caller whether this call booked it (and so whether to add
    it to the payment's fees_minor)."""
    if fee_minor is None:
        return None
    check_minor_units("a fee", fee_minor, lowest=0)
    if fee_minor == 0:
        return None
    transfer = await ledger.post_transfer_in(conn, TransferRequest(
        id=transfer_ids.fee(operation, reference),
        debit_account=fee_account(psp, currency),
        credit_account=psp_clearing_account(psp, currency),
        amount=fee_minor,
        currency=currency,
        kind=FEE,
        reference=reference,
        metadata={"operation": operation},
    ))
    if not transfer.replayed:
        await insert_if_missing(conn, psp_fees, {
            "transfer_id": transfer.id, "operation": operation, "reference": reference, "psp": psp,
            "method": method, "currency": currency, "fee_minor": fee_minor, "booked_at": now,
        })
    return transfer
