"""Request and response bodies of the public API. Amounts are decimal strings; ids are validated strictly."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

PlayerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Amount = Annotated[str, Field(max_length=32, examples=["50.00"], description="decimal string in major units")]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
SANDBOX_SCENARIOS = (
    "approve", "decline", "challenge", "3ds_fail", "no_webhook", "lost",
    "duplicate_webhook", "out_of_order", "wrong_amount", "flaky", "slow",
)


class PaymentMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    device: Annotated[str, Field(max_length=100)] | None = None
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
