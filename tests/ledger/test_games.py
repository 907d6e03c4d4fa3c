"""The game-round wallet on real SQLite and PostgreSQL databases; ledger invariants are asserted after each scenario."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import InsufficientFunds, InvalidTransfer, Ledger, TransferRequest, assert_invariants
from ledger.accounts import house_account, player_account, psp_clearing_account
from ledger.games import (
    GameRequest,
    GameTransactionConflict,
    GameWallet,
    NotABet,
    ReferenceMismatch,
    RoundSettled,
    BettingRefused,
    TransactionRolledBack,
    turnover_since,
)
from ledger.models import ledger_transfers
from payloop.db import utcnow


@pytest.fixture
def wallet(engine: AsyncEngine) -> GameWallet:
    return GameWallet(engine)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def fund(engine: AsyncEngine, player: str, amount: int, currency: str = "EUR") -> None:
    await Ledger(engine).post_transfer(TransferRequest(
        f"deposit:{new_id('pay')}:credit", psp_clearing_account("ewallet", currency),
        player_account(player, currency), amount, currency, "deposit", new_id("pay"),
    ))


def bet(player: str, amount: int, tx: str | None = None, round_id: str = "r1") -> GameRequest:
    return GameRequest(tx or new_id("bet"), player, "EUR", amount, round_id, "slots-1")


def win(player: str, amount: int, round_id: str = "r1", ref: str | None = None) -> GameRequest:
    return GameRequest(new_id("win"), player, "EUR", amount, round_id, "slots-1", ref)


def rollback(player: str, bet_id: str, round_id: str = "r1", amount: int | None = None) -> GameRequest:
    return GameRequest(new_id("rb"), player, "EUR", amount, round_id, "slots-1", bet_id)


async def available(engine: AsyncEngine, player: str) -> int:
    balance = await Ledger(engine).account_balance(player_account(player, "EUR"))
    return balance.available if balance else 0


async def game_transfers(engine: AsyncEngine, kind: str) -> int:
    query = select(func.count()).select_from(ledger_transfers).where(ledger_transfers.c.kind == kind)
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar_one()


async def test_bet_win_round_trip(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    placed = await wallet.bet(bet("p1", 2_50))
    assert placed.data["balance"] == "7.50" and placed.data["status"] == "ok" and not placed.replayed
    paid = await wallet.win(win("p1", 5_00))
    assert paid.data == {"transaction_id": paid.data["transaction_id"], "player_id": "p1", "currency": "EUR",
                         "balance": "12.50", "status": "ok"}
    assert (await Ledger(engine).account_balance(house_account("games", "EUR"))).posted == -2_50
    await assert_invariants(engine)


async def test_duplicate_bet_gets_the_same_answer_and_debits_once(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    request = bet("p1", 3_00)
    first = await wallet.bet(request)
    await wallet.win(win("p1", 1_00, round_id="other"))  # the balance moves on; the replay keeps the first answer
    again = await wallet.bet(request)
    assert again.replayed and again.body == first.body
    assert await available(engine, "p1") == 8_00
    assert await game_transfers(engine, "bet") == 1
    await assert_invariants(engine)


async def test_same_id_with_another_body_is_a_conflict(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    request = bet("p1", 3_00)
    await wallet.bet(request)
    with pytest.raises(GameTransactionConflict):
        await wallet.bet(GameRequest(request.transaction_id, "p1", "EUR", 4_00, "r1", "slots-1"))
    with pytest.raises(GameTransactionConflict):  # the id is taken by a bet: it cannot become a win
        await wallet.win(GameRequest(request.transaction_id, "p1", "EUR", 3_00, "r1", "slots-1"))
    assert await available(engine, "p1") == 7_00
    await assert_invariants(engine)


async def test_insufficient_funds_leaves_no_trace(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 1_00)
    request = bet("p1", 1_01)
    with pytest.raises(InsufficientFunds) as refused:
        await wallet.bet(request)
    assert refused.value.available == 1_00
    await fund(engine, "p1", 1_00)
    assert (await wallet.bet(request)).data["balance"] == "0.99"  # the provider's retry succeeds after a deposit
    await assert_invariants(engine)


async def test_self_excluded_player_cannot_bet_but_replays_and_wins_still_work(
    wallet: GameWallet, engine: AsyncEngine
) -> None:
    await fund(engine, "p1", 10_00)
    placed = await wallet.bet(request := bet("p1", 1_00))
    with pytest.raises(BettingRefused) as refused:
        await wallet.bet(bet("p1", 1_00), refused="self_excluded")
    assert refused.value.code == "self_excluded"
    assert (await wallet.bet(request, refused="self_excluded")).body == placed.body
    assert (await wallet.win(win("p1", 2_00))).data["balance"] == "11.00"
    await assert_invariants(engine)


async def test_zero_win_settles_the_round_without_a_transfer(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    placed = await wallet.bet(bet("p1", 1_00))
    closed = await wallet.win(win("p1", 0))
    assert closed.data["balance"] == "9.00"
    assert await game_transfers(engine, "win") == 0
    with pytest.raises(RoundSettled):
        await wallet.rollback(rollback("p1", placed.data["transaction_id"]))
    await assert_invariants(engine)


async def test_rollback_reverses_a_bet_once(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    bet_id = (await wallet.bet(bet("p1", 4_00))).data["transaction_id"]
    request = rollback("p1", bet_id, amount=4_00)
    first = await wallet.rollback(request)
    assert first.data["balance"] == "10.00"
    assert (await wallet.rollback(request)).body == first.body
    # Another rollback of the same bet (its own id) is answered ok and moves nothing.
    assert (await wallet.rollback(rollback("p1", bet_id))).data["balance"] == "10.00"
    assert await game_transfers(engine, "rollback") == 1
    await assert_invariants(engine)


async def test_rollback_before_bet_leaves_a_tombstone(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    late = bet("p1", 2_00)
    answer = await wallet.rollback(rollback("p1", late.transaction_id))
    assert answer.data["balance"] == "10.00" and answer.data["status"] == "ok"
    with pytest.raises(TransactionRolledBack):
        await wallet.bet(late)
    assert await available(engine, "p1") == 10_00
    assert {t.kind for t in await wallet.round_transactions("r1")} == {"rollback", "tombstone"}
    await assert_invariants(engine)


async def test_rollback_after_a_win_in_the_round_is_refused(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    bet_id = (await wallet.bet(bet("p1", 2_00))).data["transaction_id"]
    await wallet.win(win("p1", 3_00, ref=bet_id))
    with pytest.raises(RoundSettled):
        await wallet.rollback(rollback("p1", bet_id))
    assert await available(engine, "p1") == 11_00
    await assert_invariants(engine)


async def test_rollback_of_a_win_is_refused(wallet: GameWallet, engine: AsyncEngine) -> None:
    win_id = (await wallet.win(win("p1", 3_00))).data["transaction_id"]
    with pytest.raises(NotABet):
        await wallet.rollback(rollback("p1", win_id))
    assert await available(engine, "p1") == 3_00
    await assert_invariants(engine)


async def test_rollback_must_match_its_bet(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    await fund(engine, "p2", 10_00)
    bet_id = (await wallet.bet(bet("p1", 2_00))).data["transaction_id"]
    with pytest.raises(ReferenceMismatch):  # never pay a bet back to another player
        await wallet.rollback(rollback("p2", bet_id))
    with pytest.raises(ReferenceMismatch):
        await wallet.rollback(rollback("p1", bet_id, amount=3_00))
    with pytest.raises(InvalidTransfer):
        await wallet.rollback(GameRequest(bet_id, "p1", "EUR", None, "r1", "slots-1", bet_id))
    assert (await available(engine, "p1"), await available(engine, "p2")) == (8_00, 10_00)
    await assert_invariants(engine)


async def test_concurrent_bets_never_overdraw(engine: AsyncEngine) -> None:
    wallet = GameWallet(engine)
    affordable, stake = 37, 1_00
    await fund(engine, "p1", affordable * stake)

    async def place(i: int) -> bool:
        try:
            await wallet.bet(bet("p1", stake, round_id=f"r{i}"))
        except InsufficientFunds:
            return False
        return True

    results = await asyncio.gather(*(place(i) for i in range(200)))
    assert sum(results) == affordable
    assert await available(engine, "p1") == 0
    assert await game_transfers(engine, "bet") == affordable
    await assert_invariants(engine)


async def test_bet_racing_its_rollback_ends_consistent(engine: AsyncEngine) -> None:
    wallet, rounds = GameWallet(engine), 20
    await fund(engine, "p1", rounds * 1_00)

    async def placed(request: GameRequest) -> bool:
        try:
            await wallet.bet(request)
        except TransactionRolledBack:
            return False
        return True

    outcomes = []
    for i in range(rounds):
        request = bet("p1", 1_00, round_id=f"race-{i}")
        outcome, _ = await asyncio.gather(placed(request), wallet.rollback(rollback("p1", request.transaction_id,
                                                                                    round_id=f"race-{i}")))
        outcomes.append(outcome)
    # Whichever came first, every bet that posted was reversed: the player has all the money back.
    assert await available(engine, "p1") == rounds * 1_00
    assert await game_transfers(engine, "rollback") == sum(outcomes)
    assert await game_transfers(engine, "bet") == sum(outcomes)
    await assert_invariants(engine)


async def test_turnover_counts_bets_not_rolled_back(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 100_00)
    start = utcnow()
    await wallet.bet(bet("p1", 10_00, round_id="a"))
    kept = await wallet.bet(bet("p1", 5_00, round_id="b"))
    rolled = (await wallet.bet(bet("p1", 7_00, round_id="c"))).data["transaction_id"]
    await wallet.rollback(rollback("p1", rolled, round_id="c"))
    await wallet.rollback(rollback("p1", new_id("unknown"), round_id="d"))  # a tombstone is no turnover
    await wallet.win(win("p1", 50_00, round_id="a"))
    assert await turnover_since(engine, "p1", "EUR", start) == 15_00
    assert await turnover_since(engine, "p1", "EUR", utcnow() + timedelta(seconds=1)) == 0
    assert await turnover_since(engine, "p1", "USD", start) == 0
    assert json.loads(kept.body)["balance"] == "85.00"
    await assert_invariants(engine)


async def test_round_and_player_history(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "p1", 10_00)
    bet_id = (await wallet.bet(bet("p1", 1_00, round_id="hist"))).data["transaction_id"]
    win_id = (await wallet.win(win("p1", 2_00, round_id="hist", ref=bet_id))).data["transaction_id"]
    round_ = await wallet.round_transactions("hist")
    assert [(t.transaction_id, t.kind, t.amount) for t in round_] == [(bet_id, "bet", 1_00), (win_id, "win", 2_00)]
    history = await wallet.player_history("p1", limit=2)
    assert [(t.kind, t.reference) for t in history] == [("win", win_id), ("bet", bet_id)]
    assert [t.kind for t in await wallet.player_history("p1")] == ["win", "bet", "deposit"]
    await assert_invariants(engine)


async def test_a_win_must_name_a_live_bet_of_its_round(wallet: GameWallet, engine: AsyncEngine) -> None:
    await fund(engine, "w1", 100_00)
    placed = bet("w1", 10_00, round_id="rw")
    await wallet.bet(placed)
    with pytest.raises(NotABet):
        await wallet.win(win("w1", 20_00, round_id="rw", ref="no-such-bet"))
    await wallet.rollback(rollback("w1", placed.transaction_id, round_id="rw"))
    with pytest.raises(TransactionRolledBack):
        await wallet.win(win("w1", 20_00, round_id="rw", ref=placed.transaction_id))
    usd = GameRequest(new_id("win"), "w1", "USD", 1_00, "rw", "slots-1")
    with pytest.raises(ReferenceMismatch):
        await wallet.win(usd)
    assert await available(engine, "w1") == 100_00
    await assert_invariants(engine)
