"""What the checkout's pages stand on, without a stack: the deposit limits left (on SQLite and PostgreSQL), where a
payout would go, the signing keys' start-up checks, the per-session rate limit (in memory and on a real Redis)
and what each status says to a player. Over HTTP: tests/e2e/test_checkout_http.py."""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.checkout import i18n
from api.checkout.messages import (
    DEPOSIT_CODES,
    DEPOSIT_FAILURES,
    DEPOSIT_STATUSES,
    FORM_ERRORS,
    PAYOUT_CODES,
    PAYOUT_FAILURES,
    PAYOUT_STATUSES,
    Outcome,
    deposit_outcome,
    payout_outcome,
)
from api.rate_limits import RateLimits
from entrypoints.startup import Role, refusal, startup_problems
from payloop.money import parse_rates
from payloop.settings import DEV_CHECKOUT_SIGNING_KEY, Settings
from players import LimitPeriod, PlayerStore
from psp.routing import CircuitState, RoutingConfig, parse_routing, payout_choice
from tests.conftest import redis_url
from workflows.types import DepositStatus, PayoutStatus

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=timezone.utc)
USD_IN_EUR = Decimal("0.92")
RATES = parse_rates(f"USD={USD_IN_EUR}")  # SEK has no rate


# --- deposit limits left ---------------------------------------------------------------------------------------


async def _deposit(store: PlayerStore, player: str, currency: str, amount_minor: int, at: datetime) -> str:
    """A deposit screening allowed (so counted against the limits), as the deposit workflow's screening does."""
    payment_id = f"pay_{uuid.uuid4().hex[:24]}"
    decision = await store.screen_deposit(player, currency, payment_id, amount_minor, at)
    assert decision.outcome == "allow", decision
    return payment_id


async def test_headroom_counts_every_currency_in_each_limit_s_window_and_not_released_deposits(
    engine: AsyncEngine,
) -> None:
    store = PlayerStore(engine, RATES)
    player = "p-headroom"
    for currency, period, limit_minor in (("EUR", LimitPeriod.DAY, 100_00), ("USD", LimitPeriod.WEEK, 500_00),
                                          ("EUR", LimitPeriod.MONTH, 1000_00)):
        await store.set_deposit_limit(player, currency, period, limit_minor, now=NOW - timedelta(days=10))
    await _deposit(store, player, "EUR", 25_00, NOW - timedelta(days=2))  # in the week and month, not the day
    await _deposit(store, player, "EUR", 30_00, NOW - timedelta(hours=1))
    await _deposit(store, player, "USD", 20_00, NOW - timedelta(hours=1))
    failed = await _deposit(store, player, "EUR", 40_00, NOW - timedelta(minutes=30))
    await store.release_deposit(failed, NOW - timedelta(minutes=20))  # ended without money: not counted

    headroom = await store.deposit_headroom(player, NOW)

    usd_in_eur = math.ceil(20_00 * USD_IN_EUR)  # each foreign sum rounded up, never in the player's favour
    eur_in_usd = math.ceil((25_00 + 30_00) / USD_IN_EUR)
    assert [(h.period, h.currency, h.limit_minor, h.remaining_minor) for h in headroom] == [
        (LimitPeriod.DAY, "EUR", 100_00, 100_00 - 30_00 - usd_in_eur),
        (LimitPeriod.WEEK, "USD", 500_00, 500_00 - 20_00 - eur_in_usd),
        (LimitPeriod.MONTH, "EUR", 1000_00, 1000_00 - 25_00 - 30_00 - usd_in_eur),
    ]


async def test_headroom_is_unknown_where_a_deposit_s_currency_has_no_rate_and_never_below_zero(
    engine: AsyncEngine,
) -> None:
    store = PlayerStore(engine, RATES)
    player = "p-no-rate"
    assert await store.deposit_headroom(player, NOW) == []
    await _deposit(store, player, "SEK", 100_00, NOW - timedelta(hours=2))  # before any limit: no rate needed
    await _deposit(store, player, "USD", 80_00, NOW - timedelta(hours=2))
    for currency, period, limit_minor in (("EUR", LimitPeriod.DAY, 100_00), ("SEK", LimitPeriod.WEEK, 50_00),
                                          ("USD", LimitPeriod.MONTH, 5000_00)):
        await store.set_deposit_limit(player, currency, period, limit_minor, now=NOW - timedelta(hours=1))

    headroom = {h.period: h for h in await store.deposit_headroom(player, NOW)}

    assert (headroom[LimitPeriod.DAY].limit_minor, headroom[LimitPeriod.DAY].remaining_minor) == (100_00, None)
    assert headroom[LimitPeriod.WEEK].remaining_minor is None  # the USD deposit cannot be told in SEK either
    assert headroom[LimitPeriod.MONTH].remaining_minor is None
    only_sek = "p-only-sek"
    await _deposit(store, only_sek, "SEK", 100_00, NOW - timedelta(hours=2))
    await store.set_deposit_limit(only_sek, "SEK", LimitPeriod.WEEK, 50_00, now=NOW - timedelta(hours=1))
    [sek] = await store.deposit_headroom(only_sek, NOW)
    assert (sek.currency, sek.remaining_minor) == ("SEK", 0)  # its own currency needs no rate; spent past it


# --- where a payout goes ---------------------------------------------------------------------------------------

PAYOUT_WORLD = """\
psps:
  - name: card
    methods: [card]
    payout_methods: [card]
    countries: ["*"]
    currencies: [EUR]
    payout_cost: {fixed: "0.50"}
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
  - name: card_b
    methods: [card]
    payout_methods: [card]
    countries: ["*"]
    currencies: [EUR]
    payout_cost: {fixed: "0.60"}
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
  - name: ewallet
    methods: [ewallet]
    payout_methods: [ewallet]
    countries: ["*"]
    currencies: [EUR]
    payout_cost: {percentage: "1.0"}
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
  - name: crypto
    methods: [crypto]
    payout_methods: [crypto]
    countries: ["*"]
    currencies: [EUR]
    amounts: {EUR: {min: "10.00"}}
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
  - name: voucher
    methods: [voucher]
    countries: ["*"]
    currencies: [EUR]
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
"""
EVERY_PSP = frozenset({"card", "card_b", "ewallet", "crypto", "voucher"})


@pytest.fixture(scope="module")
def world() -> RoutingConfig:
    return parse_routing(PAYOUT_WORLD, "payout-world.yaml")


def _choice(world: RoutingConfig, deposit_psp: str | None, *, fallback: tuple[str, ...] = ("ewallet",),
            amount_minor: int = 50_00, currency: str = "EUR", available: frozenset[str] = EVERY_PSP,
            health: dict[str, CircuitState] | None = None) -> tuple[str, str] | None:
    """(method, PSP) of payout_choice, or None."""
    choice = payout_choice(world, deposit_psp=deposit_psp, fallback_methods=fallback, currency=currency,
                           amount_minor=amount_minor, country="DE", available=available, health=health or {})
    return None if choice is None else (choice[0], choice[1].psp)


def test_a_payout_goes_back_through_the_deposit_s_psp_first_even_when_another_is_cheaper(
    world: RoutingConfig,
) -> None:
    assert _choice(world, "card_b") == ("card", "card_b")
    assert _choice(world, "ewallet", fallback=("card",)) == ("ewallet", "ewallet")
    method, candidate = payout_choice(world, deposit_psp="card_b", fallback_methods=(), currency="EUR",
                                      amount_minor=50_00, country="DE", available=EVERY_PSP, health={}) or ("", None)
    assert candidate is not None and candidate.fee_minor == 60 and "closed loop" in candidate.reason


def test_with_the_deposit_s_psp_open_or_gone_the_payout_takes_the_next_psp_of_that_method(
    world: RoutingConfig,
) -> None:
    assert _choice(world, "card_b", health={"card_b": CircuitState.OPEN}) == ("card", "card")
    assert _choice(world, "card_b", available=EVERY_PSP - {"card_b"}) == ("card", "card")
    assert _choice(world, "card_b", health={"card_b": CircuitState.HALF_OPEN}) == ("card", "card_b")  # a probe


def test_without_a_closed_loop_route_the_fallback_methods_are_used(world: RoutingConfig) -> None:
    assert _choice(world, None) == ("ewallet", "ewallet")  # never deposited
    assert _choice(world, "voucher") == ("ewallet", "ewallet")  # its PSP pays nothing out
    assert _choice(world, "crypto", amount_minor=5_00) == ("ewallet", "ewallet")  # below crypto's payout minimum
    assert _choice(world, "crypto", amount_minor=50_00) == ("crypto", "crypto")
    assert _choice(world, "unknown_psp") == ("ewallet", "ewallet")  # a PSP since removed from the file


def test_when_no_psp_pays_it_out_there_is_no_choice(world: RoutingConfig) -> None:
    assert _choice(world, None, fallback=()) is None
    assert _choice(world, "voucher", fallback=("voucher",)) is None
    assert _choice(world, "card", currency="USD", fallback=("card", "ewallet")) is None
    assert _choice(world, "card", available=frozenset({"voucher"})) is None


# --- the signing keys at start-up ------------------------------------------------------------------------------

GOOD_KEY = "k" * 32
OTHER_GOOD_KEY = "o" * 40


def _checkout_key_problems(keys: str, role: Role) -> list[str]:
    problems = startup_problems(Settings(checkout_signing_keys=keys), role)
    return [why for name, why in problems if name == "PAYLOOP_CHECKOUT_SIGNING_KEYS"]


@pytest.mark.parametrize(("keys", "problem"), [
    (DEV_CHECKOUT_SIGNING_KEY, "built-in"),
    (f"{GOOD_KEY},{DEV_CHECKOUT_SIGNING_KEY}", "built-in"),  # kept as the old key of a rotation
    ("", "no key is set"),
    (" , ", "no key is set"),
    ("short-key", "shorter than 32"),
    (f"{GOOD_KEY},{'k' * 31}", "shorter than 32"),
])
def test_the_api_refuses_a_built_in_missing_or_short_signing_key(keys: str, problem: str) -> None:
    [why] = _checkout_key_problems(keys, "api")
    assert problem in why
    message = refusal(Settings(checkout_signing_keys=keys), "api")
    assert message is not None and "PAYLOOP_CHECKOUT_SIGNING_KEYS" in message
    dev = refusal(Settings(checkout_signing_keys=keys, dev_mode=True), "api")
    assert dev is None or "PAYLOOP_CHECKOUT_SIGNING_KEYS" not in dev


@pytest.mark.parametrize("keys", [GOOD_KEY, f"{GOOD_KEY},{OTHER_GOOD_KEY}", f" {GOOD_KEY} "])
def test_the_api_takes_long_keys_one_or_rotating(keys: str) -> None:
    assert _checkout_key_problems(keys, "api") == []


@pytest.mark.parametrize("keys", [DEV_CHECKOUT_SIGNING_KEY, "", "short-key"])
def test_the_worker_signs_no_checkout_url_so_its_keys_are_not_checked(keys: str) -> None:
    assert _checkout_key_problems(keys, "worker") == []


# --- the per-session rate limit --------------------------------------------------------------------------------


def _limits(**overrides: object) -> RateLimits:
    return RateLimits(Settings(**({"redis_key_prefix": f"test-{uuid.uuid4().hex[:12]}",
                                   "rate_limit_checkout": "5/minute"} | overrides)))


async def test_in_memory_each_checkout_session_has_its_own_count() -> None:
    limits = _limits()
    assert [await limits.check_checkout("cs_busy") for _ in range(5)] == [None] * 5
    refusal_ = await limits.check_checkout("cs_busy")
    assert refusal_ is not None and refusal_.limit == "5 per 1 minute"
    assert 1 <= refusal_.retry_after_seconds <= 60
    assert await limits.check_checkout("cs_calm") is None
    assert await limits.check_client("cs_busy") is None  # another kind of count altogether
    assert limits.refused["checkout"] == 1


async def test_on_redis_two_api_processes_share_a_session_s_count() -> None:
    url = redis_url()
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    first, second = _limits(redis_url=url, redis_key_prefix=prefix), _limits(redis_url=url, redis_key_prefix=prefix)
    try:
        for limits in (first, second, first, second, first):
            assert await limits.check_checkout("cs_shared") is None
        assert await second.check_checkout("cs_shared") is not None
        assert await first.check_checkout("cs_shared") is not None
        assert await second.check_checkout("cs_other") is None
        assert first.storage_errors == second.storage_errors == 0
    finally:
        await first.close()
        await second.close()


# --- what each status says -------------------------------------------------------------------------------------

# A code as a program writes it (card_declined, kyc_required): never shown to a player.
CODE = re.compile(r"\b[A-Za-z0-9]+_[A-Za-z0-9_]+\b")


def _statuses(vocabulary: type) -> list[str]:
    return [value for name, value in vars(vocabulary).items() if name.isupper() and isinstance(value, str)]


def _outcomes() -> list[tuple[str, Outcome]]:
    tables = {"deposit status": DEPOSIT_STATUSES, "deposit failure": DEPOSIT_FAILURES, "deposit code": DEPOSIT_CODES,
              "payout status": PAYOUT_STATUSES, "payout failure": PAYOUT_FAILURES, "payout code": PAYOUT_CODES}
    return [(f"{table} {key}", outcome) for table, entries in tables.items() for key, outcome in entries.items()]


def test_every_deposit_and_payout_status_has_its_own_outcome_final_as_the_workflow_says() -> None:
    for status in _statuses(DepositStatus):
        assert status in DEPOSIT_STATUSES, status
        assert deposit_outcome(status, None).final == (status in DepositStatus.FINAL), status
    for status in _statuses(PayoutStatus):
        assert status in PAYOUT_STATUSES, status
        assert payout_outcome(status, None).final == (status in PayoutStatus.FINAL), status
    assert set(DEPOSIT_STATUSES) == set(_statuses(DepositStatus))  # none the workflow never sets
    assert set(PAYOUT_STATUSES) == set(_statuses(PayoutStatus))


def test_a_code_without_a_message_gets_its_status_s_message() -> None:
    for status in ("failed", "rejected", "expired"):
        assert deposit_outcome(status, "a_code_added_tomorrow") == DEPOSIT_STATUSES[status]
        assert deposit_outcome(status, None) == DEPOSIT_STATUSES[status]
    for status in ("failed", "rejected", "cancelled"):
        assert payout_outcome(status, "a_code_added_tomorrow") == PAYOUT_STATUSES[status]
    assert deposit_outcome("failed", "card_declined") == DEPOSIT_FAILURES["card_declined"]
    assert payout_outcome("rejected", "kyc_timeout") == PAYOUT_CODES["kyc_timeout"]
    # A code in its status's sense: the player's account at the PSP (failed), or the casino account (refused).
    assert deposit_outcome("failed", "account_closed") == DEPOSIT_FAILURES["account_closed"]
    assert deposit_outcome("rejected", "account_closed") == DEPOSIT_CODES["account_closed"]
    assert DEPOSIT_FAILURES["account_closed"] != DEPOSIT_CODES["account_closed"]
    assert payout_outcome("failed", "insufficient_funds") == PAYOUT_STATUSES["failed"]  # the PSP's, not our balance
    assert payout_outcome("rejected", "insufficient_funds") == PAYOUT_CODES["insufficient_funds"]
    # A code says why a payment failed; on one that did not, the status speaks.
    assert deposit_outcome("credited", "card_declined") == DEPOSIT_STATUSES["credited"]
    assert payout_outcome("paid", "insufficient_funds") == PAYOUT_STATUSES["paid"]


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_every_outcome_says_something_in_words_in_every_language(locale: str) -> None:
    lang = i18n.language(locale)
    for where, outcome in _outcomes():
        for text in (outcome.title, outcome.detail):
            shown = lang.gettext(text)
            assert shown.strip(), where
            assert not CODE.search(shown), (where, shown)
    for code, text in FORM_ERRORS.items():
        assert not CODE.search(lang.gettext(text)), (code, lang.gettext(text))
