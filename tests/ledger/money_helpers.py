"""Helpers of the money-after-payment tests: a recorded and credited deposit, balances, row counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    Ledger,
    PaymentRecord,
    credit_deposit,
    player_account,
    player_receivables_account,
    psp_clearing_account,
    record_payment,
)
from ledger.models import disputes, ledger_accounts, ledger_transfers, payments, payouts, psp_fees, refunds

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PSP = "card"
P1 = player_account("p1", "EUR")
CLEARING = psp_clearing_account(PSP, "EUR")
RECEIVABLES = player_receivables_account("EUR")
TABLES = (payments, refunds, disputes, payouts, psp_fees, ledger_transfers, ledger_accounts)


def payment(payment_id: str = "pay_1", *, player: str = "p1", amount: int = 5000, currency: str = "EUR",
            psp: str | None = PSP, status: str = "credited", at: datetime = T0, method: str = "card",
            **facts: Any) -> PaymentRecord:
    return PaymentRecord(payment_id=payment_id, client_id="c1", player_id=player, method=method, currency=currency,
                         amount_minor=amount, status=status, created_at=at, updated_at=at, psp=psp,
                         psp_reference=f"ref-{payment_id}" if psp else None, **facts)


async def credited(ledger: Ledger, engine: AsyncEngine, payment_id: str = "pay_1", *, player: str = "p1",
                   amount: int = 5000, currency: str = "EUR", fee: int = 0, psp: str = PSP,
                   at: datetime = T0, method: str = "card") -> str | None:
    """A deposit recorded, captured and credited in full (its fee booked)."""
    await record_payment(engine, payment(payment_id, player=player, amount=amount, currency=currency, psp=psp,
                                         at=at, method=method))
    return await credit_deposit(ledger, payment_id=payment_id, player_id=player, psp=psp, method=method,
                                currency=currency, captured_minor=amount, credit_minor=amount, fee_minor=fee,
                                now=at + timedelta(seconds=1))


async def balance(ledger: Ledger, account_id: str) -> tuple[int, int, int]:
    """(posted, pending debits, pending credits); zeros for an account that does not exist."""
    b = await ledger.account_balance(account_id)
    return (b.posted, b.pending_debits, b.pending_credits) if b else (0, 0, 0)


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {t.name: (await conn.execute(select(func.count()).select_from(t))).scalar_one() for t in TABLES}


async def snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the money tables and the ledger: equal snapshots = nothing written in between."""
    async with engine.connect() as conn:
        return {t.name: sorted(tuple(map(str, r)) for r in await conn.execute(select(t))) for t in TABLES}
