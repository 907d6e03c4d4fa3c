"""Request and response bodies of the public API. Amounts are decimal strings; ids are validated strictly."""

from __future__ import annotations

from datetime import date as date_
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints,
)

from api.card_numbers import NoCardNumber
from incidents.models import INCIDENT_CLASSES
from payloop.money import to_decimal_string
from workflows.types import FxLock

# A player id, wherever one is taken (bodies and paths): 1-64 of letters, digits, "_", "-", "." — but not "." or
# "..", which are path segments URL resolution removes or climbs with (in clients, proxies, caches), so a request
# about that player would reach another resource. Said without look-ahead, which pydantic-core's regex lacks: one
# character that is not a dot, two that are not both dots, or three and more.
PLAYER_ID_PATTERN = r"^(?:[A-Za-z0-9_\-]|[A-Za-z0-9_\-][A-Za-z0-9_.\-]|\.[A-Za-z0-9_\-]|[A-Za-z0-9_.\-]{3,64})$"
PlayerId = Annotated[str, StringConstraints(pattern=PLAYER_ID_PATTERN), Field(examples=["alice"])]
PlayerIdPath = Annotated[str, Path(pattern=PLAYER_ID_PATTERN, examples=["alice"])]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), Field(examples=["EUR"], description="ISO 4217")]
Amount = Annotated[str, Field(max_length=32, examples=["50.00"], description="decimal string in major units")]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"),
                           Field(examples=["order-1"])]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$"),
                    Field(examples=["DE"], description="ISO 3166 alpha-2")]
SandboxScenario = Annotated[str, Field(max_length=40, examples=["approve"],
                                       description="the sandbox PSP's behaviour for this payment")]
SandboxCard = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$"),
                   Field(examples=["visa_de"], description="a sandbox card PSP's test card (its BIN country and "
                                                            "fingerprint); sandbox only")]
# Printable ASCII, no card number (a platform's device fingerprint, never a PAN).
DeviceId = Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]{1,100}$"), NoCardNumber,
                     Field(examples=["dev_7f3a9c"])]


def _printable(value: str) -> str:
    # Free text that is stored (a ledger record, an audit entry): PostgreSQL refuses NUL and no database takes a
    # lone surrogate, so such a value would fail its write (a 500, or an activity retried for ever), not the request.
    if any(ch < " " or ch == "\x7f" or "\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("must be printable text (no control characters)")
    return value


Printable = AfterValidator(_printable)


class PaymentMeta(BaseModel):
    # Only what the flow uses is accepted: anything else (card data included) is refused, not silently dropped.
    model_config = ConfigDict(extra="forbid")

    country: Country | None = None
    # The platform's device fingerprint: velocity and shared-device rules read it. `device` is the older name,
    # kept: either is used (device_id first).
    device_id: DeviceId | None = None
    device: DeviceId | None = None
    # What kind of device the player pays from: payments are counted by it on /metrics (conversion per device).
    device_class: Literal["mobile", "tablet", "desktop", "app"] | None = None
    sandbox_scenario: SandboxScenario | None = None
    sandbox_card: SandboxCard | None = None


# Where the player is sent back: no whitespace or control characters (a PSP and a browser follow it).
ReturnUrl = Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$"),
                     Field(examples=["https://casino.example/cashier/return"]), NoCardNumber]


class PaymentInitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "amount": "50.00", "currency": "EUR", "method": "card", "player_id": "alice",
        "return_url": "https://casino.example/return", "meta": {"country": "DE"}}]})

    amount: Amount
    currency: Currency
    method: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,30}$"), Field(examples=["card"])]
    player_id: PlayerId
    return_url: ReturnUrl
    idempotency_key: IdempotencyKey | None = None
    meta: PaymentMeta = Field(default_factory=PaymentMeta)


class CheckoutSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "player_id": "alice", "currency": "EUR", "amount": "50.00", "country": "DE",
        "return_url": "https://casino.example/cashier/return", "locale": "de"}]})

    player_id: PlayerId
    currency: Currency | None = Field(default=None, description="preselected; the player chooses when absent")
    amount: Amount | None = Field(default=None, description="preselected (needs currency); the player enters it "
                                                            "when absent")
    country: Country | None = Field(default=None, description="the player's country, for the methods offered; "
                                                              "else from the browser's language")
    return_url: ReturnUrl
    locale: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$"),
                      Field(examples=["de-DE"], description="BCP 47; the page follows the browser's "
                                                            "Accept-Language when absent or not supported")] | None = None


class CheckoutSessionResponse(BaseModel):
    session_id: str
    url: str = Field(description="absolute; give it to the player's browser (redirect or iframe)")
    expires_at: str = Field(description="ISO 8601; the URL's forms close then")
    locale: str | None = Field(description="the page's language (en, de, fi, es); null: the browser's")


class PaymentInitResponse(BaseModel):
    payment_id: str
    status: str
    psp: str | None = None
    redirect_url: str | None = None


class PaymentAmounts(BaseModel):
    """What the ledger holds for a deposit, as decimal strings in its currency (zeros before any money moved)."""

    captured_amount: str  # what the PSP captured
    credited_amount: str  # what of it went to the player
    credit_transfer_id: str | None = None
    refunded_amount: str  # refunds that succeeded
    refund_pending_amount: str  # refunds reserved, not final yet
    disputed_amount: str  # open disputes
    charged_back_amount: str  # disputes lost
    refundable_amount: str  # what a new refund may still take


class PspPaymentSummary(BaseModel):
    """The PSP's own view of what is under review: its capture, or the payment whose outcome was unknown."""

    psp: str
    psp_reference: str
    status: str
    amount: str | None  # null when the PSP named a currency this platform does not take
    amount_minor: int
    currency: str


class DepositFacts(BaseModel):
    payment_id: str
    status: str
    amount: str
    currency: str
    method: str
    player_id: str
    psp: str | None = None
    psp_reference: str | None = None
    failure_code: str | None = None
    review_reason: str | None = None
    created_at: str
    updated_at: str
    temporal_ui_url: str


class RiskHitView(BaseModel):
    rule: str
    score: int
    reason: str
    mode: str  # enforce | shadow


class RiskDecisionView(BaseModel):
    """One stage's decision of the risk rules (`pre`: before the PSP; `instrument`: on the PSP's card details)."""

    decision_id: str
    stage: str
    action: str
    score: int
    level: str
    hits: list[RiskHitView]
    shadow_hits: list[RiskHitView]
    shadow_action: str
    created_at: str


class FxView(BaseModel):
    """The conversion locked for a payment or payout in another currency than the player's wallet."""

    wallet_currency: str
    wallet_amount: str = Field(description="credited to (deposit) or charged from (payout) the wallet")
    rate: str = Field(description="the source's mid rate: wallet currency units per payment currency unit")
    spread_bps: int
    margin: str = Field(description="the house's spread, in the wallet currency")
    source: str
    rate_id: str
    quoted_at: str
    expires_at: str = Field(description="the source's expiry, for audit: the lock holds for the payment's life")

    @classmethod
    def of(cls, lock: FxLock | None) -> FxView | None:
        if lock is None:
            return None
        return cls(wallet_currency=lock.wallet_currency,
                   wallet_amount=to_decimal_string(lock.wallet_amount_minor, lock.wallet_currency),
                   rate=lock.rate, spread_bps=lock.spread_bps,
                   margin=to_decimal_string(lock.margin_minor, lock.wallet_currency), source=lock.source,
                   rate_id=lock.rate_id, quoted_at=lock.quoted_at, expires_at=lock.expires_at)


class PaymentView(PaymentAmounts, DepositFacts):
    redirect_url: str | None = None
    refund_ids: list[str]
    fx: FxView | None = None  # set when the deposit converts into the player's wallet currency
    risk_level: str | None = Field(default=None, description="low | medium | high: the risk rules' verdict")
    risk: list[RiskDecisionView] | None = Field(
        default=None, description="the risk decisions with their rule hits; only for keys with the ops scope")
    # Review information: only keys with the `ops` scope see it (null for others).
    review_psp_view: PspPaymentSummary | None = Field(
        default=None, description="while in review, the PSP's own view; only for keys with the ops scope")
    reviewed_by: str | None = Field(default=None, description="`<client>/<reviewer>`; only for keys with the ops "
                                                              "scope")


class OpsPaymentItem(PaymentAmounts, DepositFacts):
    """A deposit in the ops list: the payments table's facts and money."""

    client_id: str
    country: str | None = None
    fees: str  # every PSP fee booked for the payment


class OpsPaymentPage(BaseModel):
    payments: list[OpsPaymentItem]
    next_before: str | None = Field(description="pass as `before` for the next (older) page; null on the last")


class CurrencyBalance(BaseModel):
    currency: str
    available: str
    held: str
    posted: str


class WalletBalance(BaseModel):
    player_id: str
    balances: list[CurrencyBalance]


class WebhookAck(BaseModel):
    status: str  # accepted | duplicate | dead_letter


class DepositLimitView(BaseModel):
    currency: str
    period: str  # day | week | month
    amount: str  # in force now
    pending_amount: str | None = None  # the value that applies from pending_effective_at; null there = removal
    pending_effective_at: str | None = None


class PlayerProfileView(BaseModel):
    player_id: str
    kyc_status: str
    self_excluded: bool
    self_excluded_until: str | None = None  # null while self_excluded = indefinitely
    closed: bool
    deposit_limits: list[DepositLimitView]
    wallet_currency: str | None = None  # null until set, or until the player's first deposit


class WalletCurrencyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"currency": "EUR"}]})

    currency: Currency


class DepositLimitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"currency": "EUR", "period": "day", "amount": "500.00"}]})

    currency: Currency
    period: Literal["day", "week", "month"]
    amount: Amount | None  # required; null removes the limit (after 24 h)


def _iso_string(value: Any) -> Any:
    # JSON numbers would otherwise pass as Unix timestamps; a moment on this API is an ISO 8601 string.
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string with a time zone")
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_string)]


def _query_moment(value: Any) -> Any:
    # ISO 8601 only: pydantic would read "1700000000" as a Unix time. Kept in UTC, so comparisons and the database
    # never meet a moment that only exists in some far time zone (year 1 at +14:00 overflows).
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string with a time zone")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time such as 2026-01-31T00:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("must have a time zone, e.g. Z or +01:00")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is out of range") from None


QueryMoment = Annotated[datetime, BeforeValidator(_query_moment)]


class SelfExclusionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"until": "2030-01-01T00:00:00Z"}]})

    until: IsoDatetime | None  # required; null = indefinitely


class KycRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"status": "verified"}]})

    status: Literal["unverified", "pending", "verified", "rejected"]
    note: Annotated[str, Field(max_length=1000), NoCardNumber] | None = None


class AuditEntryView(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


class AuditLog(BaseModel):
    entries: list[AuditEntryView]


class PayoutMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    country: Country | None = None
    device_id: DeviceId | None = None
    sandbox_scenario: SandboxScenario | None = None


class PayoutInitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"amount": "10.00", "currency": "EUR", "player_id": "alice"}]})

    amount: Amount
    currency: Currency
    player_id: PlayerId
    idempotency_key: IdempotencyKey | None = None
    meta: PayoutMeta = Field(default_factory=PayoutMeta)


class PayoutInitResponse(BaseModel):
    payout_id: str
    status: str
    # Wallet information: only keys with the `wallet` scope see it.
    available_balance: str | None = Field(
        default=None, description="the player's available balance after the hold; only for keys with the wallet "
                                  "scope")


class PayoutView(BaseModel):
    payout_id: str
    status: str
    amount: str
    currency: str
    player_id: str
    psp: str | None = None
    method: str | None = None
    psp_reference: str | None = None
    failure_code: str | None = None
    review_reason: str | None = None
    reviewed_by: str | None = None
    deferred_until: str | None = None  # while the payout waits for its PSP to come back
    hold: str | None = None  # "held" | "posted" | "voided"
    fx: FxView | None = None  # set when the payout converts from the player's wallet currency
    risk_level: str | None = None  # low | medium | high: the risk rules' verdict
    risk: list[RiskDecisionView] | None = Field(
        default=None, description="the risk decisions with their rule hits; only for keys with the ops scope")
    created_at: str
    updated_at: str
    temporal_ui_url: str


class CancelPayoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "player asked"}]})

    reason: Annotated[str, Field(max_length=200), NoCardNumber] | None = None


INCIDENT_ID_PATTERN = r"^inc_[0-9a-f]{32}$"
INCIDENT_ID_EXAMPLE = "inc_3f9a1c0e5b7d4e2fa86c1d0b9e4f7a21"
IncidentId = Annotated[str, StringConstraints(pattern=INCIDENT_ID_PATTERN),
                       Field(examples=[INCIDENT_ID_EXAMPLE],
                             description="the incident this correction is taken for (422 unknown_incident if none "
                                         "has this id)")]


class ReviewDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"decision": "approve", "reviewer": "jane.doe", "reason": "documents checked"}]})

    decision: Literal["approve", "reject"]
    reviewer: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@\-]{1,100}$"), NoCardNumber]
    reason: Annotated[str, Field(max_length=500), Printable, NoCardNumber] | None = None
    # A decision taken for an incident (a currency mismatch's review, say): its report lists it.
    incident_id: IncidentId | None = None


class DepositReviewRequest(ReviewDecisionRequest):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"decision": "approve", "reviewer": "jane.doe", "reason": "PSP confirmed the capture"},
        {"decision": "approve", "amount": "12.50", "reviewer": "jane.doe", "reason": "player sent 12.50"},
        {"decision": "reject", "reviewer": "jane.doe", "reason": "capture in the wrong currency"}]})

    # approve only: credit less than the PSP captured (the rest is refunded at the PSP).
    amount: Amount | None = None


RefundReason = Annotated[str, StringConstraints(min_length=1, max_length=200), Printable, NoCardNumber,
                         Field(examples=["player request"])]


class RefundMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sandbox_scenario: SandboxScenario | None = None


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"amount": "10.00", "reason": "player request"}]})

    amount: Amount
    reason: RefundReason
    idempotency_key: IdempotencyKey | None = None
    meta: RefundMeta = Field(default_factory=RefundMeta)
    allow_shortfall: StrictBool = Field(
        default=False, description="refund even when the player no longer has the money (the rest becomes a "
                                   "receivable); only for keys that also have the ops scope")


class RefundCreated(BaseModel):
    refund_id: str
    payment_id: str
    status: str
    amount: str
    currency: str


class RefundView(BaseModel):
    refund_id: str
    payment_id: str
    status: str  # pending | in_review (outcome unknown: the money stays held) | succeeded | failed
    amount: str
    currency: str
    psp: str | None = None
    psp_reference: str | None = None  # the PSP's reference of the refund
    failure_code: str | None = None
    review_reason: str | None = None
    fee: str | None = None  # the PSP's fee for the refund, once it reported one
    created_at: str
    updated_at: str
    temporal_ui_url: str


class RefundList(BaseModel):
    refunds: list[RefundView]


class DisputeItem(BaseModel):
    psp: str
    dispute_id: str
    payment_id: str
    player_id: str
    state: str  # opened | won | lost
    amount: str
    currency: str
    held: str  # taken from the player's balance
    shortfall: str  # what the player lacked (a receivable)
    fee: str | None = None  # the PSP's chargeback fee
    reason_code: str | None = None
    opened_at: str
    resolved_at: str | None = None
    temporal_ui_url: str


class DisputePage(BaseModel):
    disputes: list[DisputeItem]
    next_before: str | None = Field(description="pass as `before` for the next (older) page; null on the last")


class MarginRowView(BaseModel):
    method: str | None  # null where the rows do not say (e.g. a payout without one)
    psp: str | None
    currency: str
    deposits_count: int
    deposits: str
    refunds_count: int
    refunds: str
    chargebacks_count: int
    chargebacks: str
    fees: str
    payouts_count: int
    payouts: str
    fx_margin: str  # the spread kept on conversions into or out of this currency's wallets
    net_margin: str  # deposits - refunds - chargebacks - fees - payouts + fx_margin
    chargeback_rate: str | None  # lost disputes / credited deposits; null without deposits
    cost_per_deposit: str | None  # fees / credited deposits; null without deposits


class MarginReport(BaseModel):
    model_config = ConfigDict(validate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    rows: list[MarginRowView]


class HealthStatus(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: str
    temporal: str


class PspHealthView(BaseModel):
    psp: str
    samples: int = Field(description="attempts in the circuit breaker's window: since `window_start`, at most the "
                                     "PSP's `window_size` newest")
    success_rate: str | None = Field(description='decimal string over `samples`, e.g. "0.7500"; null without samples')
    error_rate: str | None = Field(description="decimal string over `samples`: the share the circuit breaker "
                                               "compares with its `failure_rate`; null without samples")
    p95_latency_ms: int | None = Field(description="over `samples`; null without samples")
    circuit: Literal["closed", "open", "half_open"]
    forced: Literal["open", "closed"] | None = Field(
        description="held so by ops (`POST /v1/ops/psps/{psp}/circuit`) whatever its failures; null: the breaker's")
    opened_at: str | None = Field(description="when the circuit opened; null while closed")
    window_seconds: int = Field(description="the PSP's circuit-breaker window (its `health.window_seconds`)")
    window_start: str = Field(description="the window's first instant: `window_seconds` ago, or when the circuit "
                                          "last changed state if that is later (older attempts no longer count)")
    available: bool = Field(description="the PSP can take traffic now: a connector is registered for it and its "
                                        "circuit is not open (half-open lets probes through, so it counts)")


class PspHealthList(BaseModel):
    psps: list[PspHealthView]


class PaymentMethodOption(BaseModel):
    method: str
    fee: str
    eta: str


class PaymentMethods(BaseModel):
    currency: str
    amount: str
    country: str | None
    methods: list[PaymentMethodOption]


class WebhookEventView(BaseModel):
    id: int
    psp: str
    event_id: str
    payment_id: str
    psp_reference: str
    status: str
    amount_minor: int
    currency: str
    failure_code: str | None
    kind: str | None = None  # payment | payout | refund | dispute (null on events stored before kinds)
    dispute_id: str | None = None
    reason_code: str | None = None
    fee_minor: int | None = None
    state: str  # received | signalled | dead_letter
    dead_letter_reason: str | None
    received_at: datetime
    updated_at: datetime


class WebhookDeliveryView(BaseModel):
    outcome: str
    detail: str | None
    at: datetime


class WebhookEventDetail(WebhookEventView):
    deliveries: list[WebhookDeliveryView]


# ---- reconciliation ------------------------------------------------------------------------------------------------

RECON_ACTIONS = Literal["accept", "adjust", "write_off", "rematch"]


def _iso_day(value: Any) -> Any:
    # Only "YYYY-MM-DD": pydantic would also read a number as a Unix time.
    if not isinstance(value, str) or len(value) != 10:
        raise ValueError("must be a day as YYYY-MM-DD")
    return value


class ReconRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"psp": "card", "date": "2026-12-04"}, {"psp": "ewallet", "date": "2026-12-01", "as_of": "2026-12-05T00:00:00Z"}]})

    psp: Annotated[str, Field(max_length=40)]
    date: Annotated[date_, BeforeValidator(_iso_day), Field(description="the settlement day (UTC), YYYY-MM-DD")]
    as_of: Annotated[QueryMoment | None, Field(description="evaluate the settlement SLAs at this moment; default now")] = None


class ReconClassTotal(BaseModel):
    count: int
    amounts: dict[str, str] = Field(description="per currency, the sum of the gross amounts (decimal strings)")


class ReconRunView(BaseModel):
    run_id: str
    psp: str
    date: str
    as_of: str | None
    evaluated_at: str = Field(description="the moment the SLAs were evaluated at (as_of, or when the run began)")
    state: str  # running | completed | failed
    failure_reason: str | None = None
    started_at: str
    finished_at: str | None = None
    classes: dict[str, ReconClassTotal] = Field(description="per class: matched, expected, and each kind of case")
    temporal_ui_url: str


class ReconRunPage(BaseModel):
    runs: list[ReconRunView]
    next_before: str | None = Field(description="pass as `before` for the next (older) page; null on the last")


class ReconResolutionView(BaseModel):
    action: str
    amount: str | None = None
    rematch_with: str | None = None
    note: str
    resolved_by: str
    resolved_at: str
    transfer_ids: list[str]


class ReconCaseView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    case_id: str
    psp: str
    date: str = Field(description="the day of the run that opened it")
    class_: str = Field(alias="class")
    state: str  # open | resolved
    kind: str  # capture | refund | payout | chargeback | chargeback_reversal | chargeback_fee
    item_key: str | None = Field(description="our id of the movement (payment, refund, payout, <psp>:<dispute>)")
    payment_id: str | None = None
    line_id: str | None = Field(None, description="the PSP's id of the report line; none for a movement of ours")
    psp_reference: str | None = None
    booked_on: str | None = None
    reported_currency: str | None = None
    reported_gross: str | None = None
    reported_fee: str | None = None
    ledger_currency: str | None = None
    ledger_gross: str | None = None
    ledger_fee: str | None = None
    first_run_id: str
    last_run_id: str
    created_at: str
    resolution: ReconResolutionView | None = None
    temporal_ui_url: str | None = Field(None, description="the history of the payment, refund, payout or dispute")


class ReconCasePage(BaseModel):
    cases: list[ReconCaseView]
    next_before: str | None = Field(description="pass as `before` for the next (older) page; null on the last")


class ReconResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"action": "accept", "note": "PSP confirmed it settles tomorrow"},
        {"action": "adjust", "amount": "-1.00", "note": "PSP short-paid; claimed back under ticket 1234"},
        {"action": "write_off", "note": "below the claim threshold"},
        {"action": "rematch", "rematch_with": "pay_0123456789abcdef01234567", "note": "PSP quoted the wrong order"}]})

    action: RECON_ACTIONS
    amount: Annotated[str, Field(max_length=33, pattern=r"^-?[0-9]", description="adjust only: decimal string, "
                                 "signed: what the PSP owes us more (or less, with a minus)")] | None = None
    rematch_with: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,200}$")] | None = None
    note: Annotated[str, Field(min_length=1, max_length=500), Printable, NoCardNumber]


# ---- risk: AML cases (api/routes/risk.py) -----------------------------------------------------------------------


class RiskCaseDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"decision": "escalate", "note": "source of funds asked for"}, {"decision": "clear", "note": "salary"}]})

    decision: Literal["clear", "escalate", "report"]
    note: Annotated[str, Field(min_length=1, max_length=2000, description="why: kept on the case's timeline"),
                    Printable, NoCardNumber]


class RiskCaseView(BaseModel):
    case_id: str
    player_id: str
    kind: str = Field(description="cdd_threshold | structuring | rapid_in_out | unusual_route | shared_instrument")
    state: str = Field(description="open | escalated (active: the player's payouts go to review) | cleared | reported")
    reason: str = Field(description="what opened it")
    subject_ids: list[str] = Field(description="the payments and payouts of every hit")
    facts: dict[str, Any] = Field(description="the latest hit's figures (sums in euro cents, counts)")
    hits: int
    created_at: str
    updated_at: str
    decided_by: str | None = None
    decided_at: str | None = None
    decision_note: str | None = None


class RiskCasePage(BaseModel):
    cases: list[RiskCaseView]
    next_before: str | None = Field(description="pass as `before` for the next (older) page; null on the last")


class RiskCaseEventView(BaseModel):
    kind: str = Field(description="opened | hit | clear | escalate | report")
    at: str
    actor: str | None = None
    reason: str
    subject_ids: list[str] | None = None
    facts: dict[str, Any] | None = None


class RiskTransactionView(BaseModel):
    type: str = Field(description="deposit | payout")
    id: str
    created_at: str
    amount: str
    currency: str
    method: str | None = None
    status: str
    in_pattern: bool = Field(description="one of the case's subject_ids")
    temporal_ui_url: str


class RiskCaseDetailView(RiskCaseView):
    events: list[RiskCaseEventView] = Field(description="the timeline, oldest first")
    transactions: list[RiskTransactionView] = Field(description="the pattern's payments and payouts, oldest first")
    payments: list[RiskTransactionView] = Field(description="the player's newest deposits")
    payouts: list[RiskTransactionView] = Field(description="the player's newest payouts")


# --- ops corrections (README: Corrections) ----------------------------------------------------------------------

# An incident's id as the monitor makes it (incidents/store.py new_incident_id): the ops routes' paths and the
# corrections' `incident_id`, whose audit entry names it so the incident's report lists it.

class OpsActionRequest(BaseModel):
    """The body every correction takes (optional where there is nothing else to say)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"incident_id": INCIDENT_ID_EXAMPLE}]})

    incident_id: IncidentId | None = None


class WebhookBulkReplayRequest(OpsActionRequest):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [
        {"psp": "card", "from": "2026-12-05T10:00:00Z", "to": "2026-12-05T11:00:00Z", "limit": 100}]})

    psp: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")] | None = None
    received_from: Annotated[QueryMoment | None, Field(alias="from", description="received at or after; ISO 8601 "
                                                                                   "with a time zone")] = None
    received_to: Annotated[QueryMoment | None, Field(alias="to", description="received before")] = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100


class ReplayFailure(BaseModel):
    id: int
    code: str = Field(description="why it is still a dead letter: unknown_payment, payment_finished, "
                                  "signal_failed (the payment engine was unavailable; try again) …")


class WebhookBulkReplayResult(BaseModel):
    replayed: list[int] = Field(description="the stored events' ids now signalled to their workflows")
    failed: list[ReplayFailure] = Field(description="the events still dead letters, each with why")


class CircuitForceRequest(OpsActionRequest):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"state": "open", "incident_id": INCIDENT_ID_EXAMPLE}, {"state": "auto"}]})

    state: Literal["open", "closed", "auto"] = Field(
        description="open: no traffic unless every candidate is open; closed: failures never open it; auto: back "
                    "to the circuit breaker, closed")


class MethodSwitchRequest(OpsActionRequest):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False}]})

    enabled: StrictBool


class MethodSwitchView(BaseModel):
    method: str
    enabled: bool
    updated_at: str | None = Field(description="when it was last switched; null if never")
    updated_by: str | None = Field(description="the API client that switched it; null if never")


class MethodSwitchList(BaseModel):
    methods: list[MethodSwitchView]


# --- incidents and alerts (api/routes/incidents.py) -------------------------------------------------------------


class IncidentView(BaseModel):
    incident_id: str
    incident_class: str = Field(description=" | ".join(INCIDENT_CLASSES))
    scope: str = Field(description='what it is about: "psp=card,method=card", "psp=card" or "all"')
    state: str = Field(description="open | resolved")
    diagnosis: str
    opened_at: str
    updated_at: str
    resolved_at: str | None
    resolved_by: str | None = Field(description='"monitor" (its cause cleared) or the ops client')
    first_seen_at: str | None = Field(description="the oldest sign of the cause the monitor saw")
    figures_at_open: dict[str, Any]
    figures_now: dict[str, Any]


class IncidentPage(BaseModel):
    incidents: list[IncidentView]
    next_before: str | None = Field(description="pass as `before` for the next (older) page; null on the last")


class IncidentEventView(BaseModel):
    kind: str = Field(description="opened | reopened | updated | resolved")
    at: str
    actor: str
    details: dict[str, Any]


class AffectedView(BaseModel):
    kind: str = Field(description="payment | payout")
    id: str
    status: str = Field(description="its status now (one not yet in its table: its workflow's, or running when "
                                     "the workflow cannot say now)")
    final: bool = Field(description="settled: a deposit in_review waits for a person, so it is not")
    deferred_until: str | None = Field(default=None, description="a running payout deferred until its PSP is "
                                                                 "back: when it tries again by itself")
    temporal_ui_url: str


class CorrectionView(BaseModel):
    at: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


class IncidentDetailView(IncidentView):
    timeline: list[IncidentEventView]
    affected: list[AffectedView]
    corrections: list[CorrectionView] = Field(description="the ops actions taken for this incident (audit log)")


class IncidentResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=500)


class AlertView(BaseModel):
    id: int
    kind: str
    at: str
    reference: str
    payment_id: str | None
    payout_id: str | None
    refund_id: str | None
    recon_run: str | None
    details: dict[str, str]


class AlertPage(BaseModel):
    alerts: list[AlertView]
    next_before: int | None = Field(description="pass as `before` for the next (older) page; null on the last")
