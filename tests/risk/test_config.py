"""The risk rules file: what it accepts, and every refusal naming the file, the line and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from payloop.settings import Settings
from risk.config import RiskConfigError, default_risk_path, load_risk, parse_risk
from risk.types import AmlSettings, Market, VelocityCount

BASE = """\
thresholds: {step_up_kyc: 40, review: 60, deny: 100}
levels: {medium: 30, high: 60}
rules:
  - name: declared_de
    description: "A test rule."
    when:
      country: DE
    score: 10
"""


def _marked(text: str) -> tuple[str, int]:
    """The text without its `#<` marker, and the 1-based line the marker was on."""
    lines = textwrap.dedent(text).splitlines()
    line = next(i for i, entry in enumerate(lines, 1) if "#<" in entry)
    return "\n".join(entry.split("#<")[0].rstrip() for entry in lines) + "\n", line


def _when(condition: str) -> str:
    """BASE with its rule's condition replaced by the given YAML line(s) (indented under `when:`)."""
    return BASE.replace("      country: DE\n", textwrap.indent(condition, "      "))


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param(_when("colour: red  #<\n"), "rules[0].when.colour", "unknown fact 'colour'", id="unknown-fact"),
        pytest.param(_when("count_card_1h: {gte: 3}  #<\n"), "rules[0].when.count_card_1h", "unknown fact",
                     id="unknown-velocity-subject"),
        pytest.param(_when("count_player_91d: {gte: 3}  #<\n"), "rules[0].when.count_player_91d",
                     "at most 90 days", id="velocity-window-too-long"),
        pytest.param(_when("country: DE\nip_country: {like: D}  #<\n"), "rules[0].when.ip_country.like",
                     "unknown operator 'like'", id="unknown-operator"),
        pytest.param(_when("country: {gt: DE}  #<\n"), "rules[0].when.country.gt", "compares numbers and money",
                     id="ordered-operator-on-text"),
        pytest.param(_when("country: de  #<\n"), "rules[0].when.country", "two capital letters",
                     id="lowercase-country"),
        pytest.param(_when("country: [DE, AT]  #<\n"), "rules[0].when.country", "write {in: [...]}",
                     id="list-without-in"),
        pytest.param(_when("country:\n  in: []  #<\n"), "rules[0].when.country.in", "non-empty list",
                     id="empty-in"),
        pytest.param(_when("country:\n  not_in: [DE, 7]  #<\n"), "rules[0].when.country.not_in[1]", "is text",
                     id="number-in-a-country-list"),
        pytest.param(_when("amount_eur: {gte: \"1000.001\"}  #<\n"), "rules[0].when.amount_eur.gte",
                     "at most 2 decimal places", id="money-too-precise"),
        pytest.param(_when("amount_eur: {gte: lots}  #<\n"), "rules[0].when.amount_eur.gte", "decimal string",
                     id="money-not-a-number"),
        pytest.param(_when("amount_eur: {gte: \"-5.00\"}  #<\n"), "rules[0].when.amount_eur.gte", "decimal string",
                     id="money-negative"),
        pytest.param(_when("amount: {gte: \"10.00\"}  #<\n"), "rules[0].when.amount", "`currency` condition",
                     id="amount-without-currency"),
        pytest.param(_when("currency: JPY\namount: {gte: \"10.50\"}  #<\n"), "rules[0].when.amount.gte",
                     "at most 0 decimal places", id="amount-in-the-pinned-currency"),
        pytest.param(_when("currency: XXX  #<\n"), "rules[0].when.currency", "not supported", id="bad-currency"),
        pytest.param(_when("chargebacks: {gte: \"1\"}  #<\n"), "rules[0].when.chargebacks.gte", "whole number",
                     id="integer-as-text"),
        pytest.param(_when("chargebacks: true  #<\n"), "rules[0].when.chargebacks", "whole number",
                     id="integer-as-bool"),
        pytest.param(_when("kyc_status: approved  #<\n"), "rules[0].when.kyc_status", "one of unverified",
                     id="unknown-kyc-status"),
        pytest.param(_when("operation: bet  #<\n"), "rules[0].when.operation", "one of deposit, payout",
                     id="unknown-operation"),
        pytest.param(_when("device_id: {missing: \"yes\"}  #<\n"), "rules[0].when.device_id.missing",
                     "true or false", id="missing-not-a-bool"),
        pytest.param(_when("country: {eq_fact: currency}  #<\n"), "rules[0].when.country.eq_fact",
                     "cannot be compared with currency", id="fact-of-another-kind"),
        pytest.param(_when("country: {ne_fact: homeland}  #<\n"), "rules[0].when.country.ne_fact",
                     "unknown fact 'homeland'", id="unknown-referenced-fact"),
        pytest.param(BASE.replace("score: 10", "score: 1001  #<"), "rules[0].score", "less than or equal to 1000",
                     id="score-too-high"),
        pytest.param(BASE.replace("score: 10", "score: \"10\"  #<"), "rules[0].score", "valid integer",
                     id="score-as-text"),
        pytest.param(BASE.replace("score: 10", "score: 10\n    mode: loud  #<"), "rules[0].mode",
                     "'enforce' or 'shadow'", id="unknown-mode"),
        pytest.param(BASE.replace("score: 10", "score: 10\n    operations: [bet]  #<"), "rules[0].operations[0]",
                     "'deposit' or 'payout'", id="unknown-operation-list"),
        pytest.param(BASE.replace("  - name: declared_de", "  - name: Declared-DE  #<"), "rules[0].name",
                     "should match pattern", id="bad-rule-name"),
        pytest.param(BASE.replace("  - name: declared_de", "  - name: declared_de  #<").replace(
            "    description: \"A test rule.\"\n", ""), "rules[0].description", "Field required",
            id="missing-description-points-at-its-rule"),
        pytest.param(BASE + "  - name: declared_de  #<\n    description: \"Again.\"\n    when: {country: AT}\n"
                     "    score: 5\n", "rules[1].name", "defined twice", id="rule-twice"),
        pytest.param(BASE.replace("    when:\n      country: DE\n", "    when: {}  #<\n"), "rules[0].when",
                     "at least 1 item", id="rule-without-conditions"),
        pytest.param(BASE.replace("score: 10", "score: 10\n    score: 20  #<"), "rules[0].score", "duplicate key",
                     id="duplicate-key"),
        pytest.param(BASE.replace("score: 10", "score: 10\n    weight: 2  #<"), "rules[0].weight",
                     "Extra inputs are not permitted", id="unknown-rule-field"),
        pytest.param(BASE.replace("review: 60, deny: 100}", "review: 30, deny: 100}  #<"),
                     "thresholds.review", "thresholds rise", id="thresholds-fall"),
        pytest.param(BASE.replace("levels: {medium: 30, high: 60}", "levels: {medium: 30, high: 20}  #<"),
                     "levels.high", "below medium", id="levels-fall"),
        pytest.param(BASE.replace("deny: 100}", "deny: 0}  #<"),
                     "thresholds.deny", "greater than or equal to 1", id="threshold-zero"),
        pytest.param(BASE + "markets:\n  gb: {kyc_before_payout: true}  #<\n", "markets.gb (key)",
                     "should match pattern", id="market-not-a-country"),
        pytest.param(BASE + "markets:\n  GB: {kyc_before_payout: \"yes\"}  #<\n", "markets.GB.kyc_before_payout",
                     "valid boolean", id="market-flag-not-a-bool"),
        pytest.param(BASE + "markets:\n  default: {kyc_deposit_threshold_eur: \"2000.001\"}  #<\n",
                     "markets.default.kyc_deposit_threshold_eur", "should match pattern",
                     id="market-threshold-too-precise"),
        pytest.param(BASE + "aml:\n  structuring: {min_operations: 1}  #<\n", "aml.structuring.min_operations",
                     "greater than or equal to 2", id="aml-structuring-one-operation"),
        pytest.param(BASE + "aml:\n  cdd_threshold: \"2000.00\"  #<\n", "aml.cdd_threshold",
                     "Extra inputs are not permitted", id="aml-unknown-key"),
        pytest.param(BASE.replace("score: 10", "score: 10 : 5  #<"), "", "not valid YAML", id="broken-yaml"),
    ],
)
def test_an_invalid_file_is_refused_naming_file_line_and_field(text: str, field: str, message: str) -> None:
    body, line = _marked(text)
    with pytest.raises(RiskConfigError) as caught:
        parse_risk(body, "conf/rules.yaml")
    issues = caught.value.issues
    assert any(i.field == field and message in i.message and i.line == line for i in issues), str(caught.value)
    assert f"conf/rules.yaml:{line}: {field or '(file)'}: " in str(caught.value)
    assert str(caught.value).startswith("invalid risk rules file conf/rules.yaml:")


def test_every_problem_is_reported_at_once() -> None:
    text = _when("colour: red\nchargebacks: {gte: \"1\"}\n").replace("review: 60", "review: 30")
    with pytest.raises(RiskConfigError) as caught:
        parse_risk(text)
    assert {i.field for i in caught.value.issues} == {
        "thresholds.review", "rules[0].when.colour", "rules[0].when.chargebacks.gte"}


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "the file is empty"), ("- a\n- b\n", "must be a mapping"), ("rules: []\n", "Field required")],
    ids=["empty", "a-list", "no-thresholds"],
)
def test_a_file_without_the_basics_is_refused(text: str, message: str) -> None:
    with pytest.raises(RiskConfigError, match=message):
        parse_risk(text)


def test_a_country_that_yaml_1_1_would_read_as_false_stays_a_country() -> None:
    config = parse_risk(_when("country: NO\n"))
    assert config.rules[0].facts_read == {"country"}
    assert config.rules_by_operation["deposit"] == config.rules


def test_defaults_of_an_optional_field() -> None:
    rule = parse_risk(BASE).rules[0]
    assert rule.operations == {"deposit", "payout"}
    assert rule.mode == "enforce"
    assert rule.reason == "declared_de"  # the name, when no reason is given


def test_markets_take_the_default_for_what_they_leave_unset() -> None:
    config = parse_risk(BASE + textwrap.dedent("""\
        markets:
          default: {kyc_deposit_threshold_eur: "1500.50", kyc_before_payout: true}
          GB: {kyc_before_first_deposit: true}
          SE: {kyc_before_payout: false, kyc_deposit_threshold_eur: 0}
        """))
    assert config.markets["default"] == Market(False, 150_050, True)
    assert config.market("GB") == Market(True, 150_050, True)
    assert config.market("SE") == Market(False, 0, False)
    assert config.market("FR") == config.market(None) == config.markets["default"]


def test_without_markets_or_aml_the_defaults_apply() -> None:
    config = parse_risk(BASE)
    assert config.markets == {"default": Market()}
    assert config.aml == AmlSettings()


def test_aml_settings_in_euro_cents() -> None:
    config = parse_risk(BASE + textwrap.dedent("""\
        aml:
          cdd_threshold_eur: "1000.00"
          cdd_window_hours: 48
          structuring: {threshold_eur: 3000, margin_percent: 5, min_operations: 4, window_hours: 24}
          rapid_in_out: {window_hours: 12, min_turnover_percent: 50}
          shared_instrument: {min_players: 3}
        """))
    assert config.aml == AmlSettings(
        cdd_threshold_eur_minor=100_000, cdd_window_hours=48, structuring_threshold_eur_minor=300_000,
        structuring_margin_percent=5, structuring_min_operations=4, structuring_window_hours=24,
        rapid_in_out_window_hours=12, rapid_in_out_min_turnover_percent=50, shared_instrument_min_players=3)


def test_only_the_facts_and_counts_the_rules_read_are_needed() -> None:
    config = parse_risk(_when("count_device_24h: {gte: 3}\ncount_player_15m: 2\nip_country: {ne_fact: country}\n"
                              "lifetime_deposits_eur: {gte: \"10.00\"}\n"))
    assert config.velocity_counts == (VelocityCount("count_device_24h", "device", 86_400),
                                      VelocityCount("count_player_15m", "player", 900))
    for name in ("count_device_24h", "ip_country", "country", "lifetime_deposits_eur",
                 "lifetime_deposits_eur_minor"):
        assert config.needs(name), name
    for name in ("players_on_device", "chargebacks", "lifetime_payouts_eur_minor", "count_ip_1h"):
        assert not config.needs(name), name


def test_the_facts_needed_are_per_operation() -> None:
    config = parse_risk(BASE + """\
  - name: large_first_payout
    description: "A payout rule."
    operations: [payout]
    when:
      lifetime_payouts_eur: {eq: "0"}
    score: 10
  - name: player_velocity
    description: "A deposit rule."
    operations: [deposit]
    when:
      count_player_1h: {gte: 10}
    score: 10
""")
    assert config.needs("lifetime_payouts_eur", "payout") and config.needs("lifetime_payouts_eur")
    assert not config.needs("lifetime_payouts_eur", "deposit")
    assert config.velocity_counts_for("deposit") == (VelocityCount("count_player_1h", "player", 3_600),)
    assert config.velocity_counts_for("payout") == ()


def test_the_shipped_file_is_the_default_and_settings_name_another(tmp_path: Path) -> None:
    assert load_risk(Settings()).source == str(default_risk_path())
    path = tmp_path / "rules.yaml"
    path.write_text(BASE)
    assert [r.name for r in load_risk(Settings(risk_file=path)).rules] == ["declared_de"]
    with pytest.raises(RiskConfigError, match="cannot read"):
        load_risk(Settings(risk_file=tmp_path / "missing.yaml"))
