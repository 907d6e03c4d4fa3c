"""A player's wallet currency: the currency their balance is kept in, which deposits and payouts in another
currency convert to (fx/). Until set, it is the currency of the player's first deposit: claimed when that deposit
starts (the conversion is decided, and its rate locked, at the same moment), so two first deposits in different
currencies cannot both be "the first".

It changes only while the player holds nothing in the current one (no balance, no hold): money never sits in a
currency the player no longer sees. A deposit already under way credits the wallet currency it locked when it
started.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.accounts import player_account
from ledger.models import ledger_accounts
from payloop.money import currency_exponent
from players import audit
from players.controls import PlayerRuleError, _ensure_player, _lock_player, players, subject


async def wallet_currency(engine: AsyncEngine, player_id: str) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(
            sa.select(players.c.wallet_currency).where(players.c.id == player_id))).scalar_one_or_none()


async def claim_wallet_currency(engine: AsyncEngine, player_id: str, currency: str, now: datetime) -> str:
    """The player's wallet currency, set to `currency` if it had none (one conditional UPDATE: the first wins)."""
    async with engine.begin() as conn:
        await _ensure_player(conn, player_id, now)
        await conn.execute(players.update().where(players.c.id == player_id, players.c.wallet_currency.is_(None))
                           .values(wallet_currency=currency))
        return (await conn.execute(
            sa.select(players.c.wallet_currency).where(players.c.id == player_id))).scalar_one()


async def set_wallet_currency(engine: AsyncEngine, player_id: str, currency: str, *, now: datetime, actor: str
                              ) -> None:
    """Set the wallet currency; PlayerRuleError `wallet_currency_in_use` while the player holds money (or a hold)
    in the current one. Setting the same currency again changes nothing (a retry is harmless)."""
    currency_exponent(currency)  # MoneyError for a currency the platform does not take
    async with engine.begin() as conn:
        await _lock_player(conn, player_id, now)
        current = (await conn.execute(
            sa.select(players.c.wallet_currency).where(players.c.id == player_id))).scalar_one()
        if current == currency:
            return
        if current is not None:
            a = ledger_accounts.c
            held = (await conn.execute(sa.select(a.posted_balance, a.pending_debits, a.pending_credits)
                                       .where(a.id == player_account(player_id, current)))).one_or_none()
            if held is not None and any(held):
                raise PlayerRuleError("wallet_currency_in_use",
                                      f"the player holds money in {current}: it is paid out or spent first")
        await conn.execute(players.update().where(players.c.id == player_id)
                           .values(wallet_currency=currency, updated_at=now))
        await audit.record(conn, actor=actor, action="player.wallet_currency.set", subject=subject(player_id),
                           details={"before": current, "after": currency}, now=now)
