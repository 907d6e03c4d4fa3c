"""The routing file: which PSPs exist, what they take, what they cost, how their health is judged, and the
ordered routing rules. YAML, validated with pydantic; every error names the file, the line and the field.

YAML notes. The file is read with payloop.yaml_files' exact loader: unquoted decimals such as `1.4` stay the
string "1.4" (no floats are ever built), integers stay integers (accepted where a decimal string is expected),
and only `true`/`false` are booleans — so the country `NO` stays "NO" (YAML 1.1 would make it False).
"""

from __future__ import annotations

from collections import Counter
from decimal import ROUND_HALF_UP, Decimal, localcontext
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
)

from payloop.money import (
    CURRENCY_EXPONENTS,
    MoneyError,
    currency_exponent,
    to_minor_units,
)
from payloop.yaml_files import ConfigFileError, Loc, parse_mapping, read_file

RISK_LEVELS = ("low", "medium", "high")
ANY_COUNTRY = "*"
ANY_CURRENCY = "*"  # in Cost.fixed: the fee for every currency without its own
SHIPPED_ROUTING_FILE = "routing.yaml"  # inside the `psp` package

_DECIMAL_RE = r"^(0|[1-9][0-9]*)(\.[0-9]+)?$"


def _int_as_text(value: Any) -> Any:
    # An integer is an exact decimal; a bool is not a number here.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value


def _psp_shorthand(value: Any) -> Any:
    return {"psp": value} if isinstance(value, str) else value


def _fixed_shorthand(value: Any) -> Any:
    value = _int_as_text(value)
    return {ANY_CURRENCY: value} if isinstance(value, str) else value


DecimalText = Annotated[str, BeforeValidator(_int_as_text), StringConstraints(pattern=_DECIMAL_RE)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")]
Country = Annotated[str, StringConstraints(pattern=r"^([A-Z]{2}|\*)$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{2,99}$")]
Risk = Literal["low", "medium", "high"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AmountRange(_Model):
    """Decimal strings in the currency they belong to ("10.00" EUR); both ends inclusive, both optional."""

    min: DecimalText | None = None
    max: DecimalText | None = None


class Cost(_Model):
    """fee = fixed + amount × percentage / 100, rounded half-up to the currency's minor unit.

    `fixed` is a decimal string in the payment currency, either one value for every currency ("0.25") or one per
    currency ({EUR: "0.25", JPY: "30"}; "*" is the default for the others). `percentage` "1.4" means 1.4 %.
    """

    fixed: Annotated[dict[str, DecimalText], BeforeValidator(_fixed_shorthand)] = Field(
        default_factory=lambda: {ANY_CURRENCY: "0"})
    percentage: DecimalText = "0"

    def fee_minor(self, amount_minor: int, currency: str) -> int:
        exponent = currency_exponent(currency)
        fixed = self.fixed.get(currency, self.fixed.get(ANY_CURRENCY, "0"))
        with localcontext() as ctx:
            ctx.prec = 60  # exact for any amount up to MAX_MINOR_UNITS and any sane percentage
            fee = Decimal(fixed).scaleb(exponent) + Decimal(amount_minor) * Decimal(self.percentage) / 100
            return int(fee.quantize(Decimal(1), rounding=ROUND_HALF_UP))


_FREE = Cost()


class HealthThresholds(_Model):
    """When the circuit breaker opens: over the last `window_seconds` (and at most the last `window_size`
    attempts), at least `min_samples` attempts of which a share ≥ `failure_rate` (a fraction, "0.5") failed.
    It stays open `open_seconds`, then lets `half_open_probes` concurrent calls through as probes."""

    min_samples: int = Field(default=10, ge=1)
    failure_rate: DecimalText = "0.5"
    window_seconds: int = Field(default=60, ge=1)
    window_size: int = Field(default=100, ge=1, le=10_000)
    open_seconds: int = Field(default=30, ge=1)
    half_open_probes: int = Field(default=1, ge=1)


class StatusPoll(_Model):
    """How a payment at this PSP is polled once its webhook is late: `attempts` look-ups (default: the
    PAYLOOP_*_STATUS_POLL_ATTEMPTS setting), the first after the PAYLOOP_*_STATUS_POLL_INTERVAL_SECONDS setting,
    each next `backoff` times later (a decimal string, "2"), at most `max_interval_seconds` apart."""

    attempts: int | None = Field(default=None, ge=1, le=50)
    backoff: DecimalText = "1"
    max_interval_seconds: int = Field(default=3600, ge=1)


class PspConfig(_Model):
    name: Name
    methods: list[Name] = Field(default_factory=list)  # taken for payments
    payout_methods: list[Name] = Field(default_factory=list)  # paid out to
    countries: Annotated[list[Country], Field(min_length=1)]  # ISO 3166 alpha-2, or ["*"]
    currencies: Annotated[list[Currency], Field(min_length=1)]
    amounts: dict[Currency, AmountRange] = Field(default_factory=dict)  # per currency; payouts use them too
    cost: Cost = Field(default_factory=Cost)
    payout_cost: Cost | None = None  # defaults to `cost`
    # What a refund and a lost chargeback cost at this PSP; nothing when not given (many PSPs charge neither).
    # Used where the PSP reports no fee of its own; a reported fee always wins.
    refund_cost: Cost | None = None
    chargeback_cost: Cost | None = None
    eta: Annotated[str, StringConstraints(min_length=1, max_length=60)]
    payout_eta: Annotated[str, StringConstraints(min_length=1, max_length=60)] | None = None
    # The NAME of the setting / environment variable holding the webhook secret(s) — never the secret itself.
    webhook_secret: EnvName
    health: HealthThresholds = Field(default_factory=HealthThresholds)
    status_poll: StatusPoll = Field(default_factory=StatusPoll)

    _limits: dict[str, tuple[int | None, int | None]] = PrivateAttr(default_factory=dict)

    def serves(self, currency: str, country: str | None, amount_minor: int) -> bool:
        if currency not in self.currencies:
            return False
        if ANY_COUNTRY not in self.countries and country not in self.countries:
            return False
        low, high = self._limits.get(currency, (None, None))
        return (low is None or amount_minor >= low) and (high is None or amount_minor <= high)

    def accepts(self, method: str, currency: str, country: str | None, amount_minor: int) -> bool:
        return method in self.methods and self.serves(currency, country, amount_minor)

    def pays_out(self, method: str, currency: str, country: str | None, amount_minor: int) -> bool:
        return method in self.payout_methods and self.serves(currency, country, amount_minor)

    def fee_minor(self, amount_minor: int, currency: str) -> int:
        return self.cost.fee_minor(amount_minor, currency)

    def payout_fee_minor(self, amount_minor: int, currency: str) -> int:
        return (self.payout_cost or self.cost).fee_minor(amount_minor, currency)

    def refund_fee_minor(self, amount_minor: int, currency: str) -> int:
        """The fee for refunding `amount_minor`; zero when the file gives no `refund_cost`."""
        return (self.refund_cost or _FREE).fee_minor(amount_minor, currency)

    def chargeback_fee_minor(self, amount_minor: int, currency: str) -> int:
        """The fee for a lost chargeback of `amount_minor`; zero when the file gives no `chargeback_cost`."""
        return (self.chargeback_cost or _FREE).fee_minor(amount_minor, currency)


class CandidateSpec(_Model):
    psp: Name
    rank: int | None = Field(default=None, ge=1)  # all of a rule's candidates give one, or none (= list order)
    weight: int | None = Field(default=None, gt=0)  # A/B split among the candidates of the same rank


class Rule(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    country: Annotated[list[Country], BeforeValidator(_one_or_many)] | None = None
    currency: Annotated[list[Currency], BeforeValidator(_one_or_many)] | None = None
    method: Annotated[list[Name], BeforeValidator(_one_or_many)] | None = None
    risk: Annotated[list[Risk], BeforeValidator(_one_or_many)] | None = None
    amount: AmountRange | None = None  # needs exactly one `currency`
    candidates: Annotated[list[Annotated[CandidateSpec, BeforeValidator(_psp_shorthand)]], Field(min_length=1)]

    _amount_minor: tuple[int | None, int | None] = PrivateAttr(default=(None, None))
    _ranks: tuple[int, ...] = PrivateAttr(default=())

    def matches(self, *, method: str, currency: str, amount_minor: int, country: str | None,
                risk: str | None) -> bool:
        if self.method is not None and method not in self.method:
            return False
        if self.currency is not None and currency not in self.currency:
            return False
        if self.country is not None and country not in self.country and ANY_COUNTRY not in self.country:
            return False
        if self.risk is not None and risk not in self.risk:
            return False
        low, high = self._amount_minor
        return (low is None or amount_minor >= low) and (high is None or amount_minor <= high)

    def ranked(self) -> list[tuple[int, CandidateSpec]]:
        """(rank, candidate) in rank order, list order within a rank."""
        return sorted(zip(self._ranks, self.candidates, strict=True), key=lambda pair: pair[0])


class RoutingConfig(_Model):
    psps: Annotated[list[PspConfig], Field(min_length=1)]
    rules: list[Rule] = Field(default_factory=list)

    _source: str = PrivateAttr(default="<string>")

    @property
    def source(self) -> str:
        return self._source

    def psp(self, name: str) -> PspConfig | None:
        return next((p for p in self.psps if p.name == name), None)

    def thresholds(self, name: str) -> HealthThresholds:
        psp = self.psp(name)
        return psp.health if psp is not None else HealthThresholds()


# --- loading -------------------------------------------------------------------------------------------------


class RoutingConfigError(ConfigFileError):
    """A routing file that cannot be used; str() has one `file:line: field: message` line per problem."""

    what = "routing file"


def default_routing_path() -> Path:
    return Path(str(resources.files("psp").joinpath(SHIPPED_ROUTING_FILE)))


def load_routing_file(path: str | Path) -> RoutingConfig:
    path = Path(path)
    return parse_routing(read_file(path, RoutingConfigError), source=str(path))


def load_routing(settings: Any) -> RoutingConfig:
    """The routing file named by settings.routing_file (PAYLOOP_ROUTING_FILE), else the shipped psp/routing.yaml."""
    path = getattr(settings, "routing_file", None) or default_routing_path()
    return load_routing_file(path)


def parse_routing(text: str, source: str = "<string>") -> RoutingConfig:
    document = parse_mapping(text, source, RoutingConfigError, "`psps:` and `rules:`")
    try:
        config = RoutingConfig.model_validate(document.data)
    except ValidationError as err:
        raise RoutingConfigError(source, document.validation_issues(err)) from None
    issues = document.issues(_check(config))
    if issues:
        raise RoutingConfigError(source, issues)
    config._source = source
    return config


# --- checks pydantic cannot express: money, references, ranks and weights -------------------------------------

def _check_currency(currency: str, loc: Loc, problems: list[tuple[Loc, str]]) -> bool:
    if currency not in CURRENCY_EXPONENTS:
        problems.append((loc, f"currency {currency!r} is not supported"))
        return False
    return True


def _minor(value: str | None, currency: str, loc: Loc, problems: list[tuple[Loc, str]]) -> int | None:
    if value is None:
        return None
    try:
        return to_minor_units(value, currency)
    except MoneyError as err:
        problems.append((loc, f"{value!r}: {err}"))
        return None


def _check_range(rng: AmountRange, currency: str, loc: Loc,
                 problems: list[tuple[Loc, str]]) -> tuple[int | None, int | None]:
    low = _minor(rng.min, currency, (*loc, "min"), problems)
    high = _minor(rng.max, currency, (*loc, "max"), problems)
    if low is not None and high is not None and low > high:
        problems.append(((*loc, "min"), f"min {rng.min} is above max {rng.max}"))
    return low, high


def _check_cost(cost: Cost, psp: PspConfig, loc: Loc, problems: list[tuple[Loc, str]]) -> None:
    for key, value in cost.fixed.items():
        if key == ANY_CURRENCY:
            # The default applies to every currency without its own value: it must fit each of them.
            for currency in psp.currencies:
                if currency in cost.fixed or currency not in CURRENCY_EXPONENTS:
                    continue
                if len(value.partition(".")[2]) > currency_exponent(currency):
                    message = (f"{value!r} would apply to {currency}, whose amounts have at most "
                               f"{currency_exponent(currency)} decimal places: give {currency} its own fixed fee")
                    problems.append(((*loc, "fixed"), message))
        elif key not in psp.currencies:
            problems.append(((*loc, "fixed", key), f"{key} is not one of this PSP's currencies"))
        elif len(value.partition(".")[2]) > currency_exponent(key):
            message = f"{value!r}: {key} amounts have at most {currency_exponent(key)} decimal places"
            problems.append(((*loc, "fixed", key), message))
    if Decimal(cost.percentage) >= 100:
        problems.append(((*loc, "percentage"), "must be below 100 (it is a percentage: \"1.4\" is 1.4 %)"))


def _check(config: RoutingConfig) -> list[tuple[Loc, str]]:
    from payloop.settings import (
        Settings,  # the secret references name settings (PAYLOOP_*) or env vars
    )

    problems: list[tuple[Loc, str]] = []
    names = Counter(p.name for p in config.psps)
    by_name: dict[str, PspConfig] = {}
    for i, psp in enumerate(config.psps):
        loc: Loc = ("psps", i)
        if names[psp.name] > 1 and psp.name in by_name:
            problems.append(((*loc, "name"), f"PSP {psp.name!r} is defined twice"))
        by_name.setdefault(psp.name, psp)
        if not psp.methods and not psp.payout_methods:
            problems.append(((*loc, "methods"), "a PSP needs methods or payout_methods"))
        if ANY_COUNTRY in psp.countries and len(psp.countries) > 1:
            problems.append(((*loc, "countries"), '"*" (every country) stands alone'))
        for j, currency in enumerate(psp.currencies):
            _check_currency(currency, (*loc, "currencies", j), problems)
        limits: dict[str, tuple[int | None, int | None]] = {}
        for currency, rng in psp.amounts.items():
            if currency not in psp.currencies:
                problems.append(((*loc, "amounts", currency), f"{currency} is not one of this PSP's currencies"))
                continue
            if currency in CURRENCY_EXPONENTS:
                limits[currency] = _check_range(rng, currency, (*loc, "amounts", currency), problems)
        psp._limits = limits
        for name in ("cost", "payout_cost", "refund_cost", "chargeback_cost"):
            cost = getattr(psp, name)
            if cost is not None:
                _check_cost(cost, psp, (*loc, name), problems)
        rate = Decimal(psp.health.failure_rate)
        if not 0 < rate <= 1:
            problems.append(((*loc, "health", "failure_rate"), "a fraction above 0 and at most 1 (\"0.5\" = 50 %)"))
        if not 1 <= Decimal(psp.status_poll.backoff) <= 10:
            problems.append(((*loc, "status_poll", "backoff"), "a factor from 1 (even intervals) to 10"))
        if psp.webhook_secret.startswith("PAYLOOP_"):
            setting = psp.webhook_secret.removeprefix("PAYLOOP_").lower()
            if setting not in Settings.model_fields:
                problems.append(((*loc, "webhook_secret"), f"{psp.webhook_secret} names no payloop setting"))

    for i, rule in enumerate(config.rules):
        loc = ("rules", i)
        for j, currency in enumerate(rule.currency or []):
            _check_currency(currency, (*loc, "currency", j), problems)
        if rule.amount is not None:
            if rule.currency is None or len(rule.currency) != 1:
                problems.append(((*loc, "amount"), "an amount range needs exactly one `currency` in the rule"))
            elif rule.currency[0] in CURRENCY_EXPONENTS:
                rule._amount_minor = _check_range(rule.amount, rule.currency[0], (*loc, "amount"), problems)
        given = [c.rank is not None for c in rule.candidates]
        if any(given) and not all(given):
            j = given.index(False)
            problems.append(((*loc, "candidates", j, "rank"), "give every candidate a rank, or none (list order)"))
        ranks = tuple(c.rank if c.rank is not None else k + 1 for k, c in enumerate(rule.candidates))
        rule._ranks = ranks
        seen: set[str] = set()
        for j, cand in enumerate(rule.candidates):
            cloc = (*loc, "candidates", j)
            if cand.psp in seen:
                problems.append(((*cloc, "psp"), f"PSP {cand.psp!r} is listed twice"))
            seen.add(cand.psp)
            psp = by_name.get(cand.psp)
            if psp is None:
                problems.append(((*cloc, "psp"), f"unknown PSP {cand.psp!r} (not defined under psps)"))
                continue
            if rule.method is not None and not set(rule.method) & set(psp.methods):
                message = (f"PSP {cand.psp!r} does not take {'/'.join(rule.method)} "
                           f"(its methods: {', '.join(psp.methods) or 'none'})")
                problems.append(((*cloc, "psp"), message))
            if rule.currency is not None and not set(rule.currency) & set(psp.currencies):
                problems.append(((*cloc, "psp"), f"PSP {cand.psp!r} does not take {'/'.join(rule.currency)}"))
        for rank in sorted(set(ranks)):
            group = [(j, c) for j, (r, c) in enumerate(zip(ranks, rule.candidates, strict=True)) if r == rank]
            weighted = [c.weight is not None for _, c in group]
            if any(weighted) and not all(weighted):
                j = next(j for j, c in group if c.weight is None)
                problems.append(((*loc, "candidates", j, "weight"),
                                 f"candidates of rank {rank} are weighted: every one of them needs a weight"))
    return problems
