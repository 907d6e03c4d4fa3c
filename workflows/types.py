"""Inputs, results and signal payloads of the workflows and the activities they call.

Plain dataclasses of strings and ints: they are what Temporal histories record, so they carry money as minor
units + currency, and no card data or personal data beyond the player id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class DepositStatus:
    PENDING = "pending"
    KYC_REQUIRED = "kyc_required"  # its market or its risk asks for verified KYC first: it waits, not yet at a PSP
    REQUIRES_ACTION = "requires_action"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    CREDITED = "credited"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    IN_REVIEW = "in_review"

    REFUNDED = "refunded"  # ops rejected it in review and the PSP refunded what it captured

    # Where a deposit's own flow ends; IN_REVIEW waits there for an ops decision (or the PSP's evidence).
    FINAL = frozenset({CREDITED, FAILED, REJECTED, EXPIRED, IN_REVIEW, REFUNDED})
    # While the deposit may wait for its PSP's word (and a re-check nudge can be of use).
    AT_PSP = frozenset({PENDING, REQUIRES_ACTION, AUTHORIZED})


class RefundStatus:
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_REVIEW = "in_review"  # the PSP's outcome is unknown: the money stays held until its word comes

    FINAL = frozenset({SUCCEEDED, FAILED})
    AT_PSP = frozenset({PENDING, IN_REVIEW})


class DisputeState:
    OPENED = "opened"
    WON = "won"
    LOST = "lost"
    UNMATCHED = "unmatched"  # about no payment of ours (or in another currency): alerted, nothing moved

    FINAL = frozenset({WON, LOST, UNMATCHED})


class PayoutStatus:
    PENDING = "pending"
    KYC_REQUIRED = "kyc_required"
    IN_REVIEW = "in_review"
    PROCESSING = "processing"
    PAID = "paid"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    FINAL = frozenset({PAID, FAILED, REJECTED, CANCELLED})
    AT_PSP = frozenset({PROCESSING})


@dataclass
class FxLock:
    """A conversion's rate, locked once, early in the workflow (the quote activity's result is in the history, so a
    retry or a replay uses the same rate). `rate` is the source's mid rate (wallet units per payment unit, a
    decimal string); `wallet_amount_minor` what `amount_minor` converts to at it with `spread_bps` in the house's
    favour, `margin_minor` the house's part. The lock holds for the payment's life: `expires_at` is the source's
    word, kept for audit."""

    payment_currency: str
    wallet_currency: str
    rate: str
    spread_bps: int
    source: str
    rate_id: str
    quoted_at: str
    expires_at: str
    amount_minor: int
    wallet_amount_minor: int
    margin_minor: int


class FxDirection:
    """Which way a payment moves the wallet: a deposit credits it (and claims the wallet currency when the player
    has none), a payout debits it."""

    CREDIT = "credit"
    DEBIT = "debit"


@dataclass
class QuoteConversionInput:
    reference: str  # the payment or payout id
    player_id: str
    currency: str
    amount_minor: int
    direction: str  # FxDirection


@dataclass
class WalletConversion:
    wallet_currency: str | None  # None: a payout of a player without one (nothing to convert from)
    lock: FxLock | None = None  # None: the payment is in the wallet currency


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
    sandbox_card: str | None = None  # a sandbox card PSP's test card (its BIN country and fingerprint)
    device_id: str | None = None  # the platform's device id (meta.device_id, else meta.device)
    ip_address: str | None = None  # the player's public address; None when private, loopback or unknown
    device_class: str | None = None  # mobile | tablet | desktop | app (meta.device_class), for the metrics
    kyc_wait_timeout_seconds: float = 3600.0  # a deposit waiting for KYC expires after this
    webhook_timeout_seconds: float = 120.0
    status_poll_attempts: int = 3
    status_poll_interval_seconds: float = 5.0
    review_alert_seconds: float = 24 * 3600.0  # a review still undecided after this raises an alert
    refund_webhook_timeout_seconds: float = 600.0  # the waits of the refunds a review decision makes
    refund_status_poll_attempts: int = 5
    refund_status_poll_interval_seconds: float = 60.0


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
    country: str | None = None
    # While in review: what is under review at the PSP (its own view of the capture, or of the payment when its
    # outcome was unknown), and the refunds the decision started.
    review_psp_view: PspPaymentView | None = None
    reviewed_by: str | None = None
    refund_ids: list[str] = field(default_factory=list)
    risk_level: str | None = None  # low | medium | high: the risk rules' verdict (the highest of its stages)
    fx: FxLock | None = None  # set when the deposit converts into the player's wallet currency

    @classmethod
    def started(cls, input: DepositInput, now: str) -> DepositState:
        return cls(payment_id=input.payment_id, client_id=input.client_id, player_id=input.player_id,
                   amount_minor=input.amount_minor, currency=input.currency, method=input.method,
                   status=DepositStatus.PENDING, created_at=now, updated_at=now, country=input.country)


@dataclass
class PspEvidence:
    """The `psp_event` signal: names a verified event stored in the webhook inbox. Never evidence by itself: the
    workflow reads the event back from the inbox (READ_PSP_EVENT) before it decides anything on it."""

    psp: str
    event_id: str


@dataclass
class PspEvent:
    """A verified PSP webhook as stored in the inbox, reduced to what the workflow decides on."""

    event_id: str
    psp: str
    psp_reference: str
    status: str
    amount_minor: int
    currency: str
    failure_code: str | None = None
    kind: str = "payment"  # payment | payout | refund | dispute (psp.base.WebhookEvent)
    fee_minor: int | None = None
    dispute_id: str | None = None
    reason_code: str | None = None


@dataclass
class WithdrawalInput:
    payout_id: str
    client_id: str
    player_id: str
    amount_minor: int
    currency: str
    country: str | None = None
    sandbox_scenario: str | None = None
    device_id: str | None = None
    ip_address: str | None = None  # the player's public address; None when private, loopback or unknown
    kyc_wait_timeout_seconds: float = 7 * 24 * 3600.0
    review_wait_timeout_seconds: float = 3 * 24 * 3600.0
    webhook_timeout_seconds: float = 300.0
    status_poll_attempts: int = 3
    status_poll_interval_seconds: float = 30.0
    psp_down_deadline_seconds: float = 6 * 3600.0
    psp_down_first_retry_seconds: float = 30.0


@dataclass
class WithdrawalState:
    payout_id: str
    client_id: str
    player_id: str
    amount_minor: int
    currency: str
    status: str
    created_at: str
    updated_at: str
    hold_transfer_id: str | None = None
    hold_resolution: str | None = None  # "posted" | "voided" once the hold is settled
    method: str | None = None
    psp: str | None = None
    psp_reference: str | None = None
    sent_to_psp: bool = False
    deferred_until: str | None = None  # set while the payout waits for its PSP to come back
    failure_code: str | None = None
    review_reason: str | None = None
    reviewed_by: str | None = None
    available_after_hold_minor: int | None = None
    risk_level: str | None = None  # low | medium | high: the risk rules' verdict
    fx: FxLock | None = None  # set when the payout converts from the player's wallet currency

    @classmethod
    def started(cls, input: WithdrawalInput, now: str) -> WithdrawalState:
        return cls(payout_id=input.payout_id, client_id=input.client_id, player_id=input.player_id,
                   amount_minor=input.amount_minor, currency=input.currency, status=PayoutStatus.PENDING,
                   created_at=now, updated_at=now)


@dataclass
class ReviewDecision:
    decision: str  # "approve" | "reject"
    reviewer: str
    reason: str | None = None
    amount_minor: int | None = None  # deposits: credit less than the PSP captured (the rest is refunded)
    incident_id: str | None = None  # taken for this incident (its report lists the decision)


@dataclass
class RefundInput:
    """A refund of (part of) a captured deposit. `funding`: "player" (taken from the player's wallet first) or
    "uncredited" (money the PSP captured that was never credited: a review rejected it, ops approved less, or a
    PSP the deposit failed over from captured it; then `psp` / `psp_payment_reference` name that capture)."""

    refund_id: str
    payment_id: str
    client_id: str
    player_id: str
    amount_minor: int
    currency: str
    reason: str
    funding: str = "player"
    allow_shortfall: bool = False
    psp: str | None = None
    psp_payment_reference: str | None = None
    sandbox_scenario: str | None = None
    webhook_timeout_seconds: float = 600.0
    status_poll_attempts: int = 5
    status_poll_interval_seconds: float = 60.0


@dataclass
class RefundState:
    refund_id: str
    payment_id: str
    client_id: str
    player_id: str
    amount_minor: int
    currency: str
    funding: str
    status: str
    created_at: str
    updated_at: str
    psp: str | None = None
    method: str | None = None
    psp_reference: str | None = None  # the PSP's refund reference
    failure_code: str | None = None
    review_reason: str | None = None
    fee_minor: int | None = None

    @classmethod
    def started(cls, input: RefundInput, now: str) -> RefundState:
        return cls(refund_id=input.refund_id, payment_id=input.payment_id, client_id=input.client_id,
                   player_id=input.player_id, amount_minor=input.amount_minor, currency=input.currency,
                   funding=input.funding, status=RefundStatus.PENDING, created_at=now, updated_at=now,
                   psp=input.psp)


@dataclass
class ReservedRefund:
    """What REQUEST_REFUND reserved: where the refund goes (the payment's PSP unless the input named another)."""

    psp: str
    psp_payment_reference: str
    method: str
    held_minor: int
    shortfall_minor: int


@dataclass
class SettleRefundInput:
    refund_id: str
    outcome: str  # "succeeded" | "failed"
    psp: str
    method: str
    amount_minor: int
    currency: str
    psp_refund_reference: str | None = None
    failure_code: str | None = None
    fee_minor: int | None = None  # the PSP's reported fee; None: the routing file's cost model


@dataclass
class RefundInReview:
    refund_id: str
    review_reason: str


@dataclass
class DisputeInput:
    psp: str
    dispute_id: str
    payment_id: str


@dataclass
class DisputeView:
    """The dispute workflow's state: `dispute-<psp>-<dispute_id>`."""

    psp: str
    dispute_id: str
    payment_id: str
    status: str  # one of DisputeState
    created_at: str
    updated_at: str
    player_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    method: str | None = None
    reason_code: str | None = None
    held_minor: int = 0
    shortfall_minor: int = 0
    fee_minor: int | None = None
    events: list[str] = field(default_factory=list)  # "opened", "lost", …: the verified events, in order


@dataclass
class OpenDisputeInput:
    psp: str
    dispute_id: str
    payment_id: str
    amount_minor: int
    currency: str
    reason_code: str | None = None


@dataclass
class DisputeOpened:
    player_id: str
    method: str
    held_minor: int
    shortfall_minor: int


@dataclass
class ResolveDisputeInput:
    psp: str
    dispute_id: str
    outcome: str  # "won" | "lost"
    method: str
    amount_minor: int
    currency: str
    fee_minor: int | None = None  # the PSP's reported chargeback fee; None: the routing file's cost model


@dataclass
class PaymentFacts:
    """A deposit as the payments table records it (what ops list and filter by)."""

    payment_id: str
    client_id: str
    player_id: str
    method: str
    currency: str
    amount_minor: int
    status: str
    created_at: str
    updated_at: str
    psp: str | None = None
    psp_reference: str | None = None
    country: str | None = None
    failure_code: str | None = None
    review_reason: str | None = None

    @classmethod
    def of(cls, s: DepositState) -> PaymentFacts:
        return cls(s.payment_id, s.client_id, s.player_id, s.method, s.currency, s.amount_minor, s.status,
                   s.created_at, s.updated_at, s.psp, s.psp_reference, s.country, s.failure_code, s.review_reason)


@dataclass
class PayoutFacts:
    """A finished payout as the payouts table records it (the margin report), with its PSP fee."""

    payout_id: str
    client_id: str
    player_id: str
    currency: str
    amount_minor: int
    status: str
    created_at: str
    updated_at: str
    method: str | None = None
    psp: str | None = None
    fee_minor: int | None = None  # the PSP's reported fee of a paid payout; None: the cost model


@dataclass
class CancelRequest:
    requested_by: str
    reason: str | None = None


# --- activity inputs / outputs ---------------------------------------------------------------------------


@dataclass
class ScreenDepositInput:
    """A deposit as its screening knows it; scored again with `instrument` and `bin_country` once the PSP's
    answer names the card."""

    payment_id: str
    player_id: str
    amount_minor: int
    currency: str
    method: str = ""
    country: str | None = None
    device_id: str | None = None
    ip_address: str | None = None
    instrument: str | None = None
    bin_country: str | None = None
    client_id: str = ""  # whose outbound event says the deposit waits for KYC ("": started before it was passed)


@dataclass
class RiskAssessment:
    """The risk rules' decision as the workflow needs it; the rule hits are in the `risk_decisions` row."""

    decision_id: str
    action: str  # allow | step_up_kyc | review | deny
    score: int
    level: str  # low | medium | high


@dataclass
class AmlTrigger:
    """A deposit credited or a payout paid: the player's AML scenarios are checked again (the operation and its id
    name, in the history, what asked for the check)."""

    player_id: str
    operation: str  # deposit | payout
    subject_id: str


@dataclass
class AmlSweepInput:
    lookback_hours: int = 48  # players with a payment in this window are checked (a day, and the day before)


@dataclass
class AmlSweepResult:
    players_checked: int = 0
    cases_hit: int = 0  # cases a finding is on (a finding already on a case's timeline changes nothing)


@dataclass
class ScreeningResult:
    outcome: str  # "allow" | "deny" | "kyc_required" (waits for verified KYC, then is screened again)
    code: str | None = None
    reason: str | None = None
    risk: RiskAssessment | None = None


@dataclass
class StatusPollPlan:
    """A PSP's status-poll schedule (routing file `status_poll`); None attempts: the deposit's own setting."""

    attempts: int | None = None
    backoff: float = 1.0
    max_interval_seconds: float = 3600.0


@dataclass
class DepositRoute:
    candidates: list[str]
    status_polls: dict[str, StatusPollPlan] = field(default_factory=dict)


@dataclass
class RouteInput:
    method: str
    currency: str
    amount_minor: int
    country: str | None = None
    payment_id: str = ""  # seeds the A/B split when no player_id is given (histories recorded before it)
    risk_level: str | None = None  # the routing file's `risk:` conditions read it
    # Seeds the A/B split: one player stays on one PSP across deposits and 3-D Secure retries.
    player_id: str | None = None


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
    sandbox_card: str | None = None


@dataclass
class PspRef:
    """A payment or payout at a PSP, by our id (the PSP's merchant reference)."""

    psp: str
    merchant_reference: str


@dataclass
class PspPaymentView:
    psp: str
    psp_reference: str
    status: str
    amount_minor: int
    currency: str
    redirect_url: str | None = None
    failure_code: str | None = None
    fee_minor: int | None = None
    bin_country: str | None = None  # the card's issuer country, from card PSPs
    instrument: str | None = None  # the PSP's fingerprint of the card, from card PSPs


@dataclass
class CreditDepositInput:
    payment_id: str
    player_id: str
    psp: str
    amount_minor: int  # what the player is credited
    currency: str
    method: str = ""
    captured_minor: int | None = None  # what the PSP captured (None: amount_minor)
    fee_minor: int | None = None  # the PSP's reported capture fee; None: the routing file's cost model
    facts: PaymentFacts | None = None  # the payments row as credited, written in the credit's transaction
    fx: FxLock | None = None  # credits the wallet currency at this locked rate (ledger/fx.py)


@dataclass
class UncreditedCapture:
    """A capture ops rejected in review: recorded (and its fee booked) but never credited; it is refunded."""

    payment_id: str
    psp: str
    method: str
    captured_minor: int
    currency: str
    fee_minor: int | None = None


@dataclass
class LedgerPosting:
    transfer_id: str
    replayed: bool
    wallet_amount_minor: int | None = None  # a converted credit: what the wallet got
    margin_minor: int | None = None  # a converted credit: the house's margin on it


class ActivityName:
    """Activity names: the workflows call activities by name, so they never import activity (I/O) code."""

    HOLD_PAYOUT = "hold_payout"
    POST_PAYOUT_HOLD = "post_payout_hold"
    VOID_PAYOUT_HOLD = "void_payout_hold"
    CHECK_PAYOUT = "check_payout"
    ROUTE_PAYOUT = "route_payout"
    CREATE_PSP_PAYOUT = "create_psp_payout"
    GET_PSP_PAYOUT = "get_psp_payout"
    CANCEL_PSP_PAYOUT = "cancel_psp_payout"
    NOTIFY_PLAYER = "notify_player"
    RAISE_ALERT = "raise_alert"
    RECORD_AUDIT = "record_audit"
    READ_PSP_EVENT = "read_psp_event"

    SCREEN_DEPOSIT = "screen_deposit"
    ASSESS_DEPOSIT_INSTRUMENT = "assess_deposit_instrument"
    CHECK_AML = "check_aml"
    SWEEP_AML = "sweep_aml"
    RELEASE_DEPOSIT_LIMIT = "release_deposit_limit"
    ROUTE_DEPOSIT = "route_deposit"
    QUOTE_CONVERSION = "quote_conversion"
    POST_CONVERTED_PAYOUT = "post_converted_payout"
    CREATE_PSP_PAYMENT = "create_psp_payment"
    GET_PSP_PAYMENT = "get_psp_payment"
    CANCEL_PSP_PAYMENT = "cancel_psp_payment"
    CREDIT_DEPOSIT = "credit_deposit"

    RECORD_PAYMENT = "record_payment"
    RECORD_UNCREDITED_CAPTURE = "record_uncredited_capture"

    CREATE_PSP_REFUND = "create_psp_refund"
    GET_PSP_REFUND = "get_psp_refund"
    REQUEST_REFUND = "request_refund"
    SETTLE_REFUND = "settle_refund"
    MARK_REFUND_IN_REVIEW = "mark_refund_in_review"

    OPEN_DISPUTE = "open_dispute"
    RESOLVE_DISPUTE = "resolve_dispute"

    RECORD_PAYOUT = "record_payout"

    RECONCILE_DAY = "reconcile_day"

    DETECT_INCIDENTS = "detect_incidents"
    APPLY_INCIDENTS = "apply_incidents"


class ErrorType:
    """ApplicationError types raised by activities that the workflows decide on (a PSP call's failure carries
    its `PspDecision` as its type instead)."""

    ALL_PSPS_DOWN = "AllPspsDown"
    NO_PAYOUT_ROUTE = "NoPayoutRoute"
    LEDGER_CONFLICT = "LedgerConflict"
    INSUFFICIENT_FUNDS = "InsufficientFunds"
    REFUND_REFUSED = "RefundRefused"  # details[0]: the ledger's code (e.g. refund_exceeds_refundable)
    DISPUTE_REFUSED = "DisputeRefused"  # details[0]: payment_not_found | currency_mismatch
    REPORT_UNREADABLE = "ReportUnreadable"  # a PSP's settlement report that does not parse: no retry can help
    FX_UNAVAILABLE = "FxUnavailable"  # no usable quote from the rate source


@dataclass
class PayoutSubject:
    """What the hold, check and route activities of a withdrawal need to know."""

    payout_id: str
    player_id: str
    amount_minor: int
    currency: str
    country: str | None = None
    device_id: str | None = None
    ip_address: str | None = None
    fx: FxLock | None = None  # the hold is in the wallet currency, at this locked rate
    client_id: str = ""  # whose outbound event says the payout waits for KYC ("": started before it was passed)


@dataclass
class ConvertedPayout:
    """A paid payout that converted: its hold is posted and its payout-currency leg and margin booked."""

    payout_id: str
    player_id: str
    fx: FxLock
    method: str | None = None
    psp: str | None = None


@dataclass
class HoldResult:
    transfer_id: str
    available_after_minor: int


@dataclass
class PayoutCheckResult:
    """Account state, KYC and AML, in that order; the first that does not pass decides."""

    outcome: str  # "pass" | "reject" | "kyc_required" | "review"
    code: str | None = None
    reason: str | None = None
    risk: RiskAssessment | None = None


@dataclass
class PayoutRoute:
    psp: str
    method: str
    closed_loop: bool
    status_poll: StatusPollPlan = field(default_factory=StatusPollPlan)


@dataclass
class CreatePspPayoutInput:
    psp: str
    payout_id: str
    player_id: str
    amount_minor: int
    currency: str
    method: str
    country: str | None = None
    sandbox_scenario: str | None = None


@dataclass
class PspPayoutView:
    psp: str
    psp_reference: str
    status: str
    amount_minor: int
    currency: str
    failure_code: str | None = None
    fee_minor: int | None = None


@dataclass
class CreatePspRefundInput:
    psp: str
    refund_id: str
    payment_id: str
    psp_payment_reference: str
    amount_minor: int
    currency: str
    sandbox_scenario: str | None = None


@dataclass
class PspRefundView:
    psp: str
    psp_reference: str  # the PSP's refund reference
    status: str  # pending | succeeded | failed
    amount_minor: int
    currency: str
    failure_code: str | None = None
    fee_minor: int | None = None


@dataclass
class PlayerNotification:
    player_id: str
    kind: str  # e.g. "payout.paid", "payout.failed"
    reference: str  # the payout id: with kind, the notification's idempotency key
    details: dict[str, str]
    client_id: str = ""  # the platform its event goes to ("": a payout started before it was passed)


@dataclass
class ReadPspEventInput:
    psp: str
    event_id: str
    merchant_reference: str  # our payment or payout id: an event about another record is no evidence here
    kind: str | None = None  # payment | payout | refund | dispute: an event of another kind is no evidence either


@dataclass
class AuditEntry:
    """An ops decision that reached a workflow, recorded by the workflow itself (so one sent from the Temporal UI
    or CLI is audited too). `idempotency_key`: the update's id, so a retried activity writes once."""

    idempotency_key: str
    actor: str
    action: str  # e.g. "payout.review.approve"
    subject: str  # e.g. "payout:po_…"
    details: dict[str, str]
    incident_id: str | None = None


@dataclass
class Alert:
    kind: str  # e.g. "deposit.amount_mismatch"
    reference: str  # the payment or payout id
    details: dict[str, str]


# ---- reconciliation ---------------------------------------------------------------------------------------------


@dataclass
class ReconInput:
    """A reconciliation of one PSP: of `day` (YYYY-MM-DD) evaluated at `as_of` (an ISO instant; None = when it first
    runs), or — as the daily schedule starts it, with no day — of yesterday, and again of the day whose settlement
    SLA (`sla_days`, the PSP's terms, which the schedule carries) has just ended."""

    psp: str
    day: str | None = None
    as_of: str | None = None
    sla_days: int | None = None


@dataclass
class ReconRunSummary:
    """What one run found: counts per class (matched, expected, and the classes that open cases)."""

    run_id: str
    psp: str
    day: str
    state: str
    sla_days: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def cases(self) -> int:
        return sum(n for name, n in self.counts.items() if name not in ("matched", "expected"))


@dataclass
class ReconResult:
    runs: list[ReconRunSummary] = field(default_factory=list)


# ---- the monitor (incidents/) -----------------------------------------------------------------------------------


@dataclass
class MonitorInput:
    """A detection pass takes nothing: the thresholds are the worker's (PAYLOOP_INCIDENTS_FILE)."""


@dataclass
class IncidentCondition:
    """One condition that holds (incidents/detection.py's Condition, as the workflow carries it)."""

    incident_class: str
    scope: str
    diagnosis: str
    figures: dict[str, Any]
    payment_ids: list[str] = field(default_factory=list)
    payout_ids: list[str] = field(default_factory=list)
    first_seen_at: str | None = None  # ISO 8601


@dataclass
class IncidentPass:
    at: str  # ISO 8601, the workflow's time: a retried apply applies the same pass
    conditions: list[IncidentCondition] = field(default_factory=list)


@dataclass
class IncidentPassResult:
    """The classes of the incidents the pass opened, updated and resolved (one entry per incident)."""

    opened: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
