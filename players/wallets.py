"""A player's wallet currency: the currency their balance is kept in, which deposits and payouts in another currency
convert to (fx/). Until set, a deposit claims it when it starts (the conversion is decided, and its rate locked, at
the same moment), so two first deposits in different currencies cannot both be "the first". A claim takes the
currency the player's money already sits in, when it sits in exactly one; the deposit's own currency when the
player holds nothing; and nothing when the money sits in several (a player from before wallet currencies: each
currency then stays as it is, credited and paid out in its own, until ops pay the others out and set one).

It changes only while no OTHER currency of the player holds money (balance or hold) and no deposit of the player is
under way: money never sits in a currency the player no longer sees. Every deposit's claim (or read) registers the
deposit in `wallet_deposits` under the player's row lock, and the change takes the same lock, so a deposit either
saw the new currency or is seen by the change; it stays under way until its payments row has a final status. A
payout needs no such record: it holds its money in the wallet currency before anything else, and a hold is money.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.accounts import PLAYER
from ledger.models import ledger_accounts, payments
from payloop.db import UtcDateTime, insert_if_missing, metadata
from payloop.money import currency_exponent
from players import audit
from players.controls import PlayerRuleError, lock_player_in, players, subject

# Deposit statuses after which no money can arrive any more (in_review may still credit, on an approval).
_DEPOSIT_ENDED = ("credited", "failed", "rejected", "expired", "refunded")

wallet_deposits = sa.Table(
    "wallet_deposits",
    metadata,
    # A deposit that read (or claimed) its player's wallet currency; under way until its payments row is final.
    sa.Column("payment_id", sa.String(100), primary_key=True),
    sa.Column("player_id", sa.String(128), nullable=False),
    sa.Column("wallet_currency", sa.String(3), nullable=True),  # what it locked (None: no wallet currency)
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_wallet_deposits_player_id", "player_id"),
)


async def wallet_currency(engine: AsyncEngine, player_id: str) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(
            sa.select(players.c.wallet_currency).where(players.c.id == player_id))).scalar_one_or_none()


async def claim_wallet_currency(engine: AsyncEngine, player_id: str, payment_id: str, currency: str, now: datetime
                                ) -> str | None:
    """The wallet currency deposit `payment_id` (in `currency`) credits, claimed if the player had none (see the
    module's docstring); None when the player's money sits in several currencies. Registers the deposit as under
    way. Idempotent: a retry registers nothing new and reads what the first try claimed."""
    async with engine.begin() as conn:
        await lock_player_in(conn, player_id, now)
        current = (await conn.execute(
            sa.select(players.c.wallet_currency).where(players.c.id == player_id))).scalar_one()
        if current is None:
            held = await held_currencies_in(conn, player_id)
            current = held[0] if len(held) == 1 else currency if not held else None
            if current is not None:
                await conn.execute(players.update().where(players.c.id == player_id).values(wallet_currency=current))
        await insert_if_missing(conn, wallet_deposits, {"payment_id": payment_id, "player_id": player_id,
                                                        "wallet_currency": current, "created_at": now})
        return current


async def set_wallet_currency(engine: AsyncEngine, player_id: str, currency: str, *, now: datetime, actor: str
                              ) -> None:
    """Set the wallet currency; PlayerRuleError `wallet_currency_in_use` while another currency of the player holds
    money (or a hold), or a deposit of the player is under way. Setting the same currency again changes nothing
    (a retry is harmless)."""
    currency_exponent(currency)  # MoneyError for a currency the platform does not take
    async with engine.begin() as conn:
        await lock_player_in(conn, player_id, now)
        current = (await conn.execute(
            sa.select(players.c.wallet_currency).where(players.c.id == player_id))).scalar_one()
        if current == currency:
            return
        # Locked until the change commits: a credit to any of them (a game round's win) waits for it, or came first.
        others = [held for held in await held_currencies_in(conn, player_id, lock=True) if held != currency]
        if others:
            raise PlayerRuleError("wallet_currency_in_use",
                                  f"the player holds money in {', '.join(others)}: the wallet currency can become "
                                  f"{currency} once that is paid out or spent")
        if (under_way := await deposit_under_way_in(conn, player_id)) is not None:
            raise PlayerRuleError("wallet_currency_in_use",
                                  f"deposit {under_way} of the player is under way (it credits "
                                  f"{current or 'its own currency'}): change the currency once it has ended")
        await conn.execute(players.update().where(players.c.id == player_id)
                           .values(wallet_currency=currency, updated_at=now))
        await audit.record(conn, actor=actor, action="player.wallet_currency.set", subject=subject(player_id),
                           details={"before": current, "after": currency}, now=now)


async def held_currencies_in(conn: AsyncConnection, player_id: str, *, lock: bool = False) -> list[str]:
    """The currencies in which the player has a balance, a hold or a pending credit, sorted; `lock` locks every
    account of the player (in sorted-id order, as the ledger does) until the transaction ends."""
    a = ledger_accounts.c
    query = (sa.select(a.currency, a.posted_balance, a.pending_debits, a.pending_credits)
             .where(a.owner == player_id, a.kind == PLAYER).order_by(a.id))
    if lock:
        query = query.with_for_update()
    rows = (await conn.execute(query)).all()
    return sorted({row.currency for row in rows if row.posted_balance or row.pending_debits or row.pending_credits})


async def deposit_under_way_in(conn: AsyncConnection, player_id: str) -> str | None:
    """A deposit of the player that may still credit: registered by its claim with no payments row yet (the row is
    written when it ends or goes to review), or with a row that has not ended (in review)."""
    w, p = wallet_deposits.c, payments.c
    unrecorded = (await conn.execute(
        sa.select(w.payment_id).select_from(wallet_deposits.outerjoin(payments, p.payment_id == w.payment_id))
        .where(w.player_id == player_id, p.payment_id.is_(None)).order_by(w.payment_id).limit(1))).scalar()
    if unrecorded is not None:
        return unrecorded
    return (await conn.execute(
        sa.select(p.payment_id).where(p.player_id == player_id, p.status.not_in(_DEPOSIT_ENDED))
        .order_by(p.payment_id).limit(1))).scalar()
