"""Request and response bodies of the public API. Amounts are decimal strings; ids are validated strictly."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from api.card_numbers import NoCardNumber

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


class PaymentMeta(BaseModel):
    # Only what the flow uses is accepted: anything else (card data included) is refused, not silently dropped.
    model_config = ConfigDict(extra="forbid")

    country: Country | None = None
    device: Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]{1,100}$"), NoCardNumber] | None = None
    sandbox_scenario: SandboxScenario | None = None


class PaymentInitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "amount": "50.00", "currency": "EUR", "method": "card", "player_id": "alice",
        "return_url": "https://casino.example/return", "meta": {"country": "DE"}}]})

    amount: Amount
    currency: Currency
    method: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,30}$"), Field(examples=["card"])]
    player_id: PlayerId
    # No whitespace or control characters: the PSP sends the player there.
    return_url: Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$"),
                          Field(examples=["https://casino.example/return"]), NoCardNumber]
    idempotency_key: IdempotencyKey | None = None
    meta: PaymentMeta = Field(default_factory=PaymentMeta)


class PaymentInitResponse(BaseModel):
    payment_id: str
    status: str
    psp: str | None = None
    redirect_url: str | None = None


class PaymentView(BaseModel):
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
    redirect_url: str | None = None
    created_at: str
    updated_at: str
    temporal_ui_url: str


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
    created_at: str
    updated_at: str
    temporal_ui_url: str


class CancelPayoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "player asked"}]})

    reason: Annotated[str, Field(max_length=200), NoCardNumber] | None = None


class ReviewDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"decision": "approve", "reviewer": "jane.doe", "reason": "documents checked"}]})

    decision: Literal["approve", "reject"]
    reviewer: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@\-]{1,100}$"), NoCardNumber]
    reason: Annotated[str, Field(max_length=500), NoCardNumber] | None = None


class HealthStatus(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: str
    temporal: str


class PspHealthView(BaseModel):
    psp: str
    samples: int
    success_rate: str | None  # decimal string; null without samples
    error_rate: str | None
    p95_latency_ms: int | None
    circuit: str  # closed | open | half_open
    opened_at: str | None
    available: bool


class PspHealthList(BaseModel):
    window_seconds: int
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
