"""The wallet currency (players/wallets.py): a claim takes the currency the player's money sits in; a change is
refused while another currency holds money or a deposit may still credit; a change and a deposit's claim never
interleave; migration 0021 fills it in for players whose money sits in one currency. Both backends."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from entrypoints.migrate import alembic_config
from ledger import Ledger, TransferRequest, record_payment
from ledger.accounts import house_account, player_account
from players import PlayerRuleError
from players.wallets import claim_wallet_currency, set_wallet_currency, wallet_currency
from tests.ledger.money_helpers import T0, payment


async def fund(ledger: Ledger, player: str, currency: str, amount_minor: int, *, hold: bool = False) -> None:
    """Money in the player's account (a game win), and optionally a hold of it (a payout under way)."""
    await ledger.post_transfer(TransferRequest(f"win:{player}:{currency}", house_account("games", currency),
                                               player_account(player, currency), amount_minor, currency, "game_win",
                                               player))
    if hold:
        await ledger.hold(TransferRequest(f"hold:{player}:{currency}", player_account(player, currency),
                                          house_account("payouts", currency), amount_minor, currency, "payout",
                                          player))


async def set_to(engine: AsyncEngine, player: str, currency: str) -> None:
    await set_wallet_currency(engine, player, currency, now=T0, actor="c1")


async def test_a_claim_takes_the_one_currency_the_money_sits_in(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    await fund(ledger, "legacy", "EUR", 50000, hold=True)  # all of it held: a hold is money too
    assert await claim_wallet_currency(engine, "legacy", "pay_1", "USD", T0) == "EUR"
    assert await claim_wallet_currency(engine, "new", "pay_2", "USD", T0) == "USD"
    assert await claim_wallet_currency(engine, "new", "pay_3", "GBP", T0) == "USD"  # the first claim stands
    await fund(ledger, "multi", "EUR", 100)
    await fund(ledger, "multi", "GBP", 100)
    # Money in several currencies: none is claimed, each stays where payouts in it find it.
    assert await claim_wallet_currency(engine, "multi", "pay_4", "USD", T0) is None
    assert await wallet_currency(engine, "multi") is None


async def test_a_change_is_refused_while_another_currency_holds_money(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    await fund(ledger, "p1", "EUR", 100)
    await fund(ledger, "p1", "GBP", 100, hold=True)
    # From no currency too, and to one of the two: the detail names the others.
    for target, others in (("USD", "EUR, GBP"), ("EUR", "GBP")):
        with pytest.raises(PlayerRuleError, match=f"holds money in {others}:") as refused:
            await set_to(engine, "p1", target)
        assert refused.value.code == "wallet_currency_in_use"
    await ledger.void_hold("hold:p1:GBP")
    await ledger.post_transfer(TransferRequest("bet:p1:GBP", player_account("p1", "GBP"),
                                               house_account("games", "GBP"), 100, "GBP", "game_bet", "p1"))
    await set_to(engine, "p1", "EUR")  # only EUR holds money now: it may be the wallet's
    assert await wallet_currency(engine, "p1") == "EUR"
    with pytest.raises(PlayerRuleError, match="holds money in EUR"):
        await set_to(engine, "p1", "GBP")


async def test_a_change_waits_for_the_deposits_under_way(engine: AsyncEngine) -> None:
    assert await claim_wallet_currency(engine, "p1", "pay_1", "EUR", T0) == "EUR"
    with pytest.raises(PlayerRuleError, match="deposit pay_1 of the player is under way"):
        await set_to(engine, "p1", "GBP")  # it may still credit EUR
    await record_payment(engine, payment("pay_1", status="in_review"))
    with pytest.raises(PlayerRuleError, match="deposit pay_1"):
        await set_to(engine, "p1", "GBP")  # an approval may still credit it
    await record_payment(engine, payment("pay_1", status="failed", at=T0.replace(hour=13)))
    await set_to(engine, "p1", "GBP")  # it ended without money: the first deposit's claim is undone by a change
    assert await wallet_currency(engine, "p1") == "GBP"


async def test_a_change_and_a_deposits_claim_never_interleave(engine: AsyncEngine) -> None:
    """Each race ends one of two ways: the deposit saw the new currency, or the change saw the deposit."""
    for n in range(8):
        player = f"race{n}"
        await set_to(engine, player, "EUR")
        claimed, changed = await asyncio.gather(claim_wallet_currency(engine, player, f"pay_{n}", "EUR", T0),
                                                set_to(engine, player, "GBP"), return_exceptions=True)
        if isinstance(changed, PlayerRuleError):
            assert claimed == "EUR" and await wallet_currency(engine, player) == "EUR"
        else:
            assert changed is None and claimed == "GBP", (claimed, changed)


def _alembic(connection: sa.Connection, step: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, step)(config, revision)


async def test_the_migration_gives_a_player_the_one_currency_their_money_sits_in(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "downgrade", "0020_events")
    ledger = Ledger(engine)
    async with engine.begin() as conn:
        for player in ("one", "several", "none"):
            await conn.execute(sa.text("INSERT INTO players (id, updated_at, created_at) VALUES (:id, :t, :t)"),
                               {"id": player, "t": T0})
    await fund(ledger, "one", "EUR", 100, hold=True)
    await fund(ledger, "several", "EUR", 100)
    await fund(ledger, "several", "GBP", 100)
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "upgrade", "head")
    assert [await wallet_currency(engine, p) for p in ("one", "several", "none")] == ["EUR", None, None]
