"""Request and response bodies of the public API. Amounts are decimal strings; ids are validated strictly."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

PlayerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Amount = Annotated[str, Field(max_length=32, examples=["50.00"], description="decimal string in major units")]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]


class PaymentMeta(BaseModel):
    # Only what the flow uses is accepted: anything else (card data included) is refused, not silently dropped.
    model_config = ConfigDict(extra="forbid")

    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    device: Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]{1,100}$")] | None = None
    sandbox_scenario: Annotated[str, Field(max_length=40)] | None = None


class PaymentInitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    currency: Currency
    method: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,30}$")]
    player_id: PlayerId
    return_url: Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[^\s]+$")]
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
    model_config = ConfigDict(extra="forbid")

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
    model_config = ConfigDict(extra="forbid")

    until: IsoDatetime | None  # required; null = indefinitely


class KycRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["unverified", "pending", "verified", "rejected"]
    note: Annotated[str, Field(max_length=1000)] | None = None


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

    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    sandbox_scenario: Annotated[str, Field(max_length=40)] | None = None


class PayoutInitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    currency: Currency
    player_id: PlayerId
    idempotency_key: IdempotencyKey | None = None
    meta: PayoutMeta = Field(default_factory=PayoutMeta)


class PayoutInitResponse(BaseModel):
    payout_id: str
    status: str
    available_balance: str


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
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(max_length=200)] | None = None


class ReviewDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    reviewer: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@\-]{1,100}$")]
    reason: Annotated[str, Field(max_length=500)] | None = None
