"""Inputs, results and signal payloads of the workflows and the activities they call.

Plain dataclasses of strings and ints: they are what Temporal histories record, so they carry money as minor
units + currency, and no card data or personal data beyond the player id.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DepositStatus:
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    CREDITED = "credited"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    IN_REVIEW = "in_review"

    FINAL = frozenset({CREDITED, FAILED, REJECTED, EXPIRED, IN_REVIEW})


@dataclass
class DepositInput:
    payment_id: str
    client_id: str
    player_id: str
    amount_minor: int
    currency: str
    method: str
    return_url: str
    country: str | None = None
    sandbox_scenario: str | None = None
    webhook_timeout_seconds: float = 120.0
    status_poll_attempts: int = 3
    status_poll_interval_seconds: float = 5.0


@dataclass
class InitAnswer:
    """What `POST /v1/payments/init` returns synchronously: the PSP's first answer, or why there is none."""

    payment_id: str
    status: str
    psp: str | None = None
    redirect_url: str | None = None
    failure_code: str | None = None


@dataclass
class DepositState:
    payment_id: str
    client_id: str
    player_id: str
    amount_minor: int
    currency: str
    method: str
    status: str
    created_at: str
    updated_at: str
    psp: str | None = None
    psp_reference: str | None = None
    redirect_url: str | None = None
    failure_code: str | None = None
    review_reason: str | None = None
    captured_amount_minor: int | None = None
    credit_transfer_id: str | None = None
    attempts: list[str] = field(default_factory=list)


@dataclass
class PspEventSignal:
    """A verified PSP webhook (or a status look-up), reduced to what the workflow decides on."""

    event_id: str
    psp: str
    psp_reference: str
    status: str
    amount_minor: int
    currency: str
    failure_code: str | None = None


# --- activity inputs / outputs ---------------------------------------------------------------------------


@dataclass
class ScreenDepositInput:
    payment_id: str
    player_id: str
    amount_minor: int
    currency: str


@dataclass
class ScreeningResult:
    outcome: str  # "allow" | "deny"
    code: str | None = None
    reason: str | None = None


@dataclass
class RouteInput:
    method: str
    currency: str
    amount_minor: int
    country: str | None = None


@dataclass
class CreatePspPaymentInput:
    psp: str
    payment_id: str
    player_id: str
    amount_minor: int
    currency: str
    method: str
    return_url: str
    country: str | None = None
    sandbox_scenario: str | None = None


@dataclass
class PspPaymentRef:
    psp: str
    payment_id: str


@dataclass
class PspPaymentView:
    psp: str
    psp_reference: str
    status: str
    amount_minor: int
    currency: str
    redirect_url: str | None = None
    failure_code: str | None = None


@dataclass
class CreditDepositInput:
    payment_id: str
    player_id: str
    psp: str
    amount_minor: int
    currency: str


@dataclass
class LedgerPosting:
    transfer_id: str
    replayed: bool


class ActivityName:
    """Activity names: the workflows call activities by name, so they never import activity (I/O) code."""

    SCREEN_DEPOSIT = "screen_deposit"
    ROUTE_DEPOSIT = "route_deposit"
    CREATE_PSP_PAYMENT = "create_psp_payment"
    GET_PSP_PAYMENT = "get_psp_payment"
    CANCEL_PSP_PAYMENT = "cancel_psp_payment"
    CREDIT_DEPOSIT = "credit_deposit"


class ErrorType:
    """ApplicationError types raised by activities that the workflows decide on."""

    PSP_DECLINED = "PspDeclined"
    PSP_REQUEST_REJECTED = "PspRequestRejected"
    PSP_TRANSIENT = "PspTransientError"
    LEDGER_CONFLICT = "LedgerConflict"
