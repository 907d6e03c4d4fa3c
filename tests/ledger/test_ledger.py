"""Ledger behaviour on real SQLite and PostgreSQL databases; money invariants are asserted after every scenario."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    CurrencyMismatch,
    HoldAlreadyResolved,
    InsufficientFunds,
    InvalidAccount,
    InvalidTransfer,
    Ledger,
    NotAHold,
    Transfer,
    TransferConflict,
    TransferNotFound,
    TransferRequest,
    assert_invariants,
    check_invariants,
    house_account,
    parse_account,
    player_account,
    psp_clearing_account,
)
from ledger.models import ledger_accounts, ledger_transfers
from payloop.db import create_engine
from tests.conftest import FreshDatabase

P1 = player_account("p1", "EUR")
PSP = psp_clearing_account("cardpsp", "EUR")
BETS = house_account("bets", "EUR")


@pytest.fixture
def ledger(engine: AsyncEngine) -> Ledger:
    return Ledger(engine)


def deposit_req(payment_id: str, amount: int, account: str = P1, currency: str = "EUR") -> TransferRequest:
    psp = psp_clearing_account("cardpsp", currency)
    return TransferRequest(f"deposit:{payment_id}:credit", psp, account, amount, currency, "deposit", payment_id)


def bet_req(tx_id: str, amount: int, account: str = P1) -> TransferRequest:
    return TransferRequest(f"bet:{tx_id}", account, BETS, amount, "EUR", "bet", f"round-{tx_id}")


def payout_req(payout_id: str, amount: int, account: str = P1) -> TransferRequest:
    return TransferRequest(f"payout:{payout_id}:hold", account, PSP, amount, "EUR", "payout", payout_id)


async def balances(ledger: Ledger, *account_ids: str) -> list[tuple[int, int, int] | None]:
    """(posted, pending_debits, pending_credits) per account, None when the account does not exist."""
    result: list[tuple[int, int, int] | None] = []
    for account_id in account_ids:
        b = await ledger.account_balance(account_id)
        result.append((b.posted, b.pending_debits, b.pending_credits) if b else None)
    return result


async def count_transfers(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(ledger_transfers))).scalar_one()


# ---- posting -------------------------------------------------------------------------------------------


async def test_deposit_moves_money_from_clearing_to_player(ledger: Ledger, engine: AsyncEngine) -> None:
    t = await ledger.post_transfer(
        TransferRequest("deposit:pay_1:credit", PSP, P1, 5000, "EUR", "deposit", "pay_1", {"psp_ref": "abc"})
    )
    assert (t.id, t.debit_account, t.credit_account, t.amount, t.currency) == (
        "deposit:pay_1:credit",
        PSP,
        P1,
        5000,
        "EUR",
    )
    assert (t.kind, t.reference, t.status, t.replayed) == ("deposit", "pay_1", "posted", False)
    assert t.metadata == {"psp_ref": "abc"}
    assert t.created_at.tzinfo is not None

    player = await ledger.account_balance(P1)
    assert player is not None
    assert (player.kind, player.currency, player.posted, player.available) == ("player", "EUR", 5000, 5000)
    clearing = await ledger.account_balance(PSP)
    assert clearing is not None
    assert (clearing.kind, clearing.posted) == ("psp_clearing", -5000)

    await ledger.post_transfer(deposit_req("pay_2", 700, player_account("p1", "USD"), "USD"))
    assert [(b.currency, b.available) for b in await ledger.player_balances("p1")] == [("EUR", 5000), ("USD", 700)]
    assert await ledger.player_balances("nobody") == []
    assert await ledger.get_transfer("deposit:pay_1:credit") == t
    assert await ledger.get_transfer("nope") is None
    await assert_invariants(engine)


async def test_replay_with_same_body_returns_first_result(ledger: Ledger, engine: AsyncEngine) -> None:
    first = await ledger.post_transfer(deposit_req("pay_1", 5000))
    again = await ledger.post_transfer(deposit_req("pay_1", 5000))
    assert again.replayed is True
    assert {**vars_of(again), "replayed": False} == vars_of(first)
    assert await balances(ledger, P1, PSP) == [(5000, 0, 0), (-5000, 0, 0)]
    assert await count_transfers(engine) == 1
    await assert_invariants(engine)


def vars_of(t: Transfer) -> dict[str, Any]:
    return {name: getattr(t, name) for name in t.__dataclass_fields__}


@pytest.mark.parametrize(
    "changed",
    [
        deposit_req("pay_1", 5001),
        deposit_req("pay_1", 5000, player_account("p2", "EUR")),
        TransferRequest("deposit:pay_1:credit", PSP, P1, 5000, "EUR", "adjustment", "pay_1"),
        TransferRequest("deposit:pay_1:credit", PSP, P1, 5000, "EUR", "deposit", "pay_other"),
        TransferRequest(
            "deposit:pay_1:credit", psp_clearing_account("other", "EUR"), P1, 5000, "EUR", "deposit", "pay_1"
        ),
    ],
    ids=["amount", "credit", "kind", "reference", "debit"],
)
async def test_same_id_with_different_body_is_a_conflict(
    ledger: Ledger, engine: AsyncEngine, changed: TransferRequest
) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 5000))
    with pytest.raises(TransferConflict) as exc:
        await ledger.post_transfer(changed)
    assert exc.value.transfer_id == "deposit:pay_1:credit"
    assert exc.value.code == "transfer_conflict"
    assert await balances(ledger, P1, PSP) == [(5000, 0, 0), (-5000, 0, 0)]
    assert await count_transfers(engine) == 1
    await assert_invariants(engine)


async def test_hold_and_posting_with_the_same_id_conflict(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    await ledger.hold(payout_req("po_1", 300))
    with pytest.raises(TransferConflict):
        await ledger.post_transfer(payout_req("po_1", 300))
    assert await balances(ledger, P1) == [(1000, 300, 0)]
    await assert_invariants(engine)


async def test_insufficient_funds_posts_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 300))
    with pytest.raises(InsufficientFunds) as exc:
        await ledger.post_transfer(bet_req("b1", 500))
    assert (exc.value.account_id, exc.value.available, exc.value.code) == (P1, 300, "insufficient_funds")
    assert await ledger.get_transfer("bet:b1") is None
    assert await balances(ledger, P1, BETS) == [(300, 0, 0), None]
    assert await count_transfers(engine) == 1

    # A refused id is not burned: once the money is there, the same operation goes through.
    await ledger.post_transfer(deposit_req("pay_2", 200))
    posted = await ledger.post_transfer(bet_req("b1", 500))
    assert (posted.status, posted.replayed) == ("posted", False)
    assert await balances(ledger, P1, BETS) == [(0, 0, 0), (500, 0, 0)]
    await assert_invariants(engine)


async def test_player_floor_is_zero(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    await ledger.post_transfer(bet_req("b1", 1000))
    with pytest.raises(InsufficientFunds) as exc:
        await ledger.post_transfer(bet_req("b2", 1))
    assert exc.value.available == 0
    # A player who never deposited cannot spend; the refused debit leaves no account behind.
    newcomer = player_account("p_new", "EUR")
    with pytest.raises(InsufficientFunds) as exc:
        await ledger.post_transfer(bet_req("b3", 1, newcomer))
    assert (exc.value.account_id, exc.value.available) == (newcomer, 0)
    assert await ledger.account_balance(newcomer) is None
    # House and clearing accounts are unbounded: the house can pay a win it never received.
    await ledger.post_transfer(TransferRequest("win:w1", BETS, P1, 5000, "EUR", "win", "round-w1"))
    assert await balances(ledger, P1, BETS) == [(5000, 0, 0), (-4000, 0, 0)]
    await assert_invariants(engine)


async def test_currency_mismatch_is_refused(ledger: Ledger, engine: AsyncEngine) -> None:
    with pytest.raises(CurrencyMismatch) as exc:
        await ledger.post_transfer(
            TransferRequest("x:1", PSP, player_account("p1", "USD"), 100, "EUR", "deposit", "x1")
        )
    assert (exc.value.account_id, exc.value.code) == ("player:p1:USD", "currency_mismatch")
    with pytest.raises(CurrencyMismatch):
        await ledger.hold(TransferRequest("x:2", P1, house_account("h", "GBP"), 100, "GBP", "payout", "x2"))
    assert await count_transfers(engine) == 0
    assert await ledger.account_balance(PSP) is None
    await assert_invariants(engine)


@pytest.mark.parametrize(
    "account_id",
    [
        "player:p1",
        "player:p1:EUR:x",
        "bank:p1:EUR",
        "player::EUR",
        "player:p 1:EUR",
        "player:p/1:EUR",
        "player:p1:eur",
        "player:p1:XXX",
        "player:" + "a" * 129 + ":EUR",
        "",
    ],
)
def test_invalid_account_ids_are_rejected(account_id: str) -> None:
    with pytest.raises(InvalidAccount) as exc:
        parse_account(account_id)
    assert exc.value.code == "invalid_account"


def test_account_helpers() -> None:
    assert parse_account(player_account("p-1.a_B", "JPY")) == ("player", "p-1.a_B", "JPY", 0)
    assert parse_account(psp_clearing_account("cardpsp", "EUR")) == ("psp_clearing", "cardpsp", "EUR", None)
    assert parse_account(house_account("bets", "KWD")) == ("house", "bets", "KWD", None)
    for bad in ("a:b", "", "p 1"):
        with pytest.raises(InvalidAccount):
            player_account(bad, "EUR")
    with pytest.raises(InvalidAccount):
        house_account("bets", "BTC")


async def test_invalid_requests_are_rejected(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    bad = [
        TransferRequest("t", P1, BETS, 0, "EUR", "bet", "r"),
        TransferRequest("t", P1, BETS, -5, "EUR", "bet", "r"),
        TransferRequest("t", P1, BETS, 1.5, "EUR", "bet", "r"),  # type: ignore[arg-type]
        TransferRequest("t", P1, BETS, True, "EUR", "bet", "r"),
        TransferRequest("t", P1, P1, 10, "EUR", "bet", "r"),
        TransferRequest("", P1, BETS, 10, "EUR", "bet", "r"),
        TransferRequest("t", P1, BETS, 10, "EUR", "", "r"),
        TransferRequest("t", P1, BETS, 10, "EUR", "bet", "r", {"n": 1}),  # type: ignore[dict-item]
    ]
    for req in bad:
        with pytest.raises(InvalidTransfer):
            await ledger.post_transfer(req)
    with pytest.raises(InvalidAccount):
        await ledger.post_transfer(TransferRequest("t", "player:p:1:EUR", BETS, 10, "EUR", "bet", "r"))
    assert await count_transfers(engine) == 1
    await assert_invariants(engine)


# ---- holds ---------------------------------------------------------------------------------------------


async def test_hold_counts_against_available_then_posts(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    held = await ledger.hold(payout_req("po_1", 300))
    assert (held.status, held.replayed) == ("pending", False)
    player = await ledger.account_balance(P1)
    assert player is not None and (player.posted, player.pending_debits, player.available) == (1000, 300, 700)
    assert await balances(ledger, PSP) == [(-1000, 0, 300)]
    await assert_invariants(engine)

    # The held amount is not spendable.
    with pytest.raises(InsufficientFunds) as exc:
        await ledger.post_transfer(bet_req("b1", 701))
    assert exc.value.available == 700
    with pytest.raises(InsufficientFunds):
        await ledger.hold(payout_req("po_2", 701))

    posted = await ledger.post_hold("payout:po_1:hold")
    assert (posted.status, posted.replayed, posted.created_at) == ("posted", False, held.created_at)
    assert await balances(ledger, P1, PSP) == [(700, 0, 0), (-700, 0, 0)]

    again = await ledger.post_hold("payout:po_1:hold")
    assert (again.status, again.replayed) == ("posted", True)
    assert await balances(ledger, P1, PSP) == [(700, 0, 0), (-700, 0, 0)]
    with pytest.raises(HoldAlreadyResolved) as exc2:
        await ledger.void_hold("payout:po_1:hold")
    assert (exc2.value.status, exc2.value.code) == ("posted", "hold_already_resolved")
    # Replaying the hold request itself returns the (now posted) transfer, not a second hold.
    replayed_hold = await ledger.hold(payout_req("po_1", 300))
    assert (replayed_hold.status, replayed_hold.replayed) == ("posted", True)
    assert await balances(ledger, P1, PSP) == [(700, 0, 0), (-700, 0, 0)]
    await assert_invariants(engine)


async def test_void_releases_the_hold(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    await ledger.hold(payout_req("po_1", 1000))
    with pytest.raises(InsufficientFunds):
        await ledger.post_transfer(bet_req("b1", 1))

    voided = await ledger.void_hold("payout:po_1:hold")
    assert (voided.status, voided.replayed) == ("voided", False)
    assert await balances(ledger, P1, PSP) == [(1000, 0, 0), (-1000, 0, 0)]
    again = await ledger.void_hold("payout:po_1:hold")
    assert (again.status, again.replayed) == ("voided", True)
    with pytest.raises(HoldAlreadyResolved) as exc:
        await ledger.post_hold("payout:po_1:hold")
    assert exc.value.status == "voided"
    assert await balances(ledger, P1, PSP) == [(1000, 0, 0), (-1000, 0, 0)]
    await ledger.post_transfer(bet_req("b1", 1000))
    await assert_invariants(engine)


async def test_resolving_unknown_or_direct_transfers(ledger: Ledger, engine: AsyncEngine) -> None:
    with pytest.raises(TransferNotFound):
        await ledger.post_hold("missing")
    with pytest.raises(TransferNotFound):
        await ledger.void_hold("missing")
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    with pytest.raises(NotAHold):
        await ledger.post_hold("deposit:pay_1:credit")
    with pytest.raises(NotAHold):
        await ledger.void_hold("deposit:pay_1:credit")
    assert await balances(ledger, P1) == [(1000, 0, 0)]
    await assert_invariants(engine)


# ---- history -------------------------------------------------------------------------------------------


async def test_account_history_is_newest_first_and_pages(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    for i in range(4):
        await ledger.post_transfer(bet_req(f"b{i}", 10))
    await ledger.post_transfer(deposit_req("pay_other", 5, player_account("p2", "EUR")))

    everything = await ledger.account_transfers(P1)
    assert [t.id for t in everything] == ["bet:b3", "bet:b2", "bet:b1", "bet:b0", "deposit:pay_1:credit"]
    page1 = await ledger.account_transfers(P1, limit=2)
    page2 = await ledger.account_transfers(P1, limit=2, before=page1[-1].id)
    page3 = await ledger.account_transfers(P1, limit=2, before=page2[-1].id)
    assert [t.id for t in page1 + page2 + page3] == [t.id for t in everything]
    assert await ledger.account_transfers(P1, before=everything[-1].id) == []
    with pytest.raises(TransferNotFound):
        await ledger.account_transfers(P1, before="missing")
    await assert_invariants(engine)


async def test_invariants_report_a_corrupted_balance(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    report = await check_invariants(engine)
    assert (report.ok, report.violations, report.accounts, report.transfers) == (True, [], 2, 1)

    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE ledger_accounts SET posted_balance = posted_balance + 1 WHERE id = :id"), {"id": P1}
        )
    report = await check_invariants(engine)
    assert not report.ok
    assert any("EUR: posted balances sum to 1" in v for v in report.violations)
    assert any(v.startswith(f"{P1}: stored") for v in report.violations)
    with pytest.raises(AssertionError, match="sum to 1"):
        await assert_invariants(engine)


async def test_invariants_report_pending_drift(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    await ledger.hold(payout_req("po_1", 400))
    await assert_invariants(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE ledger_transfers SET status = 'voided' WHERE id = 'payout:po_1:hold'"))
    report = await check_invariants(engine)
    assert not report.ok
    assert any(v.startswith(f"{P1}: stored") for v in report.violations)
    assert any(v.startswith(f"{PSP}: stored") for v in report.violations)


async def test_invariants_report_a_payment_credited_twice(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.post_transfer(deposit_req("pay_1", 1000))
    await ledger.post_transfer(TransferRequest("deposit:pay_1:again", PSP, P1, 1000, "EUR", "deposit", "pay_1"))
    report = await check_invariants(engine)
    assert report.violations == ["payment pay_1: credited 2 times (posted deposit transfers)"]


# ---- concurrency ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["post_transfer", "hold"])
async def test_concurrent_debits_never_overdraw(fresh_db: Any, operation: str) -> None:
    engine = fresh_db.engine(pool_size=20)
    try:
        ledger = Ledger(engine)
        await ledger.post_transfer(deposit_req("pay_1", 500))
        method = getattr(ledger, operation)
        results = await asyncio.gather(*(method(bet_req(f"b{i}", 10)) for i in range(100)), return_exceptions=True)
        unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, InsufficientFunds)]
        assert unexpected == []
        assert sum(isinstance(r, Transfer) for r in results) == 50
        assert sum(isinstance(r, InsufficientFunds) for r in results) == 50
        player = await ledger.account_balance(P1)
        assert player is not None and player.available == 0
        assert await count_transfers(engine) == 51
        await assert_invariants(engine)
    finally:
        await engine.dispose()


async def test_concurrent_replays_post_once(fresh_db: Any) -> None:
    engine = fresh_db.engine(pool_size=20)
    try:
        ledger = Ledger(engine)
        results = await asyncio.gather(*(ledger.post_transfer(deposit_req("pay_1", 700)) for _ in range(20)))
        assert sum(not r.replayed for r in results) == 1
        assert {(r.id, r.amount, r.status, r.created_at) for r in results} == {
            ("deposit:pay_1:credit", 700, "posted", results[0].created_at)
        }
        assert await balances(ledger, P1, PSP) == [(700, 0, 0), (-700, 0, 0)]
        assert await count_transfers(engine) == 1
        await assert_invariants(engine)
    finally:
        await engine.dispose()


async def test_concurrent_first_deposits_create_the_account_once(fresh_db: Any) -> None:
    engine = fresh_db.engine(pool_size=20)
    try:
        ledger = Ledger(engine)
        await asyncio.gather(*(ledger.post_transfer(deposit_req(f"pay_{i}", 10)) for i in range(20)))
        assert await balances(ledger, P1, PSP) == [(200, 0, 0), (-200, 0, 0)]
        await assert_invariants(engine)
    finally:
        await engine.dispose()


async def test_concurrent_post_and_void_resolve_a_hold_once(fresh_db: Any) -> None:
    engine = fresh_db.engine(pool_size=20)
    try:
        ledger = Ledger(engine)
        await ledger.post_transfer(deposit_req("pay_1", 1000))
        holds = [f"payout:po_{i}:hold" for i in range(10)]
        for i in range(10):
            await ledger.hold(payout_req(f"po_{i}", 100))
        calls = [call for h in holds for call in (ledger.post_hold(h), ledger.void_hold(h))]
        results = await asyncio.gather(*calls, return_exceptions=True)
        posted = 0
        for i, h in enumerate(holds):
            post_result, void_result = results[2 * i], results[2 * i + 1]
            winners = [r for r in (post_result, void_result) if isinstance(r, Transfer)]
            losers = [r for r in (post_result, void_result) if isinstance(r, HoldAlreadyResolved)]
            assert len(winners) == 1 and len(losers) == 1, (h, post_result, void_result)
            assert winners[0].replayed is False
            final = await ledger.get_transfer(h)
            assert final is not None and final.status == winners[0].status == losers[0].status
            posted += final.status == "posted"
        assert await balances(ledger, P1) == [(1000 - 100 * posted, 0, 0)]
        await assert_invariants(engine)
    finally:
        await engine.dispose()


# ---- PostgreSQL connection handling ---------------------------------------------------------------------


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()


@pytest.mark.postgres
async def test_a_connection_dropped_under_a_write_is_retried() -> None:
    """The worker's engine has no pre-ping: a pooled connection killed by the server fails its next write,
    which runs again on a new connection (writes are idempotent by id)."""
    async with FreshDatabase("postgres", Path(".")) as db:
        engine = create_engine(db.url, schema=db.schema, pool_size=1, pre_ping=False)
        admin = db.engine(pool_size=1)
        try:
            ledger = Ledger(engine)
            await ledger.post_transfer(deposit_req("pay_1", 500))  # both accounts known: the one-statement path
            async with admin.connect() as conn:
                killed = (await conn.execute(text("SELECT pg_terminate_backend(:pid)"),
                                             {"pid": await _backend_pid(engine)})).scalar_one()
            assert killed is True
            await asyncio.sleep(0.1)  # let the server close the socket
            posted = await ledger.post_transfer(deposit_req("pay_2", 300))
            held = await ledger.hold(payout_req("po_1", 100))
            assert (posted.replayed, held.replayed) == (False, False)
            assert await balances(ledger, P1, PSP) == [(800, 100, 0), (-800, 0, 100)]
            await assert_invariants(engine)
        finally:
            await engine.dispose()
            await admin.dispose()


async def test_tables_emptied_under_an_engine_take_a_new_ledger(engine: AsyncEngine) -> None:
    """A Ledger remembers the accounts it saw for its lifetime (accounts are never deleted). A test that empties the
    tables starts over with a new Ledger, which creates the accounts again."""
    await Ledger(engine).post_transfer(deposit_req("pay_1", 500))
    async with engine.begin() as conn:
        await conn.execute(ledger_transfers.delete())
        await conn.execute(ledger_accounts.delete())
    ledger = Ledger(engine)
    await ledger.post_transfer(deposit_req("pay_2", 300))
    assert await balances(ledger, P1, PSP) == [(300, 0, 0), (-300, 0, 0)]
    await assert_invariants(engine)
