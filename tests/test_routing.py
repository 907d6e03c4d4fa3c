"""PSP routing: the routing file and its errors, the pure router, and the database-backed circuit breaker."""

from __future__ import annotations

import asyncio
import math
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from payloop.settings import Settings
from psp.routing import (
    Candidate,
    CircuitState,
    RoutingConfig,
    RoutingConfigError,
    closed_loop_method,
    default_routing_path,
    load_routing,
    parse_routing,
    payout_route,
    route,
)
from psp.routing.health import HealthStore, psp_attempts, psp_circuits

OPEN, HALF_OPEN, CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

# A small world: two card acquirers (A/B), a cheap card acquirer of last resort, an e-wallet, a bank PSP.
WORLD = """\
psps:
  - name: card_a
    methods: [card]
    payout_methods: [card]
    countries: ["*"]
    currencies: [EUR, USD, JPY]
    amounts:
      EUR: {min: "1.00", max: "5000.00"}
    cost: {fixed: {"*": "0.25", JPY: "30"}, percentage: "1.5"}
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
    health: {min_samples: 4, failure_rate: "0.5", window_seconds: 60, window_size: 20, open_seconds: 30,
             half_open_probes: 2}
  - name: card_b
    methods: [card]
    payout_methods: [card]
    countries: ["*"]
    currencies: [EUR, USD]
    cost: {fixed: "0.10", percentage: "2.0"}
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
  - name: card_c
    methods: [card]
    countries: [DE, AT]
    currencies: [EUR]
    cost: {fixed: "0", percentage: "1.0"}
    eta: instant
    webhook_secret: CARD_C_WEBHOOK_SECRET
  - name: wallet
    methods: [ewallet]
    payout_methods: [ewallet, card]
    countries: ["*"]
    currencies: [EUR]
    cost: {percentage: "2.5"}
    payout_cost: {fixed: "0.05"}
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
  - name: bank
    methods: [bank_transfer]
    payout_methods: [bank_transfer]
    countries: [DE, NL, NO]
    currencies: [EUR, NOK]
    cost: {fixed: "0.20"}
    eta: 1-2 business days
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
rules:
  - name: high-risk
    method: card
    risk: high
    candidates: [card_b]
  - name: big-eur-cards
    method: card
    currency: EUR
    amount: {min: "1000.00"}
    candidates: [card_c, card_a]
  - name: ab-cards
    method: card
    currency: [EUR, USD]
    candidates:
      - {psp: card_a, rank: 1, weight: 70}
      - {psp: card_b, rank: 1, weight: 30}
      - {psp: card_c, rank: 2}
"""

ALL = frozenset({"card_a", "card_b", "card_c", "wallet", "bank"})


@pytest.fixture(scope="module")
def world() -> RoutingConfig:
    return parse_routing(WORLD, "world.yaml")


def deposit(config: RoutingConfig, *, method: str = "card", currency: str = "EUR", amount_minor: int = 5000,
            country: str | None = "DE", risk: str | None = "low", payment_id: str = "pay_1",
            available: frozenset[str] = ALL, health: dict[str, CircuitState] | None = None) -> list[Candidate]:
    return route(config, method=method, currency=currency, amount_minor=amount_minor, country=country, risk=risk,
                 payment_id=payment_id, available=set(available), health=health or {})


def names(candidates: list[Candidate]) -> list[str]:
    return [c.psp for c in candidates]


# --- the routing file ------------------------------------------------------------------------------------------


def test_the_shipped_file_loads_and_describes_two_psps_per_method() -> None:
    config = load_routing(Settings())
    assert config.source == str(default_routing_path())
    assert [p.name for p in config.psps] == ["card", "card_b", "ewallet", "ewallet_b", "paybybank", "paybybank_b",
                                             "crypto", "crypto_b"]
    assert config.psp("paybybank").methods == ["bank_transfer"]
    assert config.psp("crypto").methods == ["crypto"]
    # Each PSP its own secret setting, so one PSP's signature never verifies as another's.
    assert [p.webhook_secret for p in config.psps] == [f"PAYLOOP_WEBHOOK_SECRET_{p.name.upper()}" for p in config.psps]
    # Norway stays "NO" (YAML 1.1 would read it as false).
    assert "NO" in config.psp("paybybank").countries
    # PSPs without a provider are ignored: only card and ewallet exist today.
    got = route(config, method="bank_transfer", currency="EUR", amount_minor=5000, country="DE", risk=None,
                payment_id="p", available={"card", "ewallet"}, health={})
    assert got == []
    got = route(config, method="card", currency="EUR", amount_minor=5000, country="DE", risk=None,
                payment_id="p", available={"card", "ewallet"}, health={})
    assert got == [Candidate("card", 95, "no rule matched: lowest fee")]  # 0.25 + 1.4 % of 50.00


def test_settings_name_another_routing_file(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(WORLD)
    assert [p.name for p in load_routing(Settings(routing_file=path)).psps][:2] == ["card_a", "card_b"]
    with pytest.raises(RoutingConfigError, match="cannot read"):
        load_routing(Settings(routing_file=tmp_path / "missing.yaml"))


def test_decimals_stay_exact_strings() -> None:
    config = parse_routing(WORLD.replace('percentage: "1.5"', "percentage: 1.50"))
    assert config.psp("card_a").cost.percentage == "1.50"  # never a float
    assert config.psp("card_a")._limits["EUR"] == (100, 500_000)


def test_refund_and_chargeback_costs_default_to_nothing() -> None:
    config = parse_routing(MINIMAL + '    cost: {fixed: "0.25", percentage: "1.4"}\n')
    card = config.psp("card")
    assert card is not None and (card.refund_cost, card.chargeback_cost) == (None, None)
    assert (card.refund_fee_minor(5000, "EUR"), card.chargeback_fee_minor(5000, "EUR")) == (0, 0)
    assert card.fee_minor(5000, "EUR") == 95  # the payment's cost is not borrowed


def test_refund_and_chargeback_costs_are_priced_like_the_others() -> None:
    config = parse_routing(MINIMAL.replace("[EUR]", "[EUR, JPY]") + (
        '    refund_cost: {fixed: {"*": "0.10", JPY: "15"}, percentage: "0.5"}\n'
        '    chargeback_cost: {fixed: {"*": "15.00", JPY: "2000"}}\n'))
    card = config.psp("card")
    assert card is not None
    assert card.refund_fee_minor(5050, "EUR") == 35  # 10 + 25.25 → 35
    assert card.refund_fee_minor(1001, "JPY") == 20  # 15 + 5.005 → 20
    assert (card.chargeback_fee_minor(3000, "EUR"), card.chargeback_fee_minor(3000, "JPY")) == (1500, 2000)


def test_the_shipped_file_prices_refunds_and_chargebacks() -> None:
    config = load_routing(Settings())
    fees = {p.name: (p.refund_fee_minor(5000, "EUR"), p.chargeback_fee_minor(5000, "EUR")) for p in config.psps}
    # Pay-by-bank and crypto payments carry no chargeback right: no chargeback cost there.
    assert fees == {"card": (10, 1500), "card_b": (15, 2000), "ewallet": (20, 1500), "ewallet_b": (25, 1200),
                    "paybybank": (20, 0), "paybybank_b": (25, 0), "crypto": (125, 0), "crypto_b": (145, 0)}


def _marked(text: str) -> tuple[str, int]:
    """The text without its `#<` marker, and the 1-based line the marker was on."""
    lines = textwrap.dedent(text).splitlines()
    line = next(i for i, entry in enumerate(lines, 1) if "#<" in entry)
    return "\n".join(entry.split("#<")[0].rstrip() for entry in lines) + "\n", line


MINIMAL = """\
psps:
  - name: card
    methods: [card]
    countries: ["*"]
    currencies: [EUR]
    eta: instant
    webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET
"""

TWO = MINIMAL + """\
  - name: two
    methods: [card]
    countries: ["*"]
    currencies: [EUR]
    eta: instant
    webhook_secret: TWO_WEBHOOK_SECRET
"""


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param(MINIMAL.replace("currencies: [EUR]", "currencies: [EUR, EUX]  #<"),
                     "psps[0].currencies[1]", "currency 'EUX' is not supported", id="bad-currency"),
        pytest.param(MINIMAL.replace("currencies: [EUR]", "currencies: [EUR, eur]  #<"),
                     "psps[0].currencies[1]", "should match pattern", id="lowercase-currency"),
        pytest.param(MINIMAL + "rules:\n  - method: card\n    candidates:\n      - card\n      - cardd  #<\n",
                     "rules[0].candidates[1].psp", "unknown PSP 'cardd'", id="unknown-psp"),
        pytest.param(MINIMAL + "rules:\n  - candidates:\n      - {psp: card, weight: -30}  #<\n",
                     "rules[0].candidates[0].weight", "greater than 0", id="negative-weight"),
        pytest.param(MINIMAL + "rules:\n  - candidates:\n      - {psp: card, weight: 0}  #<\n",
                     "rules[0].candidates[0].weight", "greater than 0", id="zero-weight"),
        pytest.param(MINIMAL + "    amounts:\n      EUR:\n        min: \"1.00\"\n        max: 10.001  #<\n",
                     "psps[0].amounts.EUR.max", "at most 2 decimal places", id="amount-too-precise"),
        pytest.param(MINIMAL + "    amounts:\n      EUR: {min: \"10.00\", max: \"5.00\"}  #<\n",
                     "psps[0].amounts.EUR.min", "is above max", id="min-above-max"),
        pytest.param(MINIMAL + "    cost: {fixed: \"0.251\"}  #<\n",
                     "psps[0].cost.fixed", "at most 2 decimal places", id="fixed-too-precise"),
        pytest.param(MINIMAL.replace("[EUR]", "[EUR, JPY]") + "    cost: {fixed: \"0.25\"}  #<\n",
                     "psps[0].cost.fixed", "give JPY its own fixed fee", id="fixed-default-too-precise"),
        pytest.param(MINIMAL + "    cost: {percentage: -1}  #<\n",
                     "psps[0].cost.percentage", "should match pattern", id="negative-percentage"),
        pytest.param(MINIMAL + "    refund_cost: {fixed: \"0.101\"}  #<\n",
                     "psps[0].refund_cost.fixed", "at most 2 decimal places", id="refund-fixed-too-precise"),
        pytest.param(MINIMAL + "    refund_cost:\n      fixed: {USD: \"0.10\"}  #<\n",
                     "psps[0].refund_cost.fixed.USD", "not one of this PSP's currencies",
                     id="refund-fixed-foreign-currency"),
        pytest.param(MINIMAL + "    refund_cost: {percentage: \"100\"}  #<\n",
                     "psps[0].refund_cost.percentage", "must be below 100", id="refund-percentage-100"),
        pytest.param(MINIMAL.replace("[EUR]", "[EUR, JPY]") + "    chargeback_cost: {fixed: \"15.00\"}  #<\n",
                     "psps[0].chargeback_cost.fixed", "give JPY its own fixed fee",
                     id="chargeback-default-too-precise"),
        pytest.param(MINIMAL + "    chargeback_cost: {fixed: -15}  #<\n",
                     "psps[0].chargeback_cost.fixed.*", "should match pattern", id="chargeback-negative"),
        pytest.param(MINIMAL + "    chargeback_cost: {fee: \"15.00\"}  #<\n",
                     "psps[0].chargeback_cost.fee", "Extra inputs are not permitted", id="chargeback-unknown-key"),
        pytest.param(MINIMAL + "    chargeback_cost: 15.00  #<\n",
                     "psps[0].chargeback_cost", "valid dictionary", id="chargeback-not-a-cost"),
        pytest.param(MINIMAL + "rules:\n  - method: ewallet\n    candidates: [card]  #<\n",
                     "rules[0].candidates[0].psp", "does not take ewallet", id="psp-without-the-method"),
        pytest.param(MINIMAL + "rules:\n  - amount: {min: \"5.00\"}  #<\n    candidates: [card]\n",
                     "rules[0].amount", "exactly one `currency`", id="amount-without-currency"),
        pytest.param(MINIMAL + "rules:\n  - risk: extreme  #<\n    candidates: [card]\n",
                     "rules[0].risk[0]", "'low', 'medium' or 'high'", id="bad-risk"),
        pytest.param(MINIMAL.replace("webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET",
                                     "webhook_secret: PAYLOOP_NO_SUCH_SECRET  #<"),
                     "psps[0].webhook_secret", "names no payloop setting", id="unknown-secret-setting"),
        pytest.param(MINIMAL.replace("webhook_secret: PAYLOOP_SANDBOX_WEBHOOK_SECRET",
                                     "webhook_secret: whsec_live_123  #<"),
                     "psps[0].webhook_secret", "should match pattern", id="a-secret-not-a-reference"),
        pytest.param(MINIMAL.replace("    eta: instant\n", "    eta: instant\n    eta: later  #<\n"),
                     "psps[0].eta", "duplicate key", id="duplicate-key"),
        pytest.param(MINIMAL.replace("    eta: instant\n", "    eta: instant\n    colour: blue  #<\n"),
                     "psps[0].colour", "Extra inputs are not permitted", id="unknown-field"),
        pytest.param(MINIMAL.replace("countries: [\"*\"]", "countries: [\"*\", DE]  #<"),
                     "psps[0].countries", "stands alone", id="star-and-countries"),
        pytest.param(TWO + "rules:\n  - candidates:\n      - {psp: card, rank: 1}\n      - two  #<\n",
                     "rules[0].candidates[1].rank", "every candidate a rank", id="ranks-mixed"),
        pytest.param(TWO + "rules:\n  - candidates:\n      - {psp: card, rank: 1, weight: 5}\n"
                     "      - {psp: two, rank: 1}  #<\n",
                     "rules[0].candidates[1].weight", "needs a weight", id="weights-partial"),
        pytest.param(TWO + "rules:\n  - candidates:\n      - card\n      - card  #<\n",
                     "rules[0].candidates[1].psp", "listed twice", id="psp-twice-in-a-rule"),
        pytest.param(MINIMAL + "    status_poll: {attempts: 3, backoff: \"0.5\"}  #<\n",
                     "psps[0].status_poll.backoff", "from 1 (even intervals) to 10", id="poll-backoff-shrinks"),
        pytest.param(MINIMAL + "    status_poll: {attempts: 0}  #<\n",
                     "psps[0].status_poll.attempts", "greater than or equal to 1", id="poll-no-attempts"),
        pytest.param(MINIMAL.replace("    eta: instant\n", ""),
                     "psps[0].eta", "Field required", id="missing-field-points-at-its-psp"),
        pytest.param(MINIMAL.replace("eta: instant", "eta: instant: now  #<"), "", "not valid YAML",
                     id="broken-yaml"),
    ],
)
def test_an_invalid_file_is_refused_naming_file_line_and_field(text: str, field: str, message: str) -> None:
    if "#<" in text:
        body, line = _marked(text)
    else:  # a missing field: reported on the first line of the mapping it is missing from
        body, line = text, 2
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing(body, "conf/routing.yaml")
    issues = caught.value.issues
    assert any(i.field == field and message in i.message and i.line == line for i in issues), str(caught.value)
    assert f"conf/routing.yaml:{line}: {field or '(file)'}: " in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    text = MINIMAL.replace("[EUR]", "[EUR, EUX]") + "rules:\n  - candidates: [nope]\n"
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing(text)
    assert {i.field for i in caught.value.issues} == {"psps[0].currencies[1]", "rules[0].candidates[0].psp"}


# --- the router ------------------------------------------------------------------------------------------------


def test_the_first_matching_rule_wins(world: RoutingConfig) -> None:
    high = deposit(world, risk="high")
    assert names(high) == ["card_b"] and high[0].reason.startswith("rule 'high-risk'")
    # 1000.00 EUR and up: card_c first (its rank), then card_a; the A/B rule below is never reached.
    assert names(deposit(world, amount_minor=100_000)) == ["card_c", "card_a"]
    # Not high risk, below 1000.00: the A/B rule.
    assert set(names(deposit(world))) == {"card_a", "card_b", "card_c"}
    assert deposit(world)[-1].psp == "card_c"  # rank 2


def test_rule_conditions_country_currency_amount_and_unknown_inputs(world: RoutingConfig) -> None:
    # card_c serves DE and AT only: for FR the big-amount rule keeps just card_a.
    assert names(deposit(world, amount_minor=100_000, country="FR")) == ["card_a"]
    # An unknown country is served only by PSPs open to every country.
    assert names(deposit(world, amount_minor=100_000, country=None)) == ["card_a"]
    # card_a's EUR limit is 5000.00: above it only card_c, which has no limit.
    assert names(deposit(world, amount_minor=600_000)) == ["card_c"]
    # A risk that is not known matches no risk rule.
    assert "card_b" in names(deposit(world, risk=None))
    # JPY: no rule names JPY; card_a is the only card PSP that takes it.
    assert deposit(world, currency="JPY", amount_minor=5000) == [Candidate("card_a", 105, "no rule matched: lowest fee")]


def test_a_rule_whose_psps_are_all_unavailable_is_passed_over(world: RoutingConfig) -> None:
    # The high-risk rule names only card_b; without it the next matching rule (A/B) applies.
    got = deposit(world, risk="high", available=ALL - {"card_b"})
    assert names(got) == ["card_a", "card_c"] and got[0].reason.startswith("rule 'ab-cards', rank 1")
    assert deposit(world, method="card", available=frozenset({"wallet", "bank"})) == []
    assert deposit(world, method="cheque") == []


def test_without_a_rule_psps_are_ordered_by_fee_then_name() -> None:
    config = parse_routing(WORLD.split("rules:")[0])
    got = deposit(config, amount_minor=2000)  # 20.00 EUR
    # card_a 0.25 + 0.30 = 0.55; card_b 0.10 + 0.40 = 0.50; card_c 0.20
    assert got == [Candidate("card_c", 20, "no rule matched: lowest fee"),
                   Candidate("card_b", 50, "no rule matched: lowest fee"),
                   Candidate("card_a", 55, "no rule matched: lowest fee")]
    # A tie on fee is broken by name: at 30.00 card_b (0.70) and card_a (0.70) cost the same.
    assert names(deposit(config, amount_minor=3000, country="FR")) == ["card_a", "card_b"]


@pytest.mark.parametrize(
    ("fixed", "percentage", "currency", "amount_minor", "fee_minor"),
    [
        ("0", "1.5", "EUR", 1050, 16),  # 15.75 cents → 16
        ("0", "1.5", "EUR", 1030, 15),  # 15.45 → 15
        ("0", "0.05", "EUR", 1000, 1),  # exactly half a cent → rounds up
        ("0", "0.05", "EUR", 999, 0),  # 0.4995 → 0
        ("0.25", "1.4", "EUR", 5000, 95),
        ("0.25", "1.4", "EUR", 1, 25),  # 0.014 of a cent → 0, plus the fixed part
        ("0.001", "0", "KWD", 1000, 1),  # fixed in the payment currency's own units
        ("30", "3.6", "JPY", 1001, 66),  # 30 + 36.036 yen → 66
        ("0.25", "0", "JPY", 5000, 0),  # a quarter yen rounds to nothing
        ("0", "1.4", "EUR", 10**13, 14 * 10**10),  # the largest amount, exactly
    ],
)
def test_fees_are_exact_decimals_rounded_half_up(fixed: str, percentage: str, currency: str, amount_minor: int,
                                                 fee_minor: int) -> None:
    from psp.routing import Cost

    assert Cost(fixed=fixed, percentage=percentage).fee_minor(amount_minor, currency) == fee_minor


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(|X − np| > k) for X ~ Binomial(n, p), summed exactly over the distribution."""
    mean = n * p
    return sum(math.comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(n + 1) if abs(x - mean) > k)


def test_ab_weights_split_traffic_by_weight(world: RoutingConfig) -> None:
    # If the payment-id hash behaves like a fair draw, the number of payments (out of 1,000) routed first to
    # card_a is X ~ Binomial(1000, 0.7): mean 700, standard deviation sqrt(1000 · 0.7 · 0.3) ≈ 14.5 payments.
    # The tolerance of ±5 percentage points is ±50 payments ≈ 3.45 σ, and the exact binomial tail
    # P(|X − 700| > 50) ≈ 4.9e-4: a correct router fails this check for about one random set of ids in 2,000.
    # The ids here are fixed, so the test is deterministic — it fails only when the split is really biased.
    n = 1000
    assert binomial_tail(n, 0.7, 50) < 1e-3
    first = [deposit(world, payment_id=f"pay_{i:06d}")[0].psp for i in range(n)]
    assert first.count("card_a") + first.count("card_b") == n
    assert abs(first.count("card_a") - 700) <= 50
    # The same with random-looking ids (what the API makes).
    first = [deposit(world, payment_id=f"pay_{uuid.uuid5(uuid.NAMESPACE_OID, str(i)).hex[:24]}")[0].psp for i in range(n)]
    assert abs(first.count("card_a") - 700) <= 50


def test_weighted_choice_is_deterministic_per_payment_id(world: RoutingConfig) -> None:
    for i in range(50):
        payment_id = f"pay_{uuid.uuid4().hex}"
        assert deposit(world, payment_id=payment_id) == deposit(world, payment_id=payment_id)
    routes = {tuple(names(deposit(world, payment_id=f"pay_{i}"))) for i in range(50)}
    # Both orders occur, and the failover order always contains the other A/B candidate, then rank 2.
    assert routes == {("card_a", "card_b", "card_c"), ("card_b", "card_a", "card_c")}


def test_open_circuits_are_skipped_unless_every_candidate_is_open(world: RoutingConfig) -> None:
    got = deposit(world, payment_id="pay_x", health={"card_a": OPEN})
    assert names(got) == ["card_b", "card_c"]
    got = deposit(world, payment_id="pay_x", health={"card_a": HALF_OPEN})
    assert "card_a" in names(got) and next(c for c in got if c.psp == "card_a").reason.endswith("(probe)")
    everything = {name: OPEN for name in ALL}
    got = deposit(world, payment_id="pay_x", health=everything)
    assert names(got) == names(deposit(world, payment_id="pay_x"))  # the last resort keeps the order
    assert all("circuit open" in c.reason for c in got)


def test_payouts_go_back_through_the_deposit_psp_when_they_can(world: RoutingConfig) -> None:
    def payout(deposit_psp: str | None, method: str = "card", **kwargs: object) -> list[Candidate]:
        args = {"currency": "EUR", "amount_minor": 5000, "country": "DE", "available": set(ALL), "health": {}}
        return payout_route(world, method=method, deposit_psp=deposit_psp, **(args | kwargs))  # type: ignore[arg-type]

    # Payout fees: wallet 0.05 < card_a 0.25 + 0.75 < card_b 0.10 + 1.00; card_c does not pay out.
    assert names(payout(None)) == ["wallet", "card_a", "card_b"]
    looped = payout("card_b")
    assert names(looped) == ["card_b", "wallet", "card_a"] and looped[0].reason.startswith("closed loop")
    assert names(payout("card_b", health={"card_b": OPEN})) == ["wallet", "card_a"]
    assert names(payout("card_c")) == ["wallet", "card_a", "card_b"]  # card_c cannot pay out
    assert names(payout("bank", method="bank_transfer")) == ["bank"]
    assert payout("bank", method="bank_transfer", available={"card_a"}) == []
    assert closed_loop_method(world, "card_a") == "card"
    assert closed_loop_method(world, "wallet") == "ewallet"
    assert closed_loop_method(world, "wallet", "card") == "card"
    assert closed_loop_method(world, "card_c") is None
    assert closed_loop_method(world, "nope") is None


# --- health and the circuit breaker (SQLite and PostgreSQL) ---------------------------------------------------


async def circuit_row(engine: AsyncEngine, psp: str) -> sa.Row:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(psp_circuits).where(psp_circuits.c.psp == psp))).one()


async def test_the_circuit_opens_after_min_samples_failures(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)  # card_a: min_samples 4, failure_rate 0.5, window 60 s
    now = T0
    for _ in range(3):
        now += timedelta(seconds=1)
        assert await store.record("card_a", "create_payment", False, 100, "http_503", now) == CLOSED
    now += timedelta(seconds=1)
    assert await store.record("card_a", "create_payment", False, 100, "http_503", now) == OPEN
    assert (await store.states(now))["card_a"] == OPEN
    assert (await circuit_row(engine, "card_a")).opened_at == now


async def test_a_healthy_share_of_successes_keeps_it_closed(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)
    now = T0
    for ok in [True, True, False, True, True, False, True, True, False]:  # 1 in 3 fails < 0.5
        now += timedelta(seconds=1)
        assert await store.record("card_a", "create_payment", ok, 50, None, now) == CLOSED
    # Failures spread wider than the 60 s window never add up.
    store2 = HealthStore(engine, world)
    for _ in range(10):
        now += timedelta(seconds=61)
        assert await store2.record("card_b", "create_payment", False, 50, "timeout", now) == CLOSED


async def test_open_half_open_then_a_probe_decides(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)  # card_a: open 30 s, 2 probes
    for i in range(4):
        await store.record("card_a", "create_payment", False, 10, "timeout", T0 + timedelta(seconds=i))
    opened = T0 + timedelta(seconds=3)
    assert (await store.states(opened + timedelta(seconds=29)))["card_a"] == OPEN
    assert await store.try_probe("card_a", opened + timedelta(seconds=29))  # open: the router decides
    at = opened + timedelta(seconds=30)
    assert (await store.states(at))["card_a"] == HALF_OPEN
    # Two probe slots, then no more until a probe reports.
    assert [await store.try_probe("card_a", at) for _ in range(3)] == [True, True, False]
    # A failed probe: open again, for another 30 s from now.
    failed_at = at + timedelta(seconds=1)
    assert await store.record("card_a", "create_payment", False, 10, "timeout", failed_at) == OPEN
    assert (await circuit_row(engine, "card_a")).opened_at == failed_at
    assert (await store.states(failed_at + timedelta(seconds=29)))["card_a"] == OPEN
    again = failed_at + timedelta(seconds=30)
    assert (await store.states(again))["card_a"] == HALF_OPEN
    assert (await circuit_row(engine, "card_a")).probes_in_flight == 0
    # A successful probe closes it, and the failures before it no longer count.
    assert await store.try_probe("card_a", again)
    assert await store.record("card_a", "create_payment", True, 10, None, again + timedelta(seconds=1)) == CLOSED
    row = await circuit_row(engine, "card_a")
    assert (row.state, row.opened_at, row.probes_in_flight) == ("closed", None, 0)
    assert await store.record("card_a", "create_payment", False, 10, "x", again + timedelta(seconds=2)) == CLOSED


async def test_stale_probe_slots_are_reclaimed(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)
    for i in range(4):
        await store.record("card_a", "create_payment", False, 10, "timeout", T0 + timedelta(seconds=i))
    at = T0 + timedelta(seconds=40)
    assert [await store.try_probe("card_a", at) for _ in range(3)] == [True, True, False]
    # The probing workers crashed: after open_seconds the slots are free again.
    assert await store.try_probe("card_a", at + timedelta(seconds=30))


async def test_a_late_result_while_open_changes_nothing(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)
    for i in range(4):
        await store.record("card_a", "create_payment", False, 10, "timeout", T0 + timedelta(seconds=i))
    assert await store.record("card_a", "get_payment", True, 10, None, T0 + timedelta(seconds=5)) == OPEN
    # …but once open_seconds passed, a result is the probe's.
    assert await store.record("card_a", "get_payment", True, 10, None, T0 + timedelta(seconds=40)) == CLOSED


async def test_a_circuit_forced_open_stays_open_until_auto(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)  # card_a: open 30 s
    await store.force("card_a", OPEN, T0)
    later = T0 + timedelta(minutes=10)  # far past open_seconds: no half-open promotion
    assert (await store.states(later))["card_a"] == OPEN
    assert await store.record("card_a", "create_payment", True, 10, None, later) == OPEN  # not the probe's
    snap = (await store.snapshot(later, registered=ALL))["card_a"].as_json()
    assert (snap["circuit"], snap["forced"], snap["available"]) == ("open", "open", False)
    await store.force("card_a", None, later)
    row = await circuit_row(engine, "card_a")
    assert (row.state, row.forced, row.opened_at, row.updated_at) == ("closed", None, None, later)
    # Back to the breaker: it opens again on failures after `auto`.
    for i in range(1, 5):
        state = await store.record("card_a", "create_payment", False, 10, "timeout", later + timedelta(seconds=i))
    assert state == OPEN


async def test_a_circuit_forced_closed_never_opens(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)  # card_a: min_samples 4, failure_rate 0.5
    for i in range(4):
        await store.record("card_a", "create_payment", False, 10, "timeout", T0 + timedelta(seconds=i))
    assert (await store.states(T0 + timedelta(seconds=4)))["card_a"] == OPEN
    forced_at = T0 + timedelta(seconds=5)
    await store.force("card_a", CLOSED, forced_at)
    for i in range(1, 11):
        at = forced_at + timedelta(seconds=i)
        assert await store.record("card_a", "create_payment", False, 10, "timeout", at) == CLOSED
    snap = (await store.snapshot(forced_at + timedelta(seconds=11), registered=ALL))["card_a"].as_json()
    assert (snap["circuit"], snap["forced"], snap["error_rate"]) == ("closed", "closed", "1.0000")
    await store.force("card_a", None, forced_at + timedelta(seconds=12))
    assert await store.record("card_a", "create_payment", False, 10, "x", forced_at + timedelta(seconds=13)) == CLOSED


async def test_snapshot_and_pruning(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world, retention=timedelta(hours=1))
    now = T0
    await store.record("card_b", "create_payment", False, 9999, "old", now - timedelta(minutes=10))
    for i in range(1, 21):  # latencies 10..200 ms; every 4th call fails
        await store.record("card_b", "create_payment", i % 4 != 0, i * 10, None if i % 4 else "http_502",
                           now - timedelta(seconds=50 - i))
    snap = await store.snapshot(now, registered=ALL)
    assert list(snap)[:5] == ["card_a", "card_b", "card_c", "wallet", "bank"]
    b = snap["card_b"].as_json()
    assert b == {"psp": "card_b", "samples": 20, "success_rate": "0.7500", "error_rate": "0.2500",
                 "p95_latency_ms": 190, "circuit": "closed", "forced": None, "opened_at": None, "window_seconds": 60,
                 "window_start": (now - timedelta(seconds=60)).isoformat(), "available": True}
    assert snap["card_a"].as_json()["samples"] == 0 and snap["card_a"].success_rate is None
    assert await store.prune(now + timedelta(minutes=55)) == 1  # the 10-minute-old attempt is past the hour
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(psp_attempts))).scalar_one() == 20


async def health_of(store: HealthStore, psp: str, at: datetime, registered: frozenset[str] = ALL) -> dict:
    return (await store.snapshot(at, registered=registered))[psp].as_json()


async def test_psp_health_shows_the_window_the_breaker_judges(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)  # card_a: min_samples 4, failure_rate 0.5, window 60 s, open 30 s
    for i in range(3):
        await store.record("card_a", "create_payment", False, 10, "timeout", T0 + timedelta(seconds=i))
    # Failures older than window_seconds count for neither the breaker nor the page.
    now = T0 + timedelta(seconds=63)
    assert await store.record("card_a", "create_payment", True, 10, None, now) == CLOSED
    assert (await health_of(store, "card_a", now))["error_rate"] == "0.0000"
    for i in (1, 2):
        at = now + timedelta(seconds=i)
        assert await store.record("card_a", "create_payment", False, 10, "timeout", at) == CLOSED
    shown = await health_of(store, "card_a", now + timedelta(seconds=2))
    assert (shown["samples"], shown["error_rate"], shown["circuit"]) == (3, "0.6667", "closed")  # < min_samples
    # Failures until it opens: the page shows the circuit open, not available, at an error rate ≥ the threshold.
    opened = now + timedelta(seconds=3)
    assert await store.record("card_a", "create_payment", False, 10, "timeout", opened) == OPEN
    shown = await health_of(store, "card_a", opened)
    assert (shown["circuit"], shown["available"], shown["window_start"]) == ("open", False, opened.isoformat())
    assert Decimal(shown["error_rate"]) >= Decimal(world.thresholds("card_a").failure_rate)
    # Half-open takes probes: available again. A successful probe closes it, and the failures before no longer count.
    probing = opened + timedelta(seconds=30)
    assert (await health_of(store, "card_a", probing))["available"] is True
    assert await store.record("card_a", "create_payment", True, 10, None, probing) == CLOSED
    shown = await health_of(store, "card_a", probing + timedelta(seconds=1))
    assert (shown["samples"], shown["error_rate"], shown["circuit"]) == (1, "0.0000", "closed") and shown["available"]


async def test_psp_health_counts_only_the_breakers_newest_attempts(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)  # card_a: window_size 20
    at = T0
    for _ in range(25):
        at += timedelta(seconds=1)
        await store.record("card_a", "create_payment", True, 10, None, at)
    for _ in range(9):
        at += timedelta(seconds=1)
        assert await store.record("card_a", "create_payment", False, 10, "timeout", at) == CLOSED
    shown = await health_of(store, "card_a", at)
    assert (shown["samples"], shown["error_rate"]) == (20, "0.4500")  # 9 of the newest 20, not 9 of 34
    # The 10th failure makes it half of the newest 20: the breaker opens exactly where the page said it stood.
    assert await store.record("card_a", "create_payment", False, 10, "timeout", at + timedelta(seconds=1)) == OPEN


async def test_a_psp_without_a_connector_is_not_available(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)
    await store.record("ghost", "create_payment", True, 10, None, T0)  # not configured, has a circuit
    snap = await store.snapshot(T0, registered=ALL - {"wallet"})
    assert snap["ghost"].circuit == CLOSED and not snap["ghost"].available
    assert snap["wallet"].circuit == CLOSED and not snap["wallet"].available
    assert snap["card_a"].available


async def test_concurrent_records_keep_one_consistent_state(engine: AsyncEngine, world: RoutingConfig) -> None:
    store = HealthStore(engine, world)  # card_a: min_samples 4, window_size 20, 2 probes
    now = T0

    async def fail(i: int) -> CircuitState:
        return await store.record("card_a", "create_payment", False, i, "http_503", now)

    results = await asyncio.gather(*(fail(i) for i in range(30)))
    row = await circuit_row(engine, "card_a")
    assert (row.state, row.opened_at, row.probes_in_flight) == ("open", now, 0)
    # Under READ COMMITTED a transaction may not see its concurrent peers' attempts yet, so the opening can come
    # a little later than the 4th failure, but it comes, exactly once, and nothing reports a state it never had.
    assert results.count(OPEN) >= 1 and set(results) <= {CLOSED, OPEN}
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(psp_attempts))).scalar_one() == 30

    later = now + timedelta(seconds=30)
    probes = await asyncio.gather(*(store.try_probe("card_a", later) for _ in range(12)))
    assert probes.count(True) == 2
    assert (await circuit_row(engine, "card_a")).probes_in_flight == 2

    outcomes = [True, False] * 6
    after = await asyncio.gather(*(store.record("card_a", "create_payment", ok, 1, None, later) for ok in outcomes))
    row = await circuit_row(engine, "card_a")
    # The first probe result to commit decided; every later one saw its decision (closed stays closed on a lone
    # failure below min_samples… or opened again by a failed probe). Whatever happened, the row is coherent.
    assert row.state in ("closed", "open") and row.probes_in_flight == 0
    assert (row.opened_at is None) == (row.state == "closed")
    assert HALF_OPEN not in after


# --- sticky A/B per player, and a second PSP for every method ----------------------------------------------------


def shipped_with_card_split_text() -> str:
    """The shipped file with the EUR card split its header shows (`eu-cards-ab`, card 70 / card_b 30) as its first
    rule, read from the header itself (without its hypothetical third acquirer, card_c)."""
    text = default_routing_path().read_text()
    header = text.split("\npsps:")[0].splitlines()
    start = header.index("#     - name: eu-cards-ab")
    example = [line[4:] for line in header[start:] if line.startswith("#     ") and "card_c" not in line]
    return text.replace("\nrules:\n", "\nrules:\n" + "\n".join(example) + "\n", 1)


def shipped_with_card_split() -> RoutingConfig:
    return parse_routing(shipped_with_card_split_text())


SHIPPED_PSPS = frozenset({"card", "card_b", "ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto", "crypto_b"})


def card_deposit(config: RoutingConfig, player_id: str, payment_id: str,
                 health: dict[str, CircuitState] | None = None) -> list[str]:
    return names(route(config, method="card", currency="EUR", amount_minor=5000, country="DE", risk="low",
                       payment_id=payment_id, available=SHIPPED_PSPS, health=health or {}, player_id=player_id))


def test_a_player_stays_on_one_acquirer_across_deposits_and_3ds_retries() -> None:
    config = shipped_with_card_split()
    for i in range(40):
        player_id = f"player_{i}"
        # Consecutive deposits, and the 3-D Secure retry of a soft decline (a new payment id), alike.
        routes = {tuple(card_deposit(config, player_id, f"pay_{i}_{n}")) for n in range(10)}
        assert len(routes) == 1 and sorted(routes.pop()) == ["card", "card_b"]


def test_players_spread_over_the_acquirers_by_weight() -> None:
    # As in test_ab_weights_split_traffic_by_weight: X ~ Binomial(1000, 0.7), ±50 is about 3.45 σ.
    config = shipped_with_card_split()
    first = [card_deposit(config, f"player_{uuid.uuid5(uuid.NAMESPACE_OID, str(i)).hex[:12]}", "pay_same")[0]
             for i in range(1000)]
    assert abs(first.count("card") - 700) <= 50 and first.count("card") + first.count("card_b") == 1000


def test_a_player_moves_only_while_their_acquirer_is_down() -> None:
    config = shipped_with_card_split()
    player_id = next(f"player_{i}" for i in range(100) if card_deposit(config, f"player_{i}", "p")[0] == "card_b")
    assert card_deposit(config, player_id, "pay_1", health={"card_b": OPEN}) == ["card"]
    assert card_deposit(config, player_id, "pay_2", health={"card_b": HALF_OPEN})[0] == "card_b"  # its probe
    assert card_deposit(config, player_id, "pay_3")[0] == "card_b"  # back once it recovered


def test_new_weights_move_only_the_players_between_the_old_and_new_boundary() -> None:
    config = shipped_with_card_split()
    players = [f"player_{i}" for i in range(1000)]
    before = {p: card_deposit(config, p, "p")[0] for p in players}
    reweighted = parse_routing(shipped_with_card_split_text().replace("weight: 70", "weight: 60")
                               .replace("weight: 30", "weight: 40"))
    after = {p: card_deposit(reweighted, p, "p")[0] for p in players}
    moved = [p for p in players if before[p] != after[p]]
    # Only card → card_b, about a seventh of card's players (a tenth of all): the boundary moved from 0.7 to 0.6.
    assert all(before[p] == "card" and after[p] == "card_b" for p in moved)
    assert 50 <= len(moved) <= 150


@pytest.mark.parametrize(("method", "first", "second"), [
    ("card", "card", "card_b"), ("ewallet", "ewallet", "ewallet_b"), ("bank_transfer", "paybybank", "paybybank_b"),
    ("crypto", "crypto", "crypto_b"),
])
def test_every_shipped_method_has_a_second_psp_for_deposits_and_payouts(method: str, first: str, second: str) -> None:
    config = load_routing(Settings())
    for risk in ("low", "high") if method != "card" else ("low",):  # high-risk cards stay on card (3DS)
        got = route(config, method=method, currency="EUR", amount_minor=5000, country="DE", risk=risk,
                    payment_id="pay_1", available=SHIPPED_PSPS, health={}, player_id="player_1")
        assert names(got) == [first, second]
        got = route(config, method=method, currency="EUR", amount_minor=5000, country="DE", risk=risk,
                    payment_id="pay_1", available=SHIPPED_PSPS, health={first: OPEN}, player_id="player_1")
        assert names(got) == [second]
    payouts = payout_route(config, method=method, currency="EUR", amount_minor=5000, country="DE",
                           deposit_psp=first, available=SHIPPED_PSPS, health={})
    assert names(payouts)[0] == first and set(names(payouts)) == {first, second}
    # Closed loop to a method whose deposit PSP is down: the method's other PSP pays.
    payouts = payout_route(config, method=method, currency="EUR", amount_minor=5000, country="DE",
                           deposit_psp=first, available=SHIPPED_PSPS, health={first: OPEN})
    assert names(payouts) == [second]
