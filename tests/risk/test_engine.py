"""Scoring: each operator, unknown facts, shadow rules, thresholds and levels, and the shipped rule set."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from payloop.settings import Settings
from risk.config import Levels, RiskConfig, Thresholds, load_risk, parse_risk
from risk.engine import action_of, evaluate, level_of
from risk.types import RuleHit
from tests.risk.helpers import facts

HEAD = """\
thresholds: {step_up_kyc: 40, review: 60, deny: 100}
levels: {medium: 30, high: 60}
rules:
"""


def rule(name: str, when: str, score: int = 10, mode: str = "enforce", operations: str = "[deposit, payout]") -> str:
    return (f"  - name: {name}\n    description: \"A test rule.\"\n    operations: {operations}\n"
            f"    when:\n{textwrap.indent(when, '      ')}    score: {score}\n    mode: {mode}\n")


def fires(when: str, **changes: Any) -> bool:
    config = parse_risk(HEAD + rule("probe", when))
    return bool(evaluate(config, facts(**changes)).hits)


@pytest.mark.parametrize(
    ("when", "changes", "expected"),
    [
        # A literal is equality.
        ("country: DE\n", {}, True),
        ("country: DE\n", {"country": "AT"}, False),
        ("country: {eq: DE}\n", {}, True),
        ("country: {eq: DE}\n", {"country": "AT"}, False),
        ("country: {ne: DE}\n", {"country": "AT"}, True),
        ("country: {ne: DE}\n", {}, False),
        ("country: {in: [AT, DE]}\n", {}, True),
        ("country: {in: [AT, CH]}\n", {}, False),
        ("country: {not_in: [AT, CH]}\n", {}, True),
        ("country: {not_in: [AT, DE]}\n", {}, False),
        # Money in euro: decimal strings against euro cents (CLEAN deposits 50.00).
        ("amount_eur: {gt: \"49.99\"}\n", {}, True),
        ("amount_eur: {gt: \"50.00\"}\n", {}, False),
        ("amount_eur: {gte: \"50.00\"}\n", {}, True),
        ("amount_eur: {gte: \"50.01\"}\n", {}, False),
        ("amount_eur: {lt: \"50.01\"}\n", {}, True),
        ("amount_eur: {lt: \"50\"}\n", {}, False),
        ("amount_eur: {lte: 50}\n", {}, True),
        ("amount_eur: {lte: \"49.99\"}\n", {}, False),
        ("lifetime_payouts_eur: {eq: \"0\"}\n", {"lifetime_payouts_eur_minor": 0}, True),
        ("lifetime_payouts_eur: {eq: \"0\"}\n", {}, False),
        # Money in the payment's currency, next to a currency condition.
        ("currency: JPY\namount: {gte: \"5000\"}\n", {"currency": "JPY", "amount_minor": 5000}, True),
        ("currency: JPY\namount: {gte: \"5000\"}\n", {"currency": "JPY", "amount_minor": 4999}, False),
        ("currency: {in: [EUR]}\namount: {gte: \"50.00\"}\n", {}, True),
        # Integers and velocity counts.
        ("chargebacks: {gte: 1}\n", {"chargebacks": 1}, True),
        ("chargebacks: {gte: 1}\n", {}, False),
        ("count_device_24h: {gt: 2}\n", {"count_device_24h": 3}, True),
        ("count_device_24h: {gt: 2}\n", {"count_device_24h": 2}, False),
        # One fact against another.
        ("ip_country: {ne_fact: country}\n", {"ip_country": "FR"}, True),
        ("ip_country: {ne_fact: country}\n", {}, False),
        ("bin_country: {eq_fact: country}\n", {}, True),
        ("bin_country: {eq_fact: country}\n", {"bin_country": "FR"}, False),
        ("lifetime_payouts_eur: {ne_fact: lifetime_deposits_eur}\n", {}, True),
        ("lifetime_payouts_eur: {ne_fact: lifetime_deposits_eur}\n", {"lifetime_payouts_eur_minor": 50_000}, False),
        # missing: the only operator that matches an unknown fact.
        ("device_id: {missing: true}\n", {"device_id": None}, True),
        ("device_id: {missing: true}\n", {}, False),
        ("device_id: {missing: false}\n", {}, True),
        ("device_id: {missing: false}\n", {"device_id": None}, False),
        # Several operators on one fact, and several facts: all must hold.
        ("account_age_days: {gte: 1, lt: 7}\n", {"account_age_days": 6}, True),
        ("account_age_days: {gte: 1, lt: 7}\n", {"account_age_days": 7}, False),
        ("country: DE\nmethod: card\n", {}, True),
        ("country: DE\nmethod: card\n", {"method": "ewallet"}, False),
        ("kyc_status: {ne: verified}\n", {"kyc_status": "pending"}, True),
        ("operation: payout\n", {"operation": "payout"}, True),
        ("operation: payout\n", {}, False),
    ],
)
def test_each_operator(when: str, changes: dict[str, Any], expected: bool) -> None:
    assert fires(when, **changes) is expected


@pytest.mark.parametrize(
    ("when", "known"),
    [("ip_country: DE\n", {}), ("ip_country: {ne: DE}\n", {"ip_country": "FR"}),
     ("ip_country: {in: [DE]}\n", {}), ("ip_country: {not_in: [FR]}\n", {}),
     ("ip_country: {eq_fact: country}\n", {}), ("ip_country: {ne_fact: country}\n", {"ip_country": "FR"}),
     ("country: {ne_fact: ip_country}\n", {"ip_country": "FR"}), ("players_on_device: {gte: 0}\n", {}),
     ("players_on_device: {lt: 5}\n", {}), ("count_ip_1h: {gte: 0}\n", {}), ("amount_eur: {gte: \"0\"}\n", {})],
)
def test_a_condition_on_an_unknown_fact_does_not_hold(when: str, known: dict[str, Any]) -> None:
    assert fires(when, **known) is True
    # The same condition with the fact unknown does not hold, whatever the operator.
    unknown = {"ip_country": None, "players_on_device": None, "amount_eur_minor": None, "count_ip_1h": None}
    assert fires(when, **unknown) is False


def test_a_rule_scores_only_its_operations() -> None:
    config = parse_risk(HEAD + rule("payouts_only", "country: DE\n", operations="[payout]"))
    assert evaluate(config, facts()).hits == ()
    assert [h.rule for h in evaluate(config, facts(operation="payout")).hits] == ["payouts_only"]


def test_shadow_rules_are_recorded_never_acted_on() -> None:
    config = parse_risk(HEAD + rule("enforced", "country: DE\n", score=30)
                        + rule("shadowed", "method: card\n", score=80, mode="shadow"))
    decision = evaluate(config, facts(), stage="instrument")
    assert decision.hits == (RuleHit("enforced", 30, "enforced", "enforce"),)
    assert decision.shadow_hits == (RuleHit("shadowed", 80, "shadowed", "shadow"),)
    # Acted on: the enforced 30 only (allow, medium); had the shadow rule been enforced: 110, deny.
    assert (decision.action, decision.score, decision.level) == ("allow", 30, "medium")
    assert decision.shadow_action == "deny"
    assert decision.stage == "instrument"


def test_scores_add_up_and_a_trust_signal_subtracts() -> None:
    config = parse_risk(HEAD + rule("declared_de", "country: DE\n", score=70)
                        + rule("card_payer", "method: card\n", score=50)
                        + rule("old_account", "account_age_days: {gte: 30}\n", score=-25))
    decision = evaluate(config, facts())
    assert decision.score == 95
    assert decision.action == "review"
    assert [h.rule for h in decision.hits] == ["declared_de", "card_payer", "old_account"]  # file order


THRESHOLDS = Thresholds(step_up_kyc=40, review=60, deny=100)
LEVELS = Levels(medium=30, high=60)


@pytest.mark.parametrize(
    ("score", "action"),
    [(-50, "allow"), (0, "allow"), (39, "allow"), (40, "step_up_kyc"), (59, "step_up_kyc"), (60, "review"),
     (99, "review"), (100, "deny"), (1000, "deny")],
)
def test_the_highest_threshold_reached_wins(score: int, action: str) -> None:
    assert action_of(THRESHOLDS, score) == action


def test_equal_thresholds_give_the_higher_action() -> None:
    assert action_of(Thresholds(step_up_kyc=50, review=50, deny=50), 50) == "deny"


@pytest.mark.parametrize(("score", "level"), [(-5, "low"), (29, "low"), (30, "medium"), (59, "medium"),
                                              (60, "high"), (500, "high")])
def test_levels(score: int, level: str) -> None:
    assert level_of(LEVELS, score) == level


# --- the shipped rule set -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped() -> RiskConfig:
    return load_risk(Settings())


def test_the_shipped_file_loads_with_the_agreed_rules(shipped: RiskConfig) -> None:
    assert [r.name for r in shipped.rules] == [
        "ip_country_differs", "bin_country_differs", "sanctioned_country", "sanctioned_ip_country",
        "new_account_large_deposit", "player_velocity", "device_velocity", "instrument_velocity", "ip_velocity",
        "shared_device", "shared_instrument", "chargeback_history", "large_first_payout", "no_device_id"]
    assert all(len(r.description) > 20 for r in shipped.rules)
    assert {r.name for r in shipped.rules if r.mode == "shadow"} == {"large_first_payout", "no_device_id"}
    assert (shipped.thresholds, shipped.levels) == (THRESHOLDS, LEVELS)
    assert shipped.market("GB").kyc_before_first_deposit and shipped.market("GB").kyc_before_payout
    assert shipped.market("DE").kyc_deposit_threshold_eur_minor == 200_000


@pytest.mark.parametrize("operation", ["deposit", "payout"])
def test_no_shipped_rule_fires_on_a_clean_payment(shipped: RiskConfig, operation: str) -> None:
    decision = evaluate(shipped, facts(operation=operation))
    assert (decision.hits, decision.shadow_hits, decision.action, decision.level) == ((), (), "allow", "low")


# Each rule: facts that make it fire (alone), and the nearest facts that do not.
PATTERNS = [
    ("ip_country_differs", {"ip_country": "FR"}, {"ip_country": None}),
    ("bin_country_differs", {"bin_country": "BR"}, {"bin_country": "BR", "operation": "payout"}),
    ("sanctioned_country", {"country": "KP", "ip_country": None, "bin_country": None},
     {"country": "KR", "ip_country": None, "bin_country": None}),
    ("sanctioned_ip_country", {"ip_country": "IR", "country": None, "bin_country": None},
     {"ip_country": "IQ", "country": None, "bin_country": None}),
    ("new_account_large_deposit", {"account_age_days": 0, "amount_eur_minor": 100_000},
     {"account_age_days": 1, "amount_eur_minor": 100_000}),
    ("player_velocity", {"count_player_1h": 10}, {"count_player_1h": 9}),
    ("device_velocity", {"count_device_24h": 15}, {"count_device_24h": 14}),
    ("instrument_velocity", {"count_instrument_24h": 10}, {"count_instrument_24h": 9}),
    ("ip_velocity", {"count_ip_1h": 30}, {"count_ip_1h": 29}),
    ("shared_device", {"players_on_device": 3}, {"players_on_device": 2}),
    ("shared_instrument", {"players_on_instrument": 2}, {"players_on_instrument": 1}),
    ("chargeback_history", {"chargebacks": 1}, {"chargebacks": 0}),
    ("large_first_payout", {"operation": "payout", "lifetime_payouts_eur_minor": 0, "amount_eur_minor": 100_000},
     {"operation": "payout", "lifetime_payouts_eur_minor": 1, "amount_eur_minor": 100_000}),
    ("no_device_id", {"device_id": None, "players_on_device": None},
     {"device_id": None, "players_on_device": None, "operation": "payout"}),
]


@pytest.mark.parametrize(("name", "pattern", "near_miss"), PATTERNS, ids=[p[0] for p in PATTERNS])
def test_each_shipped_rule_fires_on_its_pattern(shipped: RiskConfig, name: str, pattern: dict[str, Any],
                                                near_miss: dict[str, Any]) -> None:
    decision = evaluate(shipped, facts(**pattern))
    assert [h.rule for h in (*decision.hits, *decision.shadow_hits)] == [name]
    quiet = evaluate(shipped, facts(**near_miss))
    assert (quiet.hits, quiet.shadow_hits) == ((), ())


def test_a_sanctioned_country_is_denied(shipped: RiskConfig) -> None:
    decision = evaluate(shipped, facts(country="IR", ip_country="IR", bin_country="IR"))
    assert decision.action == "deny" and decision.level == "high"
