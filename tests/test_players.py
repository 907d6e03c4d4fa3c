"""Responsible-gaming controls with explicit clocks (no sleeps): screening, limit changes that wait 24 h,
self-exclusion that cannot be shortened, KYC, closed accounts, and race-free limit changes on both backends."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.deposit import DepositActivities
from api.app import create_app
from ledger import Ledger
from payloop.settings import Settings
from players import (
    LIMIT_INCREASE_DELAY,
    KycStatus,
    LimitPeriod,
    LimitState,
    PlayerControls,
    PlayerRuleError,
    PlayerStore,
    audit,
    change_limit,
    screen_deposit,
    window_start,
)
from players.controls import deposit_limit_usage, player_deposit_limits
from psp.routing import load_routing
from psp.routing.health import HealthStore
from workflows.types import ScreenDepositInput

NOW = datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)
DAY = LimitPeriod.DAY
TICK = timedelta(microseconds=1)


# --- screening (pure) ---

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
    # A month window starts at the UTC month start whatever the clock's zone.
    berlin = NOW.astimezone(timezone(timedelta(hours=1)))
    assert window_start(LimitPeriod.MONTH, berlin) == datetime(2026, 3, 1, tzinfo=timezone.utc)


# --- limit changes (pure) ---

def test_first_limit_and_decrease_apply_at_once() -> None:
    assert change_limit(LimitState(), 10_000, NOW) == LimitState(10_000)
    assert change_limit(LimitState(10_000), 8_000, NOW) == LimitState(8_000)
    assert change_limit(LimitState(), None, NOW) == LimitState()


def test_increase_and_removal_wait_24_hours() -> None:
    due = NOW + LIMIT_INCREASE_DELAY
    raised = change_limit(LimitState(10_000), 20_000, NOW)
    assert raised == LimitState(10_000, due, 20_000)
    assert raised.at(due - TICK).amount_minor == 10_000 and raised.at(due).amount_minor == 20_000
    removed = change_limit(LimitState(10_000), None, NOW)
    assert removed.at(due - TICK).amount_minor == 10_000 and removed.at(due).amount_minor is None


def test_pending_changes_keep_or_restart_their_wait() -> None:
    raised = change_limit(LimitState(10_000), 20_000, NOW)
    later = NOW + timedelta(hours=5)
    assert change_limit(raised, 20_000, later) == raised  # a retry does not restart the wait
    assert change_limit(raised, 15_000, later).pending_effective_at == later + LIMIT_INCREASE_DELAY
    assert change_limit(raised, 9_000, later) == LimitState(9_000)  # a decrease cancels the pending increase
    assert change_limit(raised, 10_000, later) == LimitState(10_000)  # so does confirming the current value
    # Once a removal has taken effect, a new limit is a first limit again: at once.
    removed = change_limit(LimitState(10_000), None, NOW)
    assert change_limit(removed, 50_000, NOW + LIMIT_INCREASE_DELAY) == LimitState(50_000)


# --- the store, on both backends ---

async def test_decrease_is_immediate_and_increase_waits_exactly_24_hours(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    await store.set_deposit_limit("p1", "EUR", DAY, 10_000, now=NOW)
    await store.set_deposit_limit("p1", "EUR", DAY, 8_000, now=NOW)
    assert (await store.controls("p1", "EUR", NOW)).deposit_limits == {DAY: 8_000}

    asked = NOW + timedelta(hours=1)
    await store.set_deposit_limit("p1", "EUR", DAY, 30_000, now=asked)
    due = asked + timedelta(hours=24)
    assert (await store.controls("p1", "EUR", due - TICK)).deposit_limits == {DAY: 8_000}
    assert (await store.controls("p1", "EUR", due)).deposit_limits == {DAY: 30_000}
    assert (await store.controls("p1", "USD", due)).deposit_limits == {}

    profile = await store.profile("p1", due - TICK)
    [limit] = profile.deposit_limits
    assert limit.state == LimitState(8_000, due, 30_000)
    assert (await store.profile("p1", due)).deposit_limits[0].state == LimitState(30_000)


async def test_removal_takes_effect_after_24_hours(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    await store.set_deposit_limit("p1", "EUR", LimitPeriod.WEEK, 50_000, now=NOW)
    await store.set_deposit_limit("p1", "EUR", LimitPeriod.WEEK, None, now=NOW)
    due = NOW + LIMIT_INCREASE_DELAY
    assert (await store.controls("p1", "EUR", due - TICK)).deposit_limits == {LimitPeriod.WEEK: 50_000}
    assert (await store.controls("p1", "EUR", due)).deposit_limits == {}
    assert (await store.profile("p1", due)).deposit_limits == []
    # After the removal, a new limit is a first limit: in force at once.
    await store.set_deposit_limit("p1", "EUR", LimitPeriod.WEEK, 70_000, now=due)
    assert (await store.controls("p1", "EUR", due)).deposit_limits == {LimitPeriod.WEEK: 70_000}


async def test_a_decrease_cancels_a_pending_increase(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    await store.set_deposit_limit("p1", "EUR", DAY, 10_000, now=NOW)
    await store.set_deposit_limit("p1", "EUR", DAY, 20_000, now=NOW)
    await store.set_deposit_limit("p1", "EUR", DAY, 9_000, now=NOW + timedelta(hours=2))
    for moment in (NOW + timedelta(hours=2), NOW + timedelta(days=3)):
        assert (await store.controls("p1", "EUR", moment)).deposit_limits == {DAY: 9_000}


async def test_self_exclusion_can_be_extended_but_never_shortened_or_lifted(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    with pytest.raises(PlayerRuleError) as past:
        await store.set_self_exclusion("p1", NOW - timedelta(seconds=1), now=NOW)
    assert past.value.code == "self_exclusion_in_past"

    month = NOW + timedelta(days=30)
    await store.set_self_exclusion("p1", month, now=NOW)
    for shorter in (NOW + timedelta(days=29), month - TICK):
        with pytest.raises(PlayerRuleError) as refused:
            await store.set_self_exclusion("p1", shorter, now=NOW)
        assert refused.value.code == "self_exclusion_active"
    await store.set_self_exclusion("p1", month, now=NOW)  # the same end again is fine (a retry)
    await store.set_self_exclusion("p1", month + timedelta(days=30), now=NOW)
    assert (await store.controls("p1", "EUR", NOW)).self_excluded_until == month + timedelta(days=30)

    await store.set_self_exclusion("p1", None, now=NOW)  # indefinitely: the longest there is
    with pytest.raises(PlayerRuleError):
        await store.set_self_exclusion("p1", NOW + timedelta(days=3650), now=NOW)
    controls = await store.controls("p1", "EUR", NOW + timedelta(days=3650))
    assert controls.self_excluded(NOW + timedelta(days=3650))


async def test_an_ended_self_exclusion_can_be_set_again(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    await store.set_self_exclusion("p1", NOW + timedelta(days=7), now=NOW)
    later = NOW + timedelta(days=8)
    assert not (await store.profile("p1", later)).self_excluded
    await store.set_self_exclusion("p1", later + timedelta(days=1), now=later)
    profile = await store.profile("p1", later)
    assert profile.self_excluded and profile.self_excluded_until == later + timedelta(days=1)


async def test_kyc_closing_and_their_audit_entries(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    assert await store.kyc_status("nobody") == "unverified"
    assert (await store.profile("nobody", NOW)).kyc_status == "unverified"
    await store.set_kyc_status("p1", KycStatus.VERIFIED, now=NOW, actor="ops-1", note="passport checked")
    await store.set_closed("p1", True, now=NOW, actor="ops-1")
    assert await store.kyc_status("p1") == "verified"
    assert (await store.controls("p1", "EUR", NOW)).closed
    await store.set_closed("p1", False, now=NOW, actor="ops-1")
    assert not (await store.profile("p1", NOW)).closed

    entries = await audit.entries(engine, "player:p1")
    assert [e["action"] for e in entries] == ["player.reopen", "player.close", "player.kyc.set"]
    assert entries[-1]["details"] == {"status": "verified", "note": "passport checked"}
    assert {e["actor"] for e in entries} == {"ops-1"}


async def test_concurrent_limit_changes_serialize_into_one_consistent_history(engine: AsyncEngine) -> None:
    """Every change is applied exactly once, each on top of the previous one: the audit chain proves it."""
    store = PlayerStore(engine)
    requests = [(period, amount) for period in (DAY, LimitPeriod.MONTH)
                for amount in (5_000, 20_000, None, 7_000, 30_000, 6_000, None, 40_000)]
    results = await asyncio.gather(*(
        store.set_deposit_limit("p-race", "EUR", period, amount, now=NOW, actor="c") for period, amount in requests
    ))
    assert len(results) == len(requests)

    entries = list(reversed(await audit.entries(engine, "player:p-race")))
    async with engine.connect() as conn:
        rows = {r.period: r for r in await conn.execute(sa.select(player_deposit_limits))}
    for period in (DAY, LimitPeriod.MONTH):
        chain = [e["details"] for e in entries if e["details"]["period"] == period.value]
        assert len(chain) == 8
        previous = LimitState().as_dict()
        for details in chain:
            assert details["before"] == previous  # nothing lost, nothing applied twice
            previous = details["after"]
        final = LimitState(rows[period.value].amount_minor, rows[period.value].pending_effective_at,
                           rows[period.value].pending_amount_minor)
        assert final.as_dict() == previous
        # The first write created the row (version 0), each later one bumped it once; removing a limit that
        # is not there writes nothing.
        writes = [d for d in chain if not (d["before"]["amount_minor"] is None and d["requested_minor"] is None)]
        assert rows[period.value].version == len(writes) - 1


# --- limits over their windows, through the screening activity with an explicit clock ---

async def _deposit_at(engine: AsyncEngine, player: str, amount: int, at: datetime) -> None:
    """A deposit screened (and so counted) at `at`."""
    async with engine.begin() as conn:
        await conn.execute(deposit_limit_usage.insert().values(
            payment_id=f"pay_{uuid.uuid4().hex[:24]}", player_id=player, currency="EUR", amount_minor=amount,
            created_at=at))


async def _screen(engine: AsyncEngine, player: str, amount: int, at: datetime) -> str | None:
    """Screens a probe deposit at `at`, then releases it so probes do not count against each other."""
    payment_id = f"pay_{uuid.uuid4().hex[:24]}"
    routing = load_routing(Settings())
    activities = DepositActivities(Ledger(engine), PlayerStore(engine), {}, routing, HealthStore(engine, routing),
                                   clock=lambda: at)
    result = await activities.screen_deposit(ScreenDepositInput(payment_id, player, amount, "EUR"))
    await activities.release_deposit_limit(payment_id)
    return result.code


async def test_rolling_day_and_week_windows(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    await store.set_deposit_limit("d", "EUR", DAY, 10_000, now=NOW - timedelta(days=30))
    await _deposit_at(engine, "d", 10_000, NOW - timedelta(hours=24))
    assert await _screen(engine, "d", 1, NOW) == "deposit_limit_exceeded"  # exactly 24 h ago still counts
    assert await _screen(engine, "d", 10_000, NOW + TICK) is None  # a moment later it has rolled out

    await store.set_deposit_limit("w", "EUR", LimitPeriod.WEEK, 10_000, now=NOW - timedelta(days=30))
    await _deposit_at(engine, "w", 6_000, NOW - timedelta(days=6, hours=23))
    await _deposit_at(engine, "w", 4_000, NOW - timedelta(days=1))
    assert await _screen(engine, "w", 1, NOW) == "deposit_limit_exceeded"
    assert await _screen(engine, "w", 6_000, NOW + timedelta(hours=1, microseconds=1)) is None


async def test_month_window_starts_at_the_utc_month_start(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    month_start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    await store.set_deposit_limit("m", "EUR", LimitPeriod.MONTH, 10_000, now=month_start - timedelta(days=40))
    await _deposit_at(engine, "m", 9_000, month_start - TICK)  # February: not counted in March
    assert await _screen(engine, "m", 10_000, month_start) is None
    await _deposit_at(engine, "m", 9_000, month_start)
    assert await _screen(engine, "m", 1_001, month_start + timedelta(days=30)) == "deposit_limit_exceeded"
    assert await _screen(engine, "m", 1_000, month_start + timedelta(days=30)) is None
    assert await _screen(engine, "m", 10_000, datetime(2026, 4, 1, tzinfo=timezone.utc)) is None


async def test_a_raised_limit_screens_with_the_old_value_until_it_takes_effect(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    await store.set_deposit_limit("r", "EUR", DAY, 10_000, now=NOW - timedelta(days=1))
    await store.set_deposit_limit("r", "EUR", DAY, 20_000, now=NOW)
    await _deposit_at(engine, "r", 9_000, NOW + timedelta(hours=23))
    due = NOW + LIMIT_INCREASE_DELAY
    assert await _screen(engine, "r", 2_000, due - TICK) == "deposit_limit_exceeded"
    assert await _screen(engine, "r", 2_000, due) is None


# --- the API's KYC hook (the withdrawal side sets it to wake waiting payouts) ---

async def test_a_kyc_change_calls_the_hook_after_it_is_stored(engine: AsyncEngine) -> None:
    app = create_app(Settings(api_keys="k:back-office:ops"), engine=engine, temporal=object())  # type: ignore[arg-type]
    calls: list[tuple[str, str, str]] = []

    async def on_kyc_changed(player_id: str, status: str) -> None:
        calls.append((player_id, status, await PlayerStore(engine).kyc_status(player_id)))

    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api", headers={"Authorization": "Bearer k"}
    ) as client:
        app.state.on_kyc_changed = on_kyc_changed  # after startup, which installs the real one
        assert (await client.put("/v1/ops/players/p1/kyc", json={"status": "verified"})).status_code == 200
        assert (await client.put("/v1/ops/players/p1/kyc", json={"status": "nope"})).status_code == 422
    assert calls == [("p1", "verified", "verified")]


async def test_concurrent_deposits_cannot_slip_past_a_limit_together(engine: AsyncEngine) -> None:
    store = PlayerStore(engine)
    now = datetime.now(timezone.utc)
    await store.set_deposit_limit("racer", "EUR", LimitPeriod.DAY, 10_000, now=now)
    decisions = await asyncio.gather(*[
        store.screen_deposit("racer", "EUR", f"pay_{i}", 3_000, now) for i in range(10)
    ])
    assert [d.outcome for d in decisions].count("allow") == 3
    assert {d.code for d in decisions if d.outcome == "deny"} == {"deposit_limit_exceeded"}
    # Screening the same payment again (an activity retry) neither double-counts nor refuses it.
    allowed = [f"pay_{i}" for i, d in enumerate(decisions) if d.outcome == "allow"]
    assert (await store.screen_deposit("racer", "EUR", allowed[0], 3_000, now)).outcome == "allow"
    # A deposit that ended without money stops counting.
    assert (await store.screen_deposit("racer", "EUR", "pay_late", 1_000, now)).outcome == "allow"
    assert (await store.screen_deposit("racer", "EUR", "pay_later", 1_000, now)).code == "deposit_limit_exceeded"
    await store.release_deposit(allowed[0], now)
    assert (await store.screen_deposit("racer", "EUR", "pay_later", 1_000, now)).outcome == "allow"
    # Usage older than the window no longer counts.
    tomorrow = now + timedelta(hours=24, seconds=1)
    assert (await store.screen_deposit("racer", "EUR", "pay_tomorrow", 10_000, tomorrow)).outcome == "allow"
