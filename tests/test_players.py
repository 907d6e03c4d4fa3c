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
from activities.screening import RiskScreening
from api.app import create_app
from ledger import Ledger
from payloop.money import parse_rates
from payloop.settings import Settings
from players import (
    LIMIT_INCREASE_DELAY,
    KycStatus,
    LimitPeriod,
    LimitState,
    LimitUsage,
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
from risk.config import load_risk
from risk.geo import IpCountries
from workflows.types import ScreenDepositInput

NOW = datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)
DAY = LimitPeriod.DAY
TICK = timedelta(microseconds=1)
# One US dollar is worth 0.92 euro, one pound 1.17; nothing else has a rate.
RATES = parse_rates("USD=0.92,GBP=1.17")


# --- screening (pure) ---

def _screen_pure(
    amount_minor: int, currency: str, *limits: LimitUsage, controls: PlayerControls | None = None,
    at: datetime = NOW,
) -> tuple[str, str | None]:
    decision = screen_deposit(controls or PlayerControls("p"), amount_minor, currency, limits, RATES, at)
    return decision.outcome, decision.code


def test_allows_a_player_without_controls() -> None:
    assert _screen_pure(5000, "EUR") == ("allow", None)
    assert _screen_pure(5000, "SEK") == ("allow", None)  # no limit: no rate needed


def test_self_excluded_until_a_date_then_allowed_again() -> None:
    controls = PlayerControls("p", self_excluded_until=NOW + timedelta(days=1))
    assert _screen_pure(100, "EUR", controls=controls) == ("deny", "self_excluded")
    assert _screen_pure(100, "EUR", controls=controls, at=NOW + timedelta(days=1, seconds=1)) == ("allow", None)


def test_indefinite_self_exclusion_and_closed_accounts_deny() -> None:
    assert _screen_pure(1, "EUR", controls=PlayerControls("p", self_excluded_indefinitely=True))[1] == "self_excluded"
    assert _screen_pure(1, "EUR", controls=PlayerControls("p", closed=True))[1] == "account_closed"


def test_every_limit_applies() -> None:
    day = LimitUsage("EUR", LimitPeriod.DAY, 10_000, {"EUR": 0})
    month = LimitUsage("EUR", LimitPeriod.MONTH, 5_000, {"EUR": 4_500})
    decision = screen_deposit(PlayerControls("p"), 1_000, "EUR", [day, month], RATES, NOW)
    assert decision.code == "deposit_limit_exceeded" and "month limit of 50.00 EUR" in (decision.reason or "")
    assert _screen_pure(500, "EUR", day, month) == ("allow", None)  # up to the limit exactly


def test_a_limit_counts_every_currencys_deposits_converted_into_its_own() -> None:
    # 50.00 EUR + 50.00 USD (46.00 EUR) are 96.00 EUR of a 100.00 EUR limit.
    eur_limit = LimitUsage("EUR", DAY, 10_000, {"EUR": 5_000, "USD": 5_000})
    assert _screen_pure(400, "EUR", eur_limit) == ("allow", None)
    assert _screen_pure(401, "EUR", eur_limit) == ("deny", "deposit_limit_exceeded")
    assert _screen_pure(434, "USD", eur_limit) == ("allow", None)  # 3.9928 EUR → 4.00 EUR, at the limit
    assert _screen_pure(435, "USD", eur_limit) == ("deny", "deposit_limit_exceeded")  # 4.002 EUR → 4.01 EUR
    # A limit set in dollars counts euro deposits too: 92.00 EUR are 100.00 USD.
    usd_limit = LimitUsage("USD", DAY, 10_000, {"EUR": 9_200})
    assert _screen_pure(1, "USD", usd_limit) == ("deny", "deposit_limit_exceeded")
    assert _screen_pure(1, "EUR", usd_limit) == ("deny", "deposit_limit_exceeded")  # 1 cent is 1.087 → 2 US cents
    # 91.98 EUR are 99.978… → 99.98 USD; with 0.02 USD more: at the limit.
    assert _screen_pure(1, "EUR", LimitUsage("USD", DAY, 10_000, {"EUR": 9_198})) == ("allow", None)


def test_rounding_up_never_lets_a_deposit_past_a_limit() -> None:
    # 1 US cent is 0.92 euro cents: counted as a whole euro cent, so 100 of them use 1.00 EUR, not 0.92 EUR.
    used = LimitUsage("EUR", DAY, 100, {"USD": 1})
    assert _screen_pure(99, "EUR", used) == ("allow", None)
    assert _screen_pure(100, "EUR", used) == ("deny", "deposit_limit_exceeded")
    assert _screen_pure(1, "USD", LimitUsage("EUR", DAY, 0, {})) == ("deny", "deposit_limit_exceeded")


def test_a_currency_without_a_rate_cannot_be_screened_against_a_limit() -> None:
    eur_limit = LimitUsage("EUR", DAY, 10_000, {})
    assert _screen_pure(100, "SEK", eur_limit) == ("deny", "fx_rate_missing")
    # An earlier deposit in a currency that has lost its rate.
    assert _screen_pure(100, "EUR", LimitUsage("EUR", DAY, 10_000, {"SEK": 100})) == ("deny", "fx_rate_missing")
    # A limit in such a currency.
    assert _screen_pure(100, "EUR", LimitUsage("SEK", DAY, 10_000, {})) == ("deny", "fx_rate_missing")
    # The same currency needs no rate.
    assert _screen_pure(100, "SEK", LimitUsage("SEK", DAY, 10_000, {"SEK": 9_900})) == ("allow", None)


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
    store = PlayerStore(engine, RATES)
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
    store = PlayerStore(engine, RATES)
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
    store = PlayerStore(engine, RATES)
    await store.set_deposit_limit("p1", "EUR", DAY, 10_000, now=NOW)
    await store.set_deposit_limit("p1", "EUR", DAY, 20_000, now=NOW)
    await store.set_deposit_limit("p1", "EUR", DAY, 9_000, now=NOW + timedelta(hours=2))
    for moment in (NOW + timedelta(hours=2), NOW + timedelta(days=3)):
        assert (await store.controls("p1", "EUR", moment)).deposit_limits == {DAY: 9_000}


async def test_self_exclusion_can_be_extended_but_never_shortened_or_lifted(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
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
    store = PlayerStore(engine, RATES)
    await store.set_self_exclusion("p1", NOW + timedelta(days=7), now=NOW)
    later = NOW + timedelta(days=8)
    assert not (await store.profile("p1", later)).self_excluded
    await store.set_self_exclusion("p1", later + timedelta(days=1), now=later)
    profile = await store.profile("p1", later)
    assert profile.self_excluded and profile.self_excluded_until == later + timedelta(days=1)


async def test_kyc_closing_and_their_audit_entries(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
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
    store = PlayerStore(engine, RATES)
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
    players = PlayerStore(engine, RATES)
    risk = RiskScreening(engine, players, load_risk(Settings()), IpCountries.load(None), RATES, clock=lambda: at)
    activities = DepositActivities(Ledger(engine), players, risk, {}, routing,
                                   HealthStore(engine, routing), clock=lambda: at)
    result = await activities.screen_deposit(ScreenDepositInput(payment_id, player, amount, "EUR"))
    await activities.release_deposit_limit(payment_id)
    return result.code


async def test_rolling_day_and_week_windows(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
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
    store = PlayerStore(engine, RATES)
    month_start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    await store.set_deposit_limit("m", "EUR", LimitPeriod.MONTH, 10_000, now=month_start - timedelta(days=40))
    await _deposit_at(engine, "m", 9_000, month_start - TICK)  # February: not counted in March
    assert await _screen(engine, "m", 10_000, month_start) is None
    await _deposit_at(engine, "m", 9_000, month_start)
    assert await _screen(engine, "m", 1_001, month_start + timedelta(days=30)) == "deposit_limit_exceeded"
    assert await _screen(engine, "m", 1_000, month_start + timedelta(days=30)) is None
    assert await _screen(engine, "m", 10_000, datetime(2026, 4, 1, tzinfo=timezone.utc)) is None


async def test_a_raised_limit_screens_with_the_old_value_until_it_takes_effect(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
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
        calls.append((player_id, status, await PlayerStore(engine, RATES).kyc_status(player_id)))

    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api", headers={"Authorization": "Bearer k"}
    ) as client:
        app.state.on_kyc_changed = on_kyc_changed  # after startup, which installs the real one
        assert (await client.put("/v1/ops/players/p1/kyc", json={"status": "verified"})).status_code == 200
        assert (await client.put("/v1/ops/players/p1/kyc", json={"status": "nope"})).status_code == 422
    assert calls == [("p1", "verified", "verified")]


async def test_concurrent_deposits_cannot_slip_past_a_limit_together(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
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


# --- limits across currencies, on both backends ---

async def _usage_rows(engine: AsyncEngine, player: str) -> list[tuple[str, str, int]]:
    usage = deposit_limit_usage.c
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(usage.payment_id, usage.currency, usage.amount_minor)
                                  .where(usage.player_id == player, usage.released_at.is_(None))
                                  .order_by(usage.payment_id))
        return [tuple(r) for r in rows]


async def test_a_limit_counts_deposits_in_every_currency(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
    await store.set_deposit_limit("fx", "EUR", DAY, 10_000, now=NOW)
    assert (await store.screen_deposit("fx", "USD", "pay_usd", 5_000, NOW)).outcome == "allow"  # 46.00 EUR
    assert (await store.screen_deposit("fx", "EUR", "pay_eur_1", 5_401, NOW)).code == "deposit_limit_exceeded"
    assert (await store.screen_deposit("fx", "EUR", "pay_eur_2", 5_400, NOW)).outcome == "allow"  # 100.00 EUR
    assert (await store.screen_deposit("fx", "GBP", "pay_gbp", 1, NOW)).code == "deposit_limit_exceeded"
    # A second limit, in dollars, applies to the same deposits: 100.00 EUR are 108.70 USD (rounded up).
    await store.release_deposit("pay_eur_2", NOW)  # 46.00 EUR left in the window: 50.00 USD
    await store.set_deposit_limit("fx", "USD", DAY, 6_000, now=NOW)
    assert (await store.screen_deposit("fx", "EUR", "pay_eur_3", 921, NOW)).code == "deposit_limit_exceeded"
    assert (await store.screen_deposit("fx", "EUR", "pay_eur_3", 920, NOW)).outcome == "allow"  # 10.00 USD
    assert await _usage_rows(engine, "fx") == [("pay_eur_3", "EUR", 920), ("pay_usd", "USD", 5_000)]


async def test_a_currency_without_a_rate_is_refused_only_while_a_limit_is_set(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
    assert (await store.screen_deposit("sek", "SEK", "pay_sek_1", 10_000, NOW)).outcome == "allow"
    await store.set_deposit_limit("sek", "EUR", DAY, 100_000, now=NOW)
    denied = await store.screen_deposit("sek", "EUR", "pay_eur", 100, NOW)  # the SEK deposit cannot be counted
    assert (denied.outcome, denied.code) == ("deny", "fx_rate_missing")
    assert (await store.screen_deposit("sek", "SEK", "pay_sek_2", 100, NOW)).code == "fx_rate_missing"
    assert await _usage_rows(engine, "sek") == [("pay_sek_1", "SEK", 10_000)]
    # With a rate for SEK, both go through.
    with_sek = PlayerStore(engine, parse_rates("SEK=0.088"))
    assert (await with_sek.screen_deposit("sek", "SEK", "pay_sek_2", 100, NOW)).outcome == "allow"


async def test_concurrent_deposits_in_two_currencies_cannot_slip_past_one_limit(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
    now = datetime.now(timezone.utc)
    await store.set_deposit_limit("fx_racer", "EUR", DAY, 10_000, now=now)
    # 23.00 EUR and 25.00 USD (23.00 EUR) alternately: 4 fit in 100.00 EUR, whichever come first.
    deposits = [("EUR", 2_300) if i % 2 else ("USD", 2_500) for i in range(10)]
    decisions = await asyncio.gather(*[
        store.screen_deposit("fx_racer", currency, f"pay_{i}", amount, now)
        for i, (currency, amount) in enumerate(deposits)
    ])
    assert [d.outcome for d in decisions].count("allow") == 4
    assert {d.code for d in decisions if d.outcome == "deny"} == {"deposit_limit_exceeded"}
    allowed = {f"pay_{i}" for i, d in enumerate(decisions) if d.outcome == "allow"}
    assert {payment_id for payment_id, _, _ in await _usage_rows(engine, "fx_racer")} == allowed


async def test_racing_deposits_of_different_sizes_fill_a_limit_and_never_pass_it(engine: AsyncEngine) -> None:
    store = PlayerStore(engine, RATES)
    now = datetime.now(timezone.utc)
    await store.set_deposit_limit("fx_sizes", "EUR", DAY, 10_000, now=now)
    # 30.00 EUR and 25.00 USD (23.00 EUR): how many fit depends on the order they are serialized in.
    deposits = [("EUR", 3_000) if i % 2 else ("USD", 2_500) for i in range(10)]
    decisions = await asyncio.gather(*[
        store.screen_deposit("fx_sizes", currency, f"pay_{i}", amount, now)
        for i, (currency, amount) in enumerate(deposits)
    ])
    in_eur = {"EUR": 3_000, "USD": 2_300}
    counted = await _usage_rows(engine, "fx_sizes")
    assert {p for p, _, _ in counted} == {f"pay_{i}" for i, d in enumerate(decisions) if d.outcome == "allow"}
    used_minor = sum(in_eur[currency] for _, currency, _ in counted)
    assert used_minor <= 10_000
    # Usage only grows during the race, so a deposit refused then would not fit in what is left now either.
    refused = [in_eur[currency] for (currency, _), d in zip(deposits, decisions) if d.outcome == "deny"]
    assert refused and all(used_minor + minor > 10_000 for minor in refused)
