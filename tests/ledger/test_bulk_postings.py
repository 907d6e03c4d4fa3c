"""Ledger.post_transfers_in: many postings in one insert and one balance update per account, equal to posting them
one by one; replays move nothing, a changed body is a conflict; on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    InvalidTransfer,
    Ledger,
    TransferConflict,
    TransferRequest,
    assert_invariants,
    house_account,
    player_account,
    psp_clearing_account,
)
from ledger.models import ledger_accounts, ledger_transfers

BANK = house_account("treasury", "EUR")  # not house:bank, which only settlements move
CLEARING = psp_clearing_account("card", "EUR")
OTHER = psp_clearing_account("card_b", "EUR")


def _requests(prefix: str = "t") -> list[TransferRequest]:
    """Transfers that share accounts both ways, a player credited among them."""
    player = player_account("p1", "EUR")
    moves = [(CLEARING, BANK, 700), (BANK, CLEARING, 250), (OTHER, BANK, 90), (CLEARING, player, 40), (BANK, OTHER, 5)]
    return [TransferRequest(f"{prefix}:{n}", debit, credit, amount, "EUR", "sweep", f"ref{n}")
            for n, (debit, credit, amount) in enumerate(moves)]


async def _state(engine: AsyncEngine) -> tuple[list[Any], list[Any]]:
    async with engine.connect() as conn:
        balances = (await conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.posted_balance,
                                              ledger_accounts.c.pending_debits, ledger_accounts.c.pending_credits)
                                       .order_by(ledger_accounts.c.id))).all()
        rows = (await conn.execute(select(ledger_transfers.c.id, ledger_transfers.c.debit_account_id,
                                          ledger_transfers.c.credit_account_id, ledger_transfers.c.amount,
                                          ledger_transfers.c.status, ledger_transfers.c.fingerprint)
                                   .order_by(ledger_transfers.c.id))).all()
    return [tuple(b) for b in balances], [tuple(r) for r in rows]


async def test_bulk_equals_one_by_one(fresh_db: Any) -> None:
    bulk_engine = fresh_db.engine()
    bulk = Ledger(bulk_engine)
    posted = await bulk.transaction(lambda conn: bulk.post_transfers_in(conn, _requests()))
    assert [(t.id, t.amount, t.replayed, t.status) for t in posted] == [
        (r.id, r.amount, False, "posted") for r in _requests()]
    bulk_state = await _state(bulk_engine)
    async with bulk_engine.begin() as conn:  # the same database, emptied: then posted one by one
        await conn.execute(ledger_transfers.delete())
        await conn.execute(ledger_accounts.delete())
    one = Ledger(bulk_engine)
    for req in _requests():
        await one.post_transfer(req)
    assert await _state(bulk_engine) == bulk_state
    await assert_invariants(bulk_engine)
    await bulk_engine.dispose()


async def test_a_replay_posts_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(_requests()[1])  # one of them posted before, alone
    first = await ledger.transaction(lambda conn: ledger.post_transfers_in(conn, _requests()))
    assert [t.replayed for t in first] == [False, True, False, False, False]
    state = await _state(engine)
    again = await ledger.transaction(lambda conn: ledger.post_transfers_in(conn, _requests() + _requests()[:1]))
    assert all(t.replayed for t in again)
    assert [t.id for t in again] == [r.id for r in _requests() + _requests()[:1]]
    assert await _state(engine) == state
    # The same id twice in one call posts once.
    twice = await ledger.transaction(lambda conn: ledger.post_transfers_in(conn, _requests("u")[:1] * 2))
    assert [t.replayed for t in twice] == [False, True]
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(ledger_transfers)
                                   .where(ledger_transfers.c.id == "u:0"))).scalar_one() == 1
    assert await ledger.transaction(lambda conn: ledger.post_transfers_in(conn, [])) == []
    await assert_invariants(engine)


async def test_a_changed_body_is_a_conflict_and_rolls_everything_back(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.transaction(lambda conn: ledger.post_transfers_in(conn, _requests()))
    state = await _state(engine)
    changed = _requests("v") + [TransferRequest("t:2", OTHER, BANK, 91, "EUR", "sweep", "ref2")]
    with pytest.raises(TransferConflict):
        await ledger.transaction(lambda conn: ledger.post_transfers_in(conn, changed))
    same_id = [_requests("w")[0], TransferRequest("w:0", BANK, CLEARING, 1, "EUR", "sweep", "x")]
    with pytest.raises(TransferConflict):
        await ledger.transaction(lambda conn: ledger.post_transfers_in(conn, same_id))
    assert await _state(engine) == state


async def test_a_bounded_debit_is_refused(ledger: Ledger, engine: AsyncEngine) -> None:
    debit_player = TransferRequest("x:1", player_account("p1", "EUR"), BANK, 1, "EUR", "sweep", "r")
    with pytest.raises(InvalidTransfer):
        await ledger.transaction(lambda conn: ledger.post_transfers_in(conn, [*_requests(), debit_player]))
    assert await _state(engine) == ([], [])
