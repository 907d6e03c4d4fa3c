"""Responsible-gaming screening: self-exclusion and deposit limits, with an explicit clock (no sleeps)."""

from datetime import datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import Ledger, TransferRequest, player_account, psp_clearing_account
from payloop.players import LimitPeriod, PlayerControls, PlayerStore, screen_deposit, window_start

NOW = datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)


def test_allows_a_player_without_controls() -> None:
    assert screen_deposit(PlayerControls("p"), 5000, {}, NOW).outcome == "allow"


def test_self_excluded_until_a_date_then_allowed_again() -> None:
    controls = PlayerControls("p", self_excluded_until=NOW + timedelta(days=1))
    assert screen_deposit(controls, 100, {}, NOW).code == "self_excluded"
    assert screen_deposit(controls, 100, {}, NOW + timedelta(days=1, seconds=1)).outcome == "allow"


def test_indefinite_self_exclusion_and_closed_accounts_deny() -> None:
    assert screen_deposit(PlayerControls("p", self_excluded_indefinitely=True), 1, {}, NOW).code == "self_excluded"
    assert screen_deposit(PlayerControls("p", closed=True), 1, {}, NOW).code == "account_closed"


def test_the_lowest_applicable_limit_wins() -> None:
    controls = PlayerControls("p", deposit_limits={LimitPeriod.DAY: 10_000, LimitPeriod.MONTH: 5_000})
    decision = screen_deposit(controls, 1_000, {LimitPeriod.DAY: 0, LimitPeriod.MONTH: 4_500}, NOW)
    assert decision.code == "deposit_limit_exceeded" and "month" in (decision.reason or "")
    assert screen_deposit(controls, 500, {LimitPeriod.DAY: 0, LimitPeriod.MONTH: 4_500}, NOW).outcome == "allow"


def test_windows() -> None:
    assert window_start(LimitPeriod.DAY, NOW) == NOW - timedelta(hours=24)
    assert window_start(LimitPeriod.WEEK, NOW) == NOW - timedelta(days=7)
    assert window_start(LimitPeriod.MONTH, NOW) == datetime(2026, 3, 1, tzinfo=timezone.utc)


async def test_store_round_trip_and_limits_against_the_ledger(engine: AsyncEngine) -> None:
    store, ledger = PlayerStore(engine), Ledger(engine)
    await store.upsert("p1", now=NOW, self_excluded_until=NOW + timedelta(hours=1))
    await store.set_deposit_limit("p1", "EUR", LimitPeriod.DAY, 10_000, now=NOW)
    await store.set_deposit_limit("p1", "EUR", LimitPeriod.DAY, 8_000, now=NOW)
    controls = await store.controls("p1", "EUR")
    assert controls.self_excluded(NOW) and not controls.self_excluded(NOW + timedelta(hours=2))
    assert controls.deposit_limits == {LimitPeriod.DAY: 8_000}
    assert (await store.controls("p1", "USD")).deposit_limits == {}

    await ledger.post_transfer(TransferRequest("deposit:x:credit", psp_clearing_account("card", "EUR"),
                                               player_account("p1", "EUR"), 7_000, "EUR", "deposit", "x"))
    since = datetime.now(timezone.utc) - timedelta(hours=24)
    deposited = await ledger.credited_since(player_account("p1", "EUR"), "deposit", since)
    later = NOW + timedelta(hours=2)
    assert screen_deposit(controls, 1_000, {LimitPeriod.DAY: deposited}, later).outcome == "allow"
    assert screen_deposit(controls, 1_001, {LimitPeriod.DAY: deposited}, later).code == "deposit_limit_exceeded"
