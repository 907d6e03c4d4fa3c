"""The risk rules file (`risk/rules.yaml`, or the file PAYLOOP_RISK_FILE names): scored rules, the thresholds and
levels their total leads to, the KYC gates of each market and the AML settings. Read once at start-up with the
routing file's exact YAML loader; every error names the file, the line and the field.

Each rule's conditions are compiled here, at load, into plain predicates over RiskFacts, so evaluating a deposit
(risk/engine.py) is a few attribute reads and comparisons per rule, with no parsing or look-up by name.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
)

from payloop.money import CURRENCY_EXPONENTS
from payloop.yaml_files import ConfigFileError, Loc, parse_mapping, read_file
from risk.types import OPERATIONS, VELOCITY_SUBJECTS, AmlSettings, Market, RiskFacts, VelocityCount

SHIPPED_RISK_FILE = "rules.yaml"  # inside the `risk` package
DEFAULT_MARKET = "default"
MAX_RULE_SCORE = 1000
# players.controls.KycStatus's values (risk may not import players).
KYC_STATUSES = ("unverified", "pending", "verified", "rejected")

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
Operation = Literal["deposit", "payout"]


class RiskConfigError(ConfigFileError):
    """A risk rules file that cannot be used; str() has one `file:line: field: message` line per problem."""

    what = "risk rules file"


# --- the facts a rule may read --------------------------------------------------------------------------------

# What a fact's values are, which decides the literals a condition may give and the operators it may use.
MONEY_EUR = "money_eur"  # euro, decimal strings in the file, euro cents in RiskFacts
MONEY = "money"  # the payment's own currency (only next to a `currency` condition naming one currency)
INTEGER = "integer"
COUNTRY = "country"
CURRENCY = "currency"
TEXT = "text"


@dataclass(frozen=True)
class Fact:
    name: str  # as the rules file names it
    kind: str
    attribute: str  # on RiskFacts (for velocity counts: the key in RiskFacts.velocity)
    choices: tuple[str, ...] = ()  # a text fact's only values, when it has a fixed set


FACTS: dict[str, Fact] = {fact.name: fact for fact in (
    Fact("operation", TEXT, "operation", OPERATIONS),
    Fact("amount_eur", MONEY_EUR, "amount_eur_minor"),
    Fact("amount", MONEY, "amount_minor"),
    Fact("currency", CURRENCY, "currency"),
    Fact("method", TEXT, "method"),
    Fact("country", COUNTRY, "country"),
    Fact("ip_country", COUNTRY, "ip_country"),
    Fact("bin_country", COUNTRY, "bin_country"),
    Fact("device_id", TEXT, "device_id"),
    Fact("instrument", TEXT, "instrument"),
    Fact("kyc_status", TEXT, "kyc_status", KYC_STATUSES),
    Fact("account_age_days", INTEGER, "account_age_days"),
    Fact("lifetime_deposits_eur", MONEY_EUR, "lifetime_deposits_eur_minor"),
    Fact("lifetime_deposit_count", INTEGER, "lifetime_deposit_count"),
    Fact("lifetime_payouts_eur", MONEY_EUR, "lifetime_payouts_eur_minor"),
    Fact("chargebacks", INTEGER, "chargebacks"),
    Fact("players_on_device", INTEGER, "players_on_device"),
    Fact("players_on_instrument", INTEGER, "players_on_instrument"),
)}
_VELOCITY_RE = re.compile(rf"^count_({'|'.join(VELOCITY_SUBJECTS)})_([1-9][0-9]{{0,3}})([mhd])$")
_WINDOW_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
MAX_VELOCITY_WINDOW_SECONDS = 90 * 86400  # a quarter: longer is a lifetime fact, not velocity


def velocity_count(name: str) -> VelocityCount | None:
    """`count_device_24h` → VelocityCount("count_device_24h", "device", 86400); None for any other name."""
    match = _VELOCITY_RE.match(name)
    if match is None:
        return None
    subject, number, unit = match.groups()
    return VelocityCount(name, subject, int(number) * _WINDOW_UNIT_SECONDS[unit])


def _fact(name: str) -> Fact | None:
    if name in FACTS:
        return FACTS[name]
    if velocity_count(name) is not None:
        return Fact(name, INTEGER, name)
    return None


# --- the file's shape (pydantic); `when` is checked by hand below, per fact --------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Model):
    """Total enforced score → action: the highest threshold reached wins; below step_up_kyc the payment is allowed."""

    step_up_kyc: StrictInt = Field(ge=1)
    review: StrictInt = Field(ge=1)
    deny: StrictInt = Field(ge=1)


class Levels(_Model):
    """Total enforced score → risk level (shown to the client, given to routing); below medium: low."""

    medium: StrictInt = Field(ge=1)
    high: StrictInt = Field(ge=1)


class _RuleSpec(_Model):
    name: Name
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    operations: Annotated[list[Operation], Field(min_length=1)] = Field(default_factory=lambda: list(OPERATIONS))
    when: Annotated[dict[str, Any], Field(min_length=1)]
    score: StrictInt = Field(ge=-MAX_RULE_SCORE, le=MAX_RULE_SCORE)
    reason: Name | None = None  # defaults to the rule's name
    mode: Literal["enforce", "shadow"] = "enforce"


def _int_as_text(value: Any) -> Any:
    # An integer is an exact amount of euro; a bool is not a number here.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


EuroText = Annotated[str, BeforeValidator(_int_as_text),
                     StringConstraints(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]{1,2})?$")]


class _MarketSpec(_Model):
    kyc_before_first_deposit: StrictBool | None = None
    kyc_deposit_threshold_eur: EuroText | None = None
    kyc_before_payout: StrictBool | None = None


class _StructuringSpec(_Model):
    threshold_eur: EuroText | None = None
    margin_percent: StrictInt | None = Field(default=None, ge=1, le=50)
    min_operations: StrictInt | None = Field(default=None, ge=2)
    window_hours: StrictInt | None = Field(default=None, ge=1)


class _RapidInOutSpec(_Model):
    window_hours: StrictInt | None = Field(default=None, ge=1)
    min_turnover_percent: StrictInt | None = Field(default=None, ge=0)


class _SharedInstrumentSpec(_Model):
    min_players: StrictInt | None = Field(default=None, ge=2)


class _AmlSpec(_Model):
    cdd_threshold_eur: EuroText | None = None
    cdd_window_hours: StrictInt | None = Field(default=None, ge=1)
    structuring: _StructuringSpec = Field(default_factory=_StructuringSpec)
    rapid_in_out: _RapidInOutSpec = Field(default_factory=_RapidInOutSpec)
    shared_instrument: _SharedInstrumentSpec = Field(default_factory=_SharedInstrumentSpec)


class _FileSpec(_Model):
    thresholds: Thresholds
    levels: Levels
    rules: list[_RuleSpec] = Field(default_factory=list)
    markets: dict[Annotated[str, StringConstraints(pattern=r"^([A-Z]{2}|default)$")], _MarketSpec] = Field(
        default_factory=dict)
    aml: _AmlSpec = Field(default_factory=_AmlSpec)


# --- the loaded configuration ---------------------------------------------------------------------------------

Check = Callable[[RiskFacts], bool]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    operations: frozenset[str]
    score: int
    reason: str
    mode: str  # "enforce" | "shadow"
    facts_read: frozenset[str]  # the file's fact names its conditions read
    checks: tuple[Check, ...] = field(repr=False)  # all must hold

    def matches(self, facts: RiskFacts) -> bool:
        for check in self.checks:
            if not check(facts):
                return False
        return True


@dataclass(frozen=True)
class RiskConfig:
    source: str
    rules: tuple[Rule, ...]
    thresholds: Thresholds
    levels: Levels
    markets: Mapping[str, Market]  # "default" and each country listed, with the default's values filled in
    aml: AmlSettings
    velocity_counts: tuple[VelocityCount, ...]  # only those the rules read
    rules_by_operation: Mapping[str, tuple[Rule, ...]] = field(repr=False)
    needed_facts: Mapping[str, frozenset[str]] = field(repr=False)  # per operation: see needs()

    def market(self, country: str | None) -> Market:
        return self.markets.get(country or DEFAULT_MARKET) or self.markets[DEFAULT_MARKET]

    def needs(self, fact_name: str, operation: str | None = None) -> bool:
        """Whether a rule of `operation` (None: of any) reads the fact, so the gatherer can skip the others'
        queries. Takes the file's name ("lifetime_deposits_eur") or RiskFacts' attribute
        ("lifetime_deposits_eur_minor")."""
        operations = OPERATIONS if operation is None else (operation,)
        return any(fact_name in self.needed_facts.get(op, ()) for op in operations)

    def velocity_counts_for(self, operation: str) -> tuple[VelocityCount, ...]:
        """The counts the rules of `operation` read."""
        return tuple(count for count in self.velocity_counts if self.needs(count.name, operation))


def default_risk_path() -> Path:
    return Path(str(resources.files("risk").joinpath(SHIPPED_RISK_FILE)))


def load_risk_file(path: str | Path) -> RiskConfig:
    path = Path(path)
    return parse_risk(read_file(path, RiskConfigError), source=str(path))


def load_risk(settings: Any) -> RiskConfig:
    """The file named by settings.risk_file (PAYLOOP_RISK_FILE), else the shipped risk/rules.yaml."""
    return load_risk_file(getattr(settings, "risk_file", None) or default_risk_path())


def parse_risk(text: str, source: str = "<string>") -> RiskConfig:
    document = parse_mapping(text, source, RiskConfigError, "`thresholds:`, `levels:` and `rules:`")
    try:
        spec = _FileSpec.model_validate(document.data)
    except ValidationError as err:
        raise RiskConfigError(source, document.validation_issues(err)) from None
    problems: list[tuple[Loc, str]] = []
    _check_order(spec, problems)
    rules = _compile_rules(spec.rules, problems)
    markets = _markets(spec.markets)
    if problems:
        raise RiskConfigError(source, document.issues(problems))
    return _config(source, spec, rules, markets)


def _config(source: str, spec: _FileSpec, rules: tuple[Rule, ...], markets: dict[str, Market]) -> RiskConfig:
    def with_attributes(read: set[str]) -> frozenset[str]:
        return frozenset(read | {FACTS[name].attribute for name in read if name in FACTS})

    read = {name for rule in rules for name in rule.facts_read}
    counts = tuple(c for name in sorted(read) if (c := velocity_count(name)) is not None)
    needed = {op: with_attributes({name for rule in rules if op in rule.operations for name in rule.facts_read})
              for op in OPERATIONS}
    return RiskConfig(
        source=source,
        rules=rules,
        thresholds=spec.thresholds,
        levels=spec.levels,
        markets=markets,
        aml=_aml(spec.aml),
        velocity_counts=counts,
        rules_by_operation={op: tuple(r for r in rules if op in r.operations) for op in OPERATIONS},
        needed_facts=needed,
    )


def _check_order(spec: _FileSpec, problems: list[tuple[Loc, str]]) -> None:
    t = spec.thresholds
    if t.review < t.step_up_kyc:
        problems.append((("thresholds", "review"), f"{t.review} is below step_up_kyc {t.step_up_kyc}: thresholds rise"))
    if t.deny < t.review:
        problems.append((("thresholds", "deny"), f"{t.deny} is below review {t.review}: thresholds rise"))
    if spec.levels.high < spec.levels.medium:
        problems.append((("levels", "high"), f"{spec.levels.high} is below medium {spec.levels.medium}"))


def _euro_cents(text: str) -> int:
    whole, _, fraction = text.partition(".")
    return int(whole) * 100 + int(fraction.ljust(2, "0") or "0")


def _markets(specs: Mapping[str, _MarketSpec]) -> dict[str, Market]:
    default = _market(specs.get(DEFAULT_MARKET, _MarketSpec()), Market())
    markets = {DEFAULT_MARKET: default}
    for country, spec in specs.items():
        if country != DEFAULT_MARKET:
            markets[country] = _market(spec, default)
    return markets


def _market(spec: _MarketSpec, base: Market) -> Market:
    threshold = base.kyc_deposit_threshold_eur_minor
    if spec.kyc_deposit_threshold_eur is not None:
        threshold = _euro_cents(spec.kyc_deposit_threshold_eur)
    return Market(
        kyc_before_first_deposit=_given(spec.kyc_before_first_deposit, base.kyc_before_first_deposit),
        kyc_deposit_threshold_eur_minor=threshold,
        kyc_before_payout=_given(spec.kyc_before_payout, base.kyc_before_payout),
    )


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _aml(spec: _AmlSpec) -> AmlSettings:
    base = AmlSettings()

    def cents(text: str | None, default: int) -> int:
        return default if text is None else _euro_cents(text)

    return AmlSettings(
        cdd_threshold_eur_minor=cents(spec.cdd_threshold_eur, base.cdd_threshold_eur_minor),
        cdd_window_hours=_given(spec.cdd_window_hours, base.cdd_window_hours),
        structuring_threshold_eur_minor=cents(spec.structuring.threshold_eur, base.structuring_threshold_eur_minor),
        structuring_margin_percent=_given(spec.structuring.margin_percent, base.structuring_margin_percent),
        structuring_min_operations=_given(spec.structuring.min_operations, base.structuring_min_operations),
        structuring_window_hours=_given(spec.structuring.window_hours, base.structuring_window_hours),
        rapid_in_out_window_hours=_given(spec.rapid_in_out.window_hours, base.rapid_in_out_window_hours),
        rapid_in_out_min_turnover_percent=_given(spec.rapid_in_out.min_turnover_percent,
                                                 base.rapid_in_out_min_turnover_percent),
        shared_instrument_min_players=_given(spec.shared_instrument.min_players, base.shared_instrument_min_players),
    )


# --- conditions -----------------------------------------------------------------------------------------------

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
    "lte": operator.le,
}
_ORDERED = ("gt", "gte", "lt", "lte")
_LISTS = ("in", "not_in")
_FACT_REFERENCES = ("eq_fact", "ne_fact")
OPERATORS = (*_COMPARISONS, *_LISTS, *_FACT_REFERENCES, "missing")
_ORDERED_KINDS = (MONEY_EUR, MONEY, INTEGER)


class _Invalid(Exception):
    """One condition's problem, at a location inside it."""

    def __init__(self, loc: Loc, message: str) -> None:
        self.loc = loc
        self.message = message


def _compile_rules(specs: list[_RuleSpec], problems: list[tuple[Loc, str]]) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        loc: Loc = ("rules", i)
        if spec.name in seen:
            problems.append(((*loc, "name"), f"rule {spec.name!r} is defined twice"))
        seen.add(spec.name)
        currency_exponent = _pinned_currency_exponent(spec.when)
        checks: list[Check] = []
        facts_read: set[str] = set()
        for fact_name, condition in spec.when.items():
            try:
                fact = _fact(fact_name)
                if fact is None:
                    raise _Invalid((), f"unknown fact {fact_name!r} (facts: {', '.join(FACTS)}, count_<"
                                       f"{'|'.join(VELOCITY_SUBJECTS)}>_<N><m|h|d>)")
                if fact.kind == MONEY and currency_exponent is None:
                    raise _Invalid((), "`amount` is in the payment's currency: the rule needs a `currency` "
                                       "condition naming one currency (or use amount_eur)")
                if (count := velocity_count(fact_name)) and count.window_seconds > MAX_VELOCITY_WINDOW_SECONDS:
                    raise _Invalid((), "a velocity window is at most 90 days")
                new_checks, references = _compile_condition(fact, condition, currency_exponent or 0)
            except _Invalid as invalid:
                problems.append(((*loc, "when", fact_name, *invalid.loc), invalid.message))
                continue
            checks += new_checks
            facts_read |= {fact_name, *references}
        rules.append(Rule(
            name=spec.name, description=spec.description, operations=frozenset(spec.operations), score=spec.score,
            reason=spec.reason or spec.name, mode=spec.mode, facts_read=frozenset(facts_read), checks=tuple(checks),
        ))
    return tuple(rules)


def _pinned_currency_exponent(when: Mapping[str, Any]) -> int | None:
    """The exponent of the one currency a rule's `currency` condition names (`amount` is in it), else None."""
    condition = when.get("currency")
    if isinstance(condition, dict):
        named = condition.get("eq")
        if named is None and isinstance(condition.get("in"), list) and len(condition["in"]) == 1:
            named = condition["in"][0]
    else:
        named = condition
    return CURRENCY_EXPONENTS.get(named) if isinstance(named, str) else None


def _compile_condition(fact: Fact, condition: Any, exponent: int) -> tuple[list[Check], list[str]]:
    """A literal (equality) or a mapping of operators, all of which must hold. A fact that is None fails every
    operator but `missing: true`."""
    if isinstance(condition, list):
        raise _Invalid((), "a list is not a condition: write {in: [...]}")
    operators = condition if isinstance(condition, dict) else {"eq": condition}
    if not operators:
        raise _Invalid((), "give a value or at least one operator")
    checks: list[Check] = []
    references: list[str] = []
    get = _getter(fact)
    for op, operand in operators.items():
        where: Loc = (op,) if isinstance(condition, dict) else ()
        if op not in OPERATORS:
            raise _Invalid(where, f"unknown operator {op!r} (operators: {', '.join(OPERATORS)})")
        if op == "missing":
            if not isinstance(operand, bool):
                raise _Invalid(where, "true or false")
            checks.append(_missing(get) if operand else _present(get))
        elif op in _FACT_REFERENCES:
            other = _referenced_fact(fact, operand, where)
            references.append(other.name)
            checks.append(_same_as(get, _getter(other), equal=op == "eq_fact"))
        elif op in _LISTS:
            if not isinstance(operand, list) or not operand:
                raise _Invalid(where, "a non-empty list of values")
            values = frozenset(_literal(fact, value, (*where, j), exponent) for j, value in enumerate(operand))
            checks.append(_member(get, values, inside=op == "in"))
        else:
            if op in _ORDERED and fact.kind not in _ORDERED_KINDS:
                raise _Invalid(where, f"{op} compares numbers and money; {fact.name} is {fact.kind}")
            checks.append(_compare(get, _COMPARISONS[op], _literal(fact, operand, where, exponent)))
    return checks, references


def _referenced_fact(fact: Fact, operand: Any, where: Loc) -> Fact:
    other = _fact(operand) if isinstance(operand, str) else None
    if other is None:
        raise _Invalid(where, f"unknown fact {operand!r}")
    if other.kind != fact.kind:
        raise _Invalid(where, f"{fact.name} ({fact.kind}) cannot be compared with {other.name} ({other.kind})")
    return other


def _literal(fact: Fact, value: Any, where: Loc, exponent: int) -> object:
    """A value of the fact's kind, as RiskFacts holds it (money in minor units)."""
    if fact.kind in (MONEY_EUR, MONEY):
        places = 2 if fact.kind == MONEY_EUR else exponent
        text = _int_as_text(value)
        if not isinstance(text, str) or not re.fullmatch(r"(0|[1-9][0-9]*)(\.[0-9]+)?", text):
            raise _Invalid(where, f"{value!r}: money is a decimal string (\"500.00\")")
        whole, _, fraction = text.partition(".")
        if len(fraction) > places:
            raise _Invalid(where, f"{value!r}: at most {places} decimal places")
        return int(whole) * 10**places + int(fraction.ljust(places, "0") or "0")
    if fact.kind == INTEGER:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(where, f"{value!r}: {fact.name} is a whole number")
        return value
    if not isinstance(value, str):
        raise _Invalid(where, f"{value!r}: {fact.name} is text (quote it)")
    if fact.kind == COUNTRY and not re.fullmatch(r"[A-Z]{2}", value):
        raise _Invalid(where, f"{value!r}: a country is two capital letters (ISO 3166 alpha-2)")
    if fact.kind == CURRENCY and value not in CURRENCY_EXPONENTS:
        raise _Invalid(where, f"{value!r}: currency not supported")
    if fact.choices and value not in fact.choices:
        raise _Invalid(where, f"{value!r}: {fact.name} is one of {', '.join(fact.choices)}")
    return value


# The predicates themselves: closures over the getter and the literal, nothing looked up per call.

def _getter(fact: Fact) -> Callable[[RiskFacts], Any]:
    if velocity_count(fact.name) is not None:
        name = fact.name
        return lambda facts: facts.velocity.get(name)
    return operator.attrgetter(fact.attribute)


def _missing(get: Callable[[RiskFacts], Any]) -> Check:
    return lambda facts: get(facts) is None


def _present(get: Callable[[RiskFacts], Any]) -> Check:
    return lambda facts: get(facts) is not None


def _compare(get: Callable[[RiskFacts], Any], compare: Callable[[Any, Any], bool], literal: object) -> Check:
    def check(facts: RiskFacts) -> bool:
        value = get(facts)
        return value is not None and compare(value, literal)
    return check


def _member(get: Callable[[RiskFacts], Any], values: frozenset[object], inside: bool) -> Check:
    def check(facts: RiskFacts) -> bool:
        value = get(facts)
        return value is not None and (value in values) == inside
    return check


def _same_as(get: Callable[[RiskFacts], Any], get_other: Callable[[RiskFacts], Any], equal: bool) -> Check:
    def check(facts: RiskFacts) -> bool:
        value, other = get(facts), get_other(facts)
        return value is not None and other is not None and (value == other) == equal
    return check
