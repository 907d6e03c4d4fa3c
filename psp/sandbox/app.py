"""The sandbox PSP service: eight providers of six families taking payments, making payouts and refunds, each with
its family's wire format (psp/sandbox/formats.py) and webhook signature, each behaving per
`metadata.sandbox_scenario`. Every method has two: card / card_b, ewallet / ewallet_b, paybybank / paybybank_b,
crypto / crypto_b.

- `card` and `card_b` (two card acquirers, family `card`): 3DS (frictionless by default; a challenge page under
  `/{psp}/challenge/{reference}` for `challenge` / `3ds_fail`). Same wire format, scenarios and error codes; each
  has its own state, control mode, references (`card_…` / `card_b_…`) and webhook URL. Their payments tell the
  card's BIN country and fingerprint: a test card named by `metadata.sandbox_card`, else the player's own
  (psp/sandbox/cards.py).
- `ewallet`, `ewallet_b` (two e-wallets, each its own format and signature): settle instantly.
- `paybybank`, `paybybank_b` (two pay-by-bank providers, each its own format and signature): a redirect to a
  bank-selection page (`/{psp}/banks/{reference}`); `authorised` once the player confirms, `settled` later.
- `crypto` and `crypto_b` (two crypto processors, family `crypto`): an invoice with a deposit address; the transfer
  is seen, then confirmed after 3 confirmations (one per settle delay), with a webhook per confirmation;
  `underpaid` / `overpaid` receive 90 % / 110 %.

Payments and payouts can be cancelled (`POST /{psp}/v1/payments|payouts/{merchant_reference}/cancel`) until they
end; a cancelled one never settles afterwards.

Refunds (`POST /{psp}/v1/refunds`, `GET /{psp}/v1/refunds/{merchant_reference}`) at every PSP: of a captured payment
there, named by its reference, in its currency, for at most what is captured and neither refunded (pending or
succeeded) nor disputed (a dispute the merchant has not won); `pending` at once, `succeeded` (or `failed`) after the
settle delay. Disputes (chargebacks) are opened and resolved through the control API (`POST /control/{psp}/disputes`,
`POST /control/{psp}/disputes/{dispute_id}/resolve`), at the PSPs whose payments carry a chargeback right (card,
card_b, ewallet, ewallet_b). The card acquirers and the e-wallets report their fee of each settled operation
(psp/sandbox/fees.py). Every PSP reports what it settled each day (`GET /reports/{psp}/settlement?date=`,
`POST /control/{psp}/settlement`): psp/sandbox/settlement.py, fed by `Sandbox.changed`.

State lives in memory. Handlers change a record only in code without `await` between the check
and the change, so each change is atomic on the event loop and no per-record lock is needed.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import random
import secrets
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import httpx
from fastapi import Depends, FastAPI, Form, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from payloop.logs import AccessLogMiddleware
from payloop.money import MoneyError, to_decimal_string, to_minor_units
from payloop.settings import Settings
from payloop.settlement import (
    CAPTURE,
    CHARGEBACK,
    CHARGEBACK_FEE,
    CHARGEBACK_REVERSAL,
    GROSS_SIGNS,
    PAYOUT,
    REFUND,
)
from psp import signatures
from psp.registry import webhook_secrets
from psp.sandbox.formats import (
    CONFIRMATIONS_REQUIRED,
    DEFAULT_FORMAT,
    FORMATS,
    Order,
    RefundOrder,
    SandboxError,
    Snapshot,
    WireFormat,
)
from psp.sandbox.cards import Card, card_of
from psp.sandbox import fx
from psp.sandbox.fees import fee_minor, settlement_fee_minor
from psp.sandbox.settlement import REPORTS, SettlementBook, SettlementControlBody, Settled, parse_day
from psp.sandbox.webhooks import Outgoing, WebhookSender, utc_now_iso
from psp.scenarios import (
    CHALLENGE_SCENARIOS,
    ERROR_SCENARIO_CODES,
    FAMILIES,
    METHOD_OF,
    NEVER_SETTLING_SCENARIOS,
    PAYMENT_SCENARIOS_BY_PSP,
    PAYOUT_SCENARIOS_BY_PSP,
    PSPS,
    REFUND_SCENARIOS_BY_PSP,
    SETTLEMENT_SCENARIOS,
    SILENT_SCENARIOS,
    UNCANCELLABLE_SCENARIOS,
)

logger = logging.getLogger("psp.sandbox")

# The scenario names, which PSP takes which, and the error scenarios' codes: psp/scenarios.py (pure data, which the
# product API reads too). PSPS lists the sandbox PSPs; FAMILIES maps each to its family, METHOD_OF to its method
# (which decides its flow: 3DS, bank redirect, on-chain confirmations or none).
# Per family: its decline code.
_FAMILY_DECLINE_CODES = {
    "card": "card_declined",
    "ewallet": "insufficient_funds",
    "ewallet_b": "funds_unavailable",
    "paybybank": "bank_rejected",
    "paybybank_b": "payment_rejected_by_aspsp",
    "crypto": "address_screening_failed",
}
# Why a refund of the `decline` scenario fails after it was accepted, in each family's words.
_FAMILY_REFUND_FAILURE_CODES = {
    "card": "refund_declined",
    "ewallet": "wallet_closed",
    "ewallet_b": "payer_wallet_closed",
    "paybybank": "beneficiary_account_closed",
    "paybybank_b": "creditor_account_closed",
    "crypto": "refund_address_rejected",
}
PAYOUT_DECLINE_CODE = "payout_declined"
PAYOUT_FAILURE_CODE = "beneficiary_rejected"  # the `fail` scenario: accepted, then refused downstream
BANK_REJECTED_CODE = "authorisation_rejected"  # the player refused (or failed) at the bank
# The same, per sandbox PSP.
METHODS: dict[str, frozenset[str]] = {psp: frozenset({method}) for psp, method in METHOD_OF.items()}
PAYOUT_METHODS: dict[str, frozenset[str]] = dict(METHODS)
DECLINE_CODES = {psp: _FAMILY_DECLINE_CODES[family] for psp, family in FAMILIES.items()}
REFUND_FAILURE_CODES = {psp: _FAMILY_REFUND_FAILURE_CODES[family] for psp, family in FAMILIES.items()}
# The HTTP status of the error scenarios' create answers (their codes: psp.scenarios.ERROR_SCENARIO_CODES).
ERROR_SCENARIO_STATUS = {"soft_decline": 402, "issuer_unavailable": 503, "rate_limited": 429}
FLAKY_FAILURES = 2
WRONG_AMOUNT_EXTRA_MINOR = 100
RECEIVED_PERCENT = {"underpaid": 90, "overpaid": 110}
BANKS = ("Sandbox Bank", "Demo Sparkasse", "Example Credit Union")
Mode = Literal["up", "down", "slow", "error"]


def wrong_currency(currency: str) -> str:
    """The currency a `wrong_currency` record settles in: not the one asked for."""
    return "USD" if currency == "EUR" else "EUR"


class ControlError(Exception):
    """A refused control request (tests and drills drive these): answered `{"error": code, "message": …}`, not in
    any PSP's wire format, since no PSP is speaking."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class SandboxConfig:
    webhook_url_template: str  # "http://127.0.0.1:8000/v1/webhooks/{psp}"
    # Comma-separated during a rotation ("new,old"): the first signs.
    webhook_secret: str
    public_url: str  # this service's own base URL, for challenge and bank redirect URLs
    settle_delay_seconds: float = 0.05
    webhook_retry_delays: tuple[float, ...] = (0.2, 0.5, 1, 2, 4, 8)
    slow_seconds: float = 2.0
    # Per-PSP secrets (same form as webhook_secret), overriding webhook_secret for that PSP.
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    # A webhook storm (failure drills): each webhook is sent this many times, every copy on its own after a random
    # delay of up to webhook_jitter_seconds, so copies arrive concurrently and out of order. 1 and 0: the normal
    # behaviour, each webhook once, in order.
    webhook_copies: int = 1
    webhook_jitter_seconds: float = 0.0

    def signing_secret(self, psp: str) -> str:
        return signatures.signing_secret(self.webhook_secrets.get(psp) or self.webhook_secret)


def config_from_settings(settings: Settings) -> SandboxConfig:
    """Each sandbox PSP signs with the secret the API verifies it with: psp.registry resolves both the same way
    (the routing file's setting per PSP, else the shared fallback)."""
    secrets_by_psp = webhook_secrets(settings)
    return SandboxConfig(
        webhook_url_template=settings.sandbox_webhook_url,
        webhook_secret=settings.sandbox_webhook_secret,
        public_url=settings.sandbox_psp_browser_url,
        webhook_secrets={psp: secrets_by_psp[psp] for psp in PSPS
                         if secrets_by_psp[psp] != settings.sandbox_webhook_secret},
    )


class ControlBody(BaseModel):
    mode: Mode


class DisputeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_id: str = Field(min_length=1, max_length=128)  # our payment id: the payment's merchant reference
    amount: str = Field(max_length=32)  # a decimal string in the payment's currency
    reason_code: str = Field(pattern=r"^[A-Za-z0-9._-]{1,50}$")  # the scheme's ("10.4", "4837", "fraudulent")


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["won", "lost"]


@dataclass(kw_only=True)
class Record:
    """What payments, payouts, refunds and disputes share: identity, money, scenario and status."""

    kind: ClassVar[str]  # "payment" | "payout" | "refund" | "dispute": the webhook type prefix
    settled_status: ClassVar[str]  # where a successful scenario ends
    stale_status: ClassVar[str]  # what `out_of_order` re-sends late, after settled_status
    cancellable: ClassVar[frozenset[str]]  # the statuses a cancel can stop
    charged_status: ClassVar[str]  # the status in which the PSP charges (and reports) its fee
    # The statuses in which the PSP settles money for the record, each with its settlement line's kind.
    settles: ClassVar[Mapping[str, str]]

    psp: str
    reference: str
    merchant_reference: str
    amount_minor: int  # captured / paid / received: a scenario may change it
    currency: str
    scenario: str
    requested_minor: int = 0  # what was asked for; set from amount_minor when not given
    status: str = "pending"
    created_at: str = field(default_factory=utc_now_iso)
    failure_code: str | None = None
    # Set for a record accepted, then refused downstream (payout `fail`, refund `decline`): it settles failed.
    fails_with: str | None = None
    confirmations: int = 0

    def __post_init__(self) -> None:
        self.requested_minor = self.requested_minor or self.amount_minor

    def snapshot(self, status: str | None = None) -> Snapshot:
        """As it stands, or (`status`) as it stood earlier, for a late webhook."""
        status = status or self.status
        current = status == self.status
        card = self._card()
        return Snapshot(
            kind=self.kind,
            reference=self.reference,
            merchant_reference=self.merchant_reference,
            status=status,
            amount_minor=self.amount_minor,
            requested_minor=self.requested_minor,
            currency=self.currency,
            failure_code=self.failure_code if current else None,
            redirect_url=self._redirect_url() if status == "requires_action" else None,
            deposit_address=self._deposit_address(),
            confirmations=self.confirmations if current else min(self.confirmations, 1),
            payment_reference=self._payment_reference(),
            fee_minor=fee_minor(self.psp, self.kind, self.amount_minor, self.currency)
            if status == self.charged_status else None,
            reason_code=self._reason_code(),
            bin_country=card.bin_country if card else None,
            instrument=card.fingerprint if card else None,
        )

    def _redirect_url(self) -> str | None:
        return None

    def _deposit_address(self) -> str | None:
        return None

    def _payment_reference(self) -> str | None:
        return None

    def _reason_code(self) -> str | None:
        return None

    def _card(self) -> Card | None:
        return None


@dataclass(kw_only=True)
class Payment(Record):
    kind = "payment"
    settled_status = "captured"
    stale_status = "authorized"
    cancellable = frozenset({"pending", "requires_action", "authorized"})
    charged_status = "captured"
    settles: ClassVar[Mapping[str, str]] = {"captured": CAPTURE}

    return_url: str
    redirect_url: str | None = None
    deposit_address: str | None = None
    card: Card | None = None  # at the card family's PSPs: the card paid with
    refunds: list[Refund] = field(default_factory=list)
    disputes: list[Dispute] = field(default_factory=list)

    def _redirect_url(self) -> str | None:
        return self.redirect_url

    def _card(self) -> Card | None:
        return self.card

    def _deposit_address(self) -> str | None:
        return self.deposit_address

    def refundable_minor(self) -> int:
        """What a new refund may still take back: the captured amount less refunds that did not fail and disputes
        the merchant did not win (that money is already on its way back to the payer)."""
        refunded = sum(r.amount_minor for r in self.refunds if r.status != "failed")
        disputed = sum(d.amount_minor for d in self.disputes if d.status != "won")
        return self.amount_minor - refunded - disputed


@dataclass(kw_only=True)
class Payout(Record):
    kind = "payout"
    settled_status = "paid"
    stale_status = "pending"
    cancellable = frozenset({"pending"})
    charged_status = "paid"
    settles: ClassVar[Mapping[str, str]] = {"paid": PAYOUT}


@dataclass(kw_only=True)
class Refund(Record):
    kind = "refund"
    settled_status = "succeeded"
    stale_status = "pending"
    cancellable = frozenset()  # money on its way back to the payer is not called back
    charged_status = "succeeded"
    settles: ClassVar[Mapping[str, str]] = {"succeeded": REFUND}

    # The payment holds its refunds too: kept out of comparisons and repr, which would otherwise go round in circles.
    payment: Payment = field(compare=False, repr=False)

    def _payment_reference(self) -> str | None:
        return self.payment.reference


@dataclass(kw_only=True)
class Dispute(Record):
    """A chargeback: `merchant_reference` is the disputed payment's, `reference` the dispute's id. Opened and
    resolved by the control API only (the payer's bank decides, not the merchant)."""

    kind = "dispute"
    settled_status = "lost"
    stale_status = "opened"
    cancellable = frozenset()
    charged_status = "lost"  # the chargeback fee
    # The money goes back to the payer when a dispute opens and comes back if the merchant wins it.
    settles: ClassVar[Mapping[str, str]] = {"opened": CHARGEBACK, "won": CHARGEBACK_REVERSAL, "lost": CHARGEBACK_FEE}

    payment: Payment = field(compare=False, repr=False)  # as for a refund
    reason_code: str
    status: str = "opened"

    def _payment_reference(self) -> str | None:
        return self.payment.reference

    def _reason_code(self) -> str | None:
        return self.reason_code


R = TypeVar("R", bound=Record)
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass
class Book(Generic[R]):
    """All records of one kind at the sandbox PSPs, with the state their create endpoint keeps."""

    kind: str
    scenarios: Mapping[str, frozenset[str]]  # by PSP
    records: dict[tuple[str, str], R] = field(default_factory=dict)  # (psp, merchant_reference)
    idempotent: dict[tuple[str, str], StoredResponse] = field(default_factory=dict)  # (psp, Idempotency-Key)
    flaky_attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # (psp, merchant_reference)

    def find(self, psp: str, merchant_reference: str) -> R:
        record = self.records.get((psp, merchant_reference))
        if record is None:
            raise SandboxError(404, f"{self.kind}_not_found", f"no {psp} {self.kind} {merchant_reference!r}")
        return record

    def add(self, record: R) -> None:
        self.records[(record.psp, record.merchant_reference)] = record


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.payments: Book[Payment] = Book("payment", PAYMENT_SCENARIOS_BY_PSP)
        self.payouts: Book[Payout] = Book("payout", PAYOUT_SCENARIOS_BY_PSP)
        self.refunds: Book[Refund] = Book("refund", REFUND_SCENARIOS_BY_PSP)
        self.by_reference: dict[str, Payment] = {}  # for the challenge and bank pages, refunds and disputes
        self.disputes: dict[tuple[str, str], Dispute] = {}  # (psp, dispute id)
        self.modes: dict[str, Mode] = {psp: "up" for psp in METHODS}
        self.settlements = SettlementBook()
        self.webhooks: WebhookSender | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # The last delivery scheduled per record: the next one waits for it, so webhooks leave in order.
        self._deliveries: dict[tuple[str, str], asyncio.Task[Any]] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # a strong reference, or the task may be garbage-collected mid-flight
        task.add_done_callback(self._tasks.discard)
        return task

    def busy(self) -> bool:
        """Something is still scheduled: a settlement, a webhook (or its copy, or its retry)."""
        return bool(self._tasks)

    async def shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def sign(self, psp: str, timestamp: int, body: bytes, event_id: str) -> dict[str, str]:
        return FORMATS[psp].scheme.headers(self.config.signing_secret(psp), timestamp, body, event_id)

    # -- payments and payouts ----------------------------------------------------------------------

    def behaviour(self, psp: str, scenario: str) -> str:
        # Only the card family has 3DS: the challenge scenarios behave as approve elsewhere.
        if METHOD_OF[psp] != "card" and scenario in CHALLENGE_SCENARIOS:
            return "approve"
        # A settlement discrepancy shows in the report only (SettlementBook.book).
        if scenario in SETTLEMENT_SCENARIOS:
            return "approve"
        return scenario

    def redirect_url(self, path: str) -> str:
        return f"{self.config.public_url.rstrip('/')}{path}"

    def create_payment(self, psp: str, order: Order, scenario: str) -> tuple[int, Snapshot | dict[str, str]]:
        method = METHOD_OF[psp]
        card = card_of(order.metadata, order.customer_id, order.country) if method == "card" else None
        payment = _new_record(Payment, psp, order, scenario, return_url=order.return_url or "", card=card)
        self.by_reference[payment.reference] = payment
        behaviour = self.behaviour(psp, scenario)
        if behaviour in ("decline", "soft_decline"):
            pass  # no redirect and no address for a payment refused at once
        elif method == "card" and behaviour in CHALLENGE_SCENARIOS:
            payment.status = "requires_action"
            payment.redirect_url = self.redirect_url(f"/{psp}/challenge/{payment.reference}")
        elif method == "bank_transfer":
            payment.status = "requires_action"
            payment.redirect_url = self.redirect_url(f"/{psp}/banks/{payment.reference}")
        elif method == "crypto":
            payment.deposit_address = f"tb1q{secrets.token_hex(19)}"
        return self.start(self.payments, payment, behaviour, DECLINE_CODES[psp])

    def create_payout(self, psp: str, order: Order, scenario: str) -> tuple[int, Snapshot | dict[str, str]]:
        payout = _new_record(Payout, psp, order, scenario,
                             fails_with=PAYOUT_FAILURE_CODE if scenario == "fail" else None)
        return self.start(self.payouts, payout, scenario, PAYOUT_DECLINE_CODE)

    def create_refund(self, psp: str, order: RefundOrder, scenario: str) -> tuple[int, Snapshot]:
        """A refund of a payment captured at `psp`, within what is left to refund; accepted as `pending`."""
        payment = self.by_reference.get(order.payment_reference)
        if payment is None or payment.psp != psp or payment.status != "captured":
            raise SandboxError(422, "payment_not_refundable", f"no captured {psp} payment {order.payment_reference!r}")
        if order.currency != payment.currency:
            raise SandboxError(422, "currency_mismatch", f"the payment is in {payment.currency}, not {order.currency}")
        refundable_minor = payment.refundable_minor()
        if order.amount_minor > refundable_minor:
            left = to_decimal_string(refundable_minor, payment.currency)
            raise SandboxError(422, "refund_exceeds_captured", f"at most {left} {payment.currency} is left to refund")
        refund = _new_record(Refund, psp, order, scenario, payment=payment,
                             fails_with=REFUND_FAILURE_CODES[psp] if scenario == "decline" else None)
        payment.refunds.append(refund)
        self.refunds.add(refund)
        if scenario not in NEVER_SETTLING_SCENARIOS:
            self.spawn(self.settle(refund, refund.status))
        return 201, refund.snapshot()

    def open_dispute(self, psp: str, payment: Payment, amount_minor: int, reason_code: str) -> Dispute:
        """The payer's bank disputes (part of) a captured payment: `opened`, announced."""
        if payment.status != "captured":
            raise ControlError(409, "payment_not_captured", f"the payment is {payment.status}, not captured")
        disputable_minor = payment.amount_minor - sum(d.amount_minor for d in payment.disputes if d.status != "won")
        if amount_minor > disputable_minor:
            left = to_decimal_string(disputable_minor, payment.currency)
            raise ControlError(422, "amount_exceeds_captured", f"at most {left} {payment.currency} can be disputed")
        dispute = Dispute(
            psp=psp,
            reference=f"{psp}_dp_{secrets.token_hex(8)}",
            merchant_reference=payment.merchant_reference,
            amount_minor=amount_minor,
            currency=payment.currency,
            scenario="approve",
            payment=payment,
            reason_code=reason_code,
        )
        payment.disputes.append(dispute)
        self.disputes[(psp, dispute.reference)] = dispute
        self.changed(dispute)
        return dispute

    def resolve_dispute(self, dispute: Dispute, outcome: str) -> None:
        """The dispute's end (`won` / `lost`), announced; a lost one is charged the PSP's chargeback fee."""
        if dispute.status != "opened":
            raise ControlError(409, "dispute_already_resolved", f"the dispute was already {dispute.status}")
        dispute.status = outcome
        self.changed(dispute)

    def start(
        self, book: Book[R], record: R, behaviour: str, decline_code: str
    ) -> tuple[int, Snapshot | dict[str, str]]:
        """Store a new record and play its scenario's first step; the answer is (HTTP status, the record as it
        stands, or an error {code, message})."""
        book.add(record)
        if behaviour in ("decline", "soft_decline"):
            code = decline_code if behaviour == "decline" else ERROR_SCENARIO_CODES[record.psp][behaviour]
            record.status, record.failure_code = "failed", code
            return 402, {"code": code, "message": f"the {record.kind} was declined"}
        # Only a pending record settles by itself: a redirected payment waits for the player, a lost one forever.
        if record.status == "pending" and behaviour not in NEVER_SETTLING_SCENARIOS:
            self.spawn(self.settle(record, record.status))
        return 201, record.snapshot()

    async def settle(self, record: Record, from_status: str) -> None:
        """Move a pending (or, after a bank redirect, authorized) record to its end, announcing each step.

        `from_status` is the status when the settlement was scheduled (not when this task first runs: a cancel may
        come in between), so a record cancelled at any point before the settle delay ends stays cancelled."""
        if METHOD_OF[record.psp] == "crypto" and isinstance(record, Payment):
            await self.confirm_on_chain(record)
            return
        await asyncio.sleep(self.config.settle_delay_seconds)
        if record.status != from_status:  # cancelled meanwhile
            return
        if record.fails_with:
            record.status, record.failure_code = "failed", record.fails_with
        else:
            if record.scenario == "wrong_amount":
                record.amount_minor += WRONG_AMOUNT_EXTRA_MINOR
            elif record.scenario == "wrong_currency":
                record.currency = wrong_currency(record.currency)
            record.status = record.settled_status
            if METHOD_OF[record.psp] == "crypto":
                record.confirmations = CONFIRMATIONS_REQUIRED
        self.changed(record)

    async def confirm_on_chain(self, payment: Payment) -> None:
        """The transfer is seen after one settle delay, then gains a confirmation per delay; each step is a
        webhook, the last (`confirmed`) is the capture."""
        received = payment.requested_minor
        if payment.scenario in RECEIVED_PERCENT:
            received = max(1, payment.requested_minor * RECEIVED_PERCENT[payment.scenario] // 100)
        elif payment.scenario == "wrong_amount":
            received += WRONG_AMOUNT_EXTRA_MINOR
        elif payment.scenario == "wrong_currency":
            payment.currency = wrong_currency(payment.currency)
        for confirmations in range(1, CONFIRMATIONS_REQUIRED + 1):
            await asyncio.sleep(self.config.settle_delay_seconds)
            if payment.status not in ("pending", "authorized"):  # cancelled meanwhile
                return
            payment.amount_minor, payment.confirmations = received, confirmations
            payment.status = "captured" if confirmations == CONFIRMATIONS_REQUIRED else "authorized"
            self.changed(payment)

    def complete_challenge(self, payment: Payment, outcome: str) -> None:
        if payment.status != "requires_action":  # a re-submitted form changes nothing
            return
        if outcome == "success" and payment.scenario != "3ds_fail":
            payment.status = "captured"
        else:
            payment.status, payment.failure_code = "failed", "3ds_failed"
        self.changed(payment)

    def complete_bank_authorisation(self, payment: Payment, outcome: str) -> None:
        """The player confirmed (or refused) at the bank: authorised at once, settled after the settle delay."""
        if payment.status != "requires_action":  # a re-submitted form changes nothing
            return
        if outcome != "success":
            payment.status, payment.failure_code = "failed", BANK_REJECTED_CODE
            self.changed(payment)
            return
        payment.status = "authorized"
        self.changed(payment)
        if payment.scenario not in NEVER_SETTLING_SCENARIOS:
            self.spawn(self.settle(payment, payment.status))

    def cancel(self, record: Record) -> None:
        """Stop a payment or payout that has not ended: `cancelled`, announced like any other change. Cancelling a
        cancelled record changes nothing (the answer is the same); an ended one is refused (409). A settlement
        already scheduled sees the new status and stops (`settle`, `confirm_on_chain`). A `lost_uncancellable`
        record refuses every cancel."""
        if record.scenario in UNCANCELLABLE_SCENARIOS:
            raise SandboxError(
                409, "not_cancellable", f"this {record.kind} cannot be cancelled (scenario {record.scenario})"
            )
        if record.status == "cancelled":
            return
        if record.status not in record.cancellable:
            raise SandboxError(409, "not_cancellable", f"a {record.status} {record.kind} cannot be cancelled")
        record.status = "cancelled"
        self.changed(record)

    # -- settlement and webhooks --------------------------------------------------------------------

    def changed(self, record: Record) -> None:
        """A record's status changed: book what the PSP settles for it, if anything, and announce the change."""
        kind = record.settles.get(record.status)
        if kind is not None:
            self.settlements.book(record.psp, _settled(record, kind))
        self.announce(record)

    def announce(self, record: Record) -> None:
        """Schedule the webhook(s) for the record's new status, shaped by its scenario."""
        if record.scenario in SILENT_SCENARIOS:
            return
        wire = FORMATS[record.psp]
        event = _outgoing(wire, record.snapshot(), utc_now_iso())
        events = [event]
        if record.status == record.settled_status and record.scenario == "duplicate_webhook":
            events.append(event)
        if record.status == record.settled_status and record.scenario == "out_of_order":
            events.append(_outgoing(wire, record.snapshot(record.stale_status), record.created_at))
        if self.webhooks is None:
            raise RuntimeError("webhooks are sent only while the app runs (its lifespan creates the sender)")
        if self.config.webhook_copies > 1 or self.config.webhook_jitter_seconds > 0:
            for event in events:
                for _ in range(self.config.webhook_copies):
                    self.spawn(self._deliver_jittered(record.psp, event))
            return
        key = (record.psp, f"{record.kind}:{record.merchant_reference}")
        self._deliveries[key] = self.spawn(self._deliver_after(self._deliveries.get(key), record.psp, events))

    async def _deliver_jittered(self, psp: str, event: Outgoing) -> None:
        await asyncio.sleep(random.uniform(0, self.config.webhook_jitter_seconds))
        assert self.webhooks is not None
        await self.webhooks.deliver(psp, event)

    async def _deliver_after(self, previous: asyncio.Task[Any] | None, psp: str, events: list[Outgoing]) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        assert self.webhooks is not None
        await self.webhooks.deliver_in_order(psp, events)


def _settled(record: Record, kind: str) -> Settled:
    """What `record`, now in the status that settles as `kind`, settles as: the whole amount with the sign of the
    kind and the PSP's fee (a chargeback moves the money alone; a lost one's fee comes on a line of its own)."""
    amount_minor, currency = record.amount_minor, record.currency
    if kind == CHARGEBACK_FEE:
        gross_minor, fee_minor = 0, settlement_fee_minor(record.psp, "dispute", amount_minor, currency)
    elif kind in (CHARGEBACK, CHARGEBACK_REVERSAL):
        gross_minor, fee_minor = GROSS_SIGNS[kind] * amount_minor, 0
    else:
        gross_minor = GROSS_SIGNS[kind] * amount_minor
        fee_minor = settlement_fee_minor(record.psp, record.kind, amount_minor, currency)
    return Settled(kind, record.merchant_reference, record.reference, currency, gross_minor, fee_minor,
                   record.scenario)


def _new_reference(psp: str) -> str:
    return f"{psp}_{secrets.token_hex(8)}"


def _new_record(cls: type[R], psp: str, order: Order | RefundOrder, scenario: str, **fields: Any) -> R:
    """A record of what `order` asks at `psp`, under a new PSP reference."""
    return cls(psp=psp, reference=_new_reference(psp), merchant_reference=order.merchant_reference,
               amount_minor=order.amount_minor, currency=order.currency, scenario=scenario, **fields)


def _outgoing(wire: WireFormat, snap: Snapshot, occurred_at: str) -> Outgoing:
    event_id = f"{wire.event_id_prefix}{secrets.token_hex(12)}"
    return Outgoing(
        event_id=event_id,
        type=f"{snap.kind}.{snap.status}",
        merchant_reference=snap.merchant_reference,
        body=wire.event(event_id, snap, occurred_at),
    )


def _page(title: str, content: str) -> str:
    # The page's language, for screen readers to pronounce it (WCAG 3.1.1; the checkout's tests run axe on it).
    return (
        f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
        f"<body><h1>{title}</h1>\n{content}\n</body></html>\n"
    )


def _amount(payment: Payment) -> str:
    return html.escape(f"{to_decimal_string(payment.requested_minor, payment.currency)} {payment.currency}")


def _challenge_page(payment: Payment) -> str:
    if payment.status != "requires_action":
        content = f"<p>This authentication is closed (payment {html.escape(payment.status)}).</p>"
    else:
        # No `action`: the form posts back to this page's own URL, wherever the sandbox is mounted.
        content = (
            f"<p>Approve the payment of <strong>{_amount(payment)}</strong>?</p>\n"
            '<form method="post">\n'
            '  <button type="submit" name="outcome" value="success">Authenticate</button>\n'
            '  <button type="submit" name="outcome" value="fail">Fail authentication</button>\n'
            "</form>"
        )
    return _page("Sandbox 3-D Secure", content)


def _bank_page(payment: Payment) -> str:
    if payment.status != "requires_action":
        content = f"<p>This bank authorisation is closed (payment {html.escape(payment.status)}).</p>"
    else:
        options = "\n".join(f'    <option value="{html.escape(b)}">{html.escape(b)}</option>' for b in BANKS)
        content = (
            f"<p>Pay <strong>{_amount(payment)}</strong> from your bank account.</p>\n"
            '<form method="post">\n'
            f'  <label>Bank <select name="bank">\n{options}\n  </select></label>\n'
            '  <button type="submit" name="outcome" value="success">Authorise payment</button>\n'
            '  <button type="submit" name="outcome" value="fail">Cancel at the bank</button>\n'
            "</form>"
        )
    return _page("Sandbox Pay by Bank", content)


def create_app(config: SandboxConfig) -> FastAPI:
    sandbox = Sandbox(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            sandbox.webhooks = WebhookSender(
                config.webhook_url_template, sandbox.sign, config.webhook_retry_delays, http
            )
            try:
                yield
            finally:
                await sandbox.shutdown()  # before the client closes under the deliveries

    app = FastAPI(title="payloop sandbox PSPs", lifespan=lifespan)
    app.state.sandbox = sandbox
    app.include_router(fx.router())  # before the /control/{psp} routes, which would take /control/fx

    def wire_of(request: Request, psp: str | None = None) -> WireFormat:
        return FORMATS.get(psp or request.path_params.get("psp", ""), DEFAULT_FORMAT)

    def error_response(
        wire: WireFormat, status: int, code: str, message: str, fields: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        return JSONResponse(wire.error(status, code, message, fields), status_code=status, headers=headers)

    @app.exception_handler(SandboxError)
    async def _sandbox_error(request: Request, exc: SandboxError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return error_response(wire_of(request, exc.psp), exc.status, exc.code, exc.message, exc.fields, headers)

    @app.exception_handler(ControlError)
    async def _control_error(request: Request, exc: ControlError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"loc": list(err.get("loc", ())), "message": err.get("msg", "")} for err in exc.errors()]
        return error_response(wire_of(request), 422, "invalid_request", "the request is invalid", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        return error_response(wire_of(request), exc.status_code, code, str(exc.detail))

    def known_psp(psp: str) -> str:
        if psp not in METHODS:
            raise SandboxError(404, "unknown_psp", f"no sandbox PSP named {psp!r}")
        return psp

    async def psp_api(psp: str = Depends(known_psp)) -> str:
        """The PSP's API routes, subject to its control mode (the challenge and bank pages are not)."""
        mode = sandbox.modes[psp]
        if mode == "down":
            raise SandboxError(503, "psp_unavailable", f"{psp} is down")
        if mode == "error":
            raise SandboxError(500, "psp_internal_error", f"{psp} failed")
        if mode == "slow":
            await asyncio.sleep(config.slow_seconds)
        return psp

    def answer(psp: str, status: int, result: Snapshot | dict[str, str]) -> dict[str, Any]:
        wire = FORMATS[psp]
        if isinstance(result, Snapshot):
            return wire.resource(result)
        return wire.error(status, result["code"], result["message"])

    def replay(book: Book[Any], key: tuple[str, str] | None, fingerprint: str) -> JSONResponse | None:
        stored = book.idempotent.get(key) if key else None
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise SandboxError(422, "idempotency_key_reused", "Idempotency-Key was used with a different body")
        return JSONResponse(stored.body, status_code=stored.status)

    async def read_json(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (ValueError, RecursionError):
            raise SandboxError(422, "invalid_request", "the body is not JSON") from None

    async def read_order(request: Request, psp: str, kind: str) -> Order:
        return FORMATS[psp].parse_create(kind, await read_json(request))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def create_once(
        book: Book[Any], psp: str, order: Order | RefundOrder, idempotency_key: str | None
    ) -> JSONResponse:
        """The create contract payments, payouts and refunds share: scenario and method checks, Idempotency-Key,
        and the scenarios that answer before anything is created (flaky, slow, rate_limited, issuer_unavailable)."""
        scenario = order.metadata.get("sandbox_scenario", "approve")
        if scenario not in book.scenarios[psp]:
            raise SandboxError(422, "unknown_scenario", f"{psp} has no {book.kind} sandbox_scenario {scenario!r}")
        if isinstance(order, Order):  # a refund goes back the way the payment came
            methods = METHODS if book.kind == "payment" else PAYOUT_METHODS
            if order.method not in methods[psp]:
                raise SandboxError(422, "unsupported_method", f"{psp} does not take method {order.method!r}")
            if book.kind == "payment" and METHOD_OF[psp] == "card":
                card_of(order.metadata, order.customer_id, order.country)  # an unknown test card: 422 here

        key = (psp, idempotency_key) if idempotency_key else None
        if (stored := replay(book, key, order.fingerprint)) is not None:
            return stored
        if scenario == "slow":
            await asyncio.sleep(config.slow_seconds)
            if (stored := replay(book, key, order.fingerprint)) is not None:  # a concurrent retry finished first
                return stored
        # No await from here on: the checks and the creation happen atomically.
        ref_key = (psp, order.merchant_reference)
        if scenario in ("flaky", "rate_limited"):
            attempt = book.flaky_attempts[ref_key] = book.flaky_attempts.get(ref_key, 0) + 1
            if attempt <= FLAKY_FAILURES:
                if scenario == "flaky":
                    raise SandboxError(503, "psp_unavailable", f"flaky: attempt {attempt} fails")
                raise SandboxError(429, ERROR_SCENARIO_CODES[psp][scenario], f"rate limited: attempt {attempt}")
        if scenario == "issuer_unavailable":
            code = ERROR_SCENARIO_CODES[psp][scenario]
            raise SandboxError(ERROR_SCENARIO_STATUS[scenario], code, f"{code}: this {book.kind} cannot go through")
        if ref_key in book.records:
            raise SandboxError(
                409, "duplicate_merchant_reference", f"a {book.kind} with this merchant_reference exists"
            )
        create = {"payment": sandbox.create_payment, "payout": sandbox.create_payout,
                  "refund": sandbox.create_refund}[book.kind]
        status, result = create(psp, order, scenario)  # type: ignore[operator]
        response = answer(psp, status, result)
        # A decline is stored too: that record exists (failed), so a retry must get the same answer.
        if key:
            book.idempotent[key] = StoredResponse(order.fingerprint, status, response)
        return JSONResponse(response, status_code=status)

    @app.post("/{psp}/v1/payments", status_code=201)
    async def create_payment(
        request: Request,
        psp: str = Depends(psp_api),
        idempotency_key: str | None = Header(default=None, max_length=255),
    ) -> JSONResponse:
        order = await read_order(request, psp, "payment")
        return await create_once(sandbox.payments, psp, order, idempotency_key)

    @app.get("/{psp}/v1/payments/{merchant_reference}")
    async def get_payment(merchant_reference: str, psp: str = Depends(psp_api)) -> dict[str, Any]:
        return FORMATS[psp].resource(sandbox.payments.find(psp, merchant_reference).snapshot())

    @app.post("/{psp}/v1/payments/{merchant_reference}/cancel")
    async def cancel_payment(merchant_reference: str, psp: str = Depends(psp_api)) -> dict[str, Any]:
        payment = sandbox.payments.find(psp, merchant_reference)
        sandbox.cancel(payment)
        return FORMATS[psp].resource(payment.snapshot())

    @app.post("/{psp}/v1/payouts", status_code=201)
    async def create_payout(
        request: Request,
        psp: str = Depends(psp_api),
        idempotency_key: str | None = Header(default=None, max_length=255),
    ) -> JSONResponse:
        order = await read_order(request, psp, "payout")
        return await create_once(sandbox.payouts, psp, order, idempotency_key)

    @app.get("/{psp}/v1/payouts/{merchant_reference}")
    async def get_payout(merchant_reference: str, psp: str = Depends(psp_api)) -> dict[str, Any]:
        return FORMATS[psp].resource(sandbox.payouts.find(psp, merchant_reference).snapshot())

    @app.post("/{psp}/v1/payouts/{merchant_reference}/cancel")
    async def cancel_payout(merchant_reference: str, psp: str = Depends(psp_api)) -> dict[str, Any]:
        payout = sandbox.payouts.find(psp, merchant_reference)
        sandbox.cancel(payout)
        return FORMATS[psp].resource(payout.snapshot())

    @app.post("/{psp}/v1/refunds", status_code=201)
    async def create_refund(
        request: Request,
        psp: str = Depends(psp_api),
        idempotency_key: str | None = Header(default=None, max_length=255),
    ) -> JSONResponse:
        order = FORMATS[psp].parse_refund(await read_json(request))
        return await create_once(sandbox.refunds, psp, order, idempotency_key)

    @app.get("/{psp}/v1/refunds/{merchant_reference}")
    async def get_refund(merchant_reference: str, psp: str = Depends(psp_api)) -> dict[str, Any]:
        return FORMATS[psp].resource(sandbox.refunds.find(psp, merchant_reference).snapshot())

    def redirected_payment(psp: str, reference: str) -> Payment:
        payment = sandbox.by_reference.get(reference)
        if payment is None or payment.psp != psp or payment.redirect_url is None:
            code = "challenge_not_found" if METHOD_OF[psp] == "card" else "authorisation_not_found"
            raise SandboxError(404, code, f"no such {psp} authorisation page", psp=psp)
        return payment

    def card_psp(psp: str) -> str:
        """A PSP of the card family (the 3DS challenge pages are theirs)."""
        if METHOD_OF.get(psp) != "card":
            raise SandboxError(404, "not_found", f"no challenge pages at {psp!r}")
        return psp

    def bank_psp(psp: str) -> str:
        """A pay-by-bank PSP (the bank-selection pages are theirs)."""
        if METHOD_OF.get(psp) != "bank_transfer":
            raise SandboxError(404, "not_found", f"no bank pages at {psp!r}")
        return psp

    @app.get("/{psp}/challenge/{reference}", response_class=HTMLResponse)
    async def challenge_page(reference: str, psp: str = Depends(card_psp)) -> HTMLResponse:
        return HTMLResponse(_challenge_page(redirected_payment(psp, reference)))

    @app.post("/{psp}/challenge/{reference}")
    async def challenge_submit(
        reference: str, outcome: Literal["success", "fail"] = Form(), psp: str = Depends(card_psp)
    ) -> RedirectResponse:
        payment = redirected_payment(psp, reference)
        sandbox.complete_challenge(payment, outcome)
        return RedirectResponse(payment.return_url, status_code=303)

    @app.get("/{psp}/banks/{reference}", response_class=HTMLResponse)
    async def bank_page(reference: str, psp: str = Depends(bank_psp)) -> HTMLResponse:
        return HTMLResponse(_bank_page(redirected_payment(psp, reference)))

    @app.post("/{psp}/banks/{reference}")
    async def bank_submit(
        reference: str, outcome: Literal["success", "fail"] = Form(), bank: str | None = Form(default=None),
        psp: str = Depends(bank_psp),
    ) -> RedirectResponse:
        payment = redirected_payment(psp, reference)
        sandbox.complete_bank_authorisation(payment, outcome)
        return RedirectResponse(payment.return_url, status_code=303)

    @app.get("/control/{psp}")
    async def get_control(psp: str = Depends(known_psp)) -> dict[str, str]:
        return {"psp": psp, "mode": sandbox.modes[psp]}

    @app.post("/control/{psp}")
    async def set_control(body: ControlBody, psp: str = Depends(known_psp)) -> dict[str, str]:
        sandbox.modes[psp] = body.mode
        logger.info("sandbox %s is now %s", psp, body.mode)
        return {"psp": psp, "mode": body.mode}

    def control_psp(psp: str) -> str:
        if psp not in METHODS:
            raise ControlError(404, "unknown_psp", f"no sandbox PSP named {psp!r}")
        return psp

    async def control_body(request: Request, model: type[M]) -> M:
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise ControlError(422, "invalid_request", problems) from None

    @app.post("/control/{psp}/disputes", status_code=201)
    async def open_dispute(request: Request, psp: str = Depends(control_psp)) -> dict[str, str]:
        """Open a chargeback on a payment captured at `psp` (card, card_b, ewallet, ewallet_b). Pay-by-bank and crypto
        are push payments, which the payer authorised at their bank or sent from their wallet: no card scheme or wallet
        stands behind them to claw the money back, so there they answer 409 `disputes_not_supported`."""
        if not FORMATS[psp].supports_disputes:
            raise ControlError(409, "disputes_not_supported", f"{psp} payments carry no chargeback right")
        body = await control_body(request, DisputeBody)
        payment = sandbox.payments.records.get((psp, body.payment_id))
        if payment is None:
            raise ControlError(404, "payment_not_found", f"no {psp} payment {body.payment_id!r}")
        try:
            amount_minor = to_minor_units(body.amount, payment.currency)
        except MoneyError as exc:
            raise ControlError(422, exc.code, f"amount: {exc}") from None
        dispute = sandbox.open_dispute(psp, payment, amount_minor, body.reason_code)
        return {"dispute_id": dispute.reference}

    @app.post("/control/{psp}/disputes/{dispute_id}/resolve")
    async def resolve_dispute(dispute_id: str, request: Request, psp: str = Depends(control_psp)) -> dict[str, str]:
        """End an open dispute: `won` (the money comes back to the merchant) or `lost` (final, fee charged)."""
        body = await control_body(request, ResolveBody)
        dispute = sandbox.disputes.get((psp, dispute_id))
        if dispute is None:
            raise ControlError(404, "dispute_not_found", f"no {psp} dispute {dispute_id!r}")
        sandbox.resolve_dispute(dispute, body.outcome)
        return {"dispute_id": dispute.reference, "status": dispute.status}

    @app.get("/reports/{psp}/settlement")
    async def settlement_report(
        day: str | None = Query(default=None, alias="date"), psp: str = Depends(psp_api)
    ) -> StreamingResponse:
        """The PSP's settlement report of a UTC day (psp/sandbox/settlement.py), streamed as it is written."""
        try:
            report_day = parse_day(day)
        except ValueError:
            raise SandboxError(422, "invalid_date", "date must be a day, YYYY-MM-DD", psp=psp) from None
        report = REPORTS[psp]
        lines = sandbox.settlements.report(psp, report_day)
        return StreamingResponse(report.stream(psp, lines), media_type=report.media_type)

    @app.post("/control/{psp}/settlement")
    async def control_settlement(request: Request, psp: str = Depends(control_psp)) -> dict[str, Any]:
        """One of `{"orphan": {date, psp_reference, amount, currency}}` (a settled capture of a payment never made),
        `{"book_on": "YYYY-MM-DD" | null}` (the day the PSP books on from now on; null: the real day) or
        `{"synthetic": {date, count, currency, amount, fee, merchant_reference_prefix, psp_reference_prefix}}`
        (`count` settled captures, generated as the report streams); answers what was stored."""
        body = await control_body(request, SettlementControlBody)
        try:
            stored = sandbox.settlements.control(psp, body)
        except MoneyError as exc:
            raise ControlError(422, exc.code, str(exc)) from None
        logger.info("sandbox %s settlement control: %s", psp, stored)
        return {"psp": psp, **stored}

    @app.get("/_sandbox/deliveries")
    async def deliveries(merchant_reference: str | None = Query(default=None)) -> dict[str, Any]:
        log = sandbox.webhooks.log if sandbox.webhooks else []
        return {
            "deliveries": [
                d for d in log if merchant_reference is None or d["merchant_reference"] == merchant_reference
            ]
        }

    app.add_middleware(AccessLogMiddleware, logger_name="psp.sandbox.access")  # one line per request, no bodies
    return app
