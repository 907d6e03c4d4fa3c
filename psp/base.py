"""The PSP connector protocol: what activities call, and what every provider module implements.

Amounts are integer minor units plus an ISO 4217 currency here; each connector converts to and from
its provider's wire format. `payment_id` and `payout_id` are always OUR ids (providers call them the
merchant reference).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Protocol, runtime_checkable

from payloop.settlement import SettlementLine, SettlementTerms

PAYMENT_STATUSES = frozenset(
    {"pending", "requires_action", "authorized", "captured", "failed", "cancelled", "expired"}
)
PAYOUT_STATUSES = frozenset({"pending", "paid", "failed", "cancelled"})
REFUND_STATUSES = frozenset({"pending", "succeeded", "failed"})
DISPUTE_STATUSES = frozenset({"opened", "won", "lost"})
# What a webhook is about: `WebhookEvent.kind`.
EVENT_KINDS = frozenset({"payment", "payout", "refund", "dispute"})


@dataclass(frozen=True)
class CreatePaymentRequest:
    payment_id: str
    amount_minor: int
    currency: str
    method: str
    player_id: str
    return_url: str
    country: str | None = None
    # Merchant metadata `meta.sandbox_scenario`; real PSPs carry it as opaque metadata too.
    scenario: str | None = None
    # Merchant metadata `sandbox_card`: the sandbox card PSPs' test card to pay with (psp.scenarios.SANDBOX_CARDS);
    # None: the player's own card. Other PSPs ignore it.
    sandbox_card: str | None = None


@dataclass(frozen=True)
class PspPayment:
    psp: str
    payment_id: str
    psp_reference: str
    status: str
    amount_minor: int
    currency: str
    redirect_url: str | None = None
    failure_code: str | None = None
    fee_minor: int | None = None  # the PSP's fee for the capture, when it reports one (in `currency`)
    # What card PSPs tell about the card paid with: its issuer's (BIN) country, ISO 3166 alpha-2, and the PSP's
    # fingerprint of the card number, the same for every payment with that card. None where the PSP says nothing.
    bin_country: str | None = None
    instrument: str | None = None


@dataclass(frozen=True)
class CreatePayoutRequest:
    payout_id: str
    amount_minor: int
    currency: str
    method: str
    player_id: str
    country: str | None = None
    scenario: str | None = None  # as for payments: merchant metadata `sandbox_scenario`


@dataclass(frozen=True)
class PspPayout:
    psp: str
    payout_id: str
    psp_reference: str
    status: str  # one of PAYOUT_STATUSES
    amount_minor: int
    currency: str
    failure_code: str | None = None
    fee_minor: int | None = None  # the PSP's fee for the payout, when it reports one


@dataclass(frozen=True)
class CreateRefundRequest:
    refund_id: str  # ours: the refund's merchant reference
    payment_id: str  # ours: the captured payment it refunds
    psp_reference: str  # the PSP's reference of that payment
    amount_minor: int
    currency: str
    scenario: str | None = None  # merchant metadata `sandbox_scenario`, as for payments


@dataclass(frozen=True)
class PspRefund:
    psp: str
    refund_id: str
    psp_reference: str  # the PSP's reference of the refund
    status: str  # one of REFUND_STATUSES
    amount_minor: int
    currency: str
    failure_code: str | None = None
    fee_minor: int | None = None  # the PSP's fee for the refund, when it reports one


@dataclass(frozen=True)
class WebhookEvent:
    """A PSP event about one of our records, by `kind`:

    - "payment": `payment_id` our payment id, `status` one of PAYMENT_STATUSES;
    - "payout": `payment_id` our payout id, `status` one of PAYOUT_STATUSES;
    - "refund": `payment_id` our refund id, `psp_reference` the PSP's refund reference, `status` one of
      REFUND_STATUSES;
    - "dispute": `payment_id` our (disputed) payment id, `psp_reference` that payment's PSP reference,
      `dispute_id` the PSP's dispute id, `status` one of DISPUTE_STATUSES, `amount_minor` the disputed amount,
      `reason_code` the scheme's reason code.

    `fee_minor`: the PSP's fee for the operation (capture, payout, refund, chargeback), when it reports one.
    """

    psp: str
    event_id: str
    payment_id: str
    psp_reference: str
    status: str
    amount_minor: int
    currency: str
    occurred_at: str
    failure_code: str | None = None
    kind: str = "payment"
    fee_minor: int | None = None
    dispute_id: str | None = None
    reason_code: str | None = None


class PspError(Exception):
    """A PSP call that did not produce a usable answer; `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class PspDeclined(PspError):
    """Hard decline (card declined, insufficient funds, payout declined, account closed): never retried,
    never failed over."""


class PspTransientError(PspError):
    """5xx, timeout or connection error: retry with backoff, then fail over to the next PSP."""


class PspRequestRejected(PspError):
    """Any other 4xx: our request is wrong or illegal in the payment's state; retrying cannot help."""


class PspFailover(PspError):
    """The PSP cannot take this payment now (issuer or bank unavailable, acquirer down): retrying the same PSP
    will not help, so move on to the next candidate PSP at once (before the player was redirected)."""


class PspStepUpRequired(PspError):
    """The PSP wants strong customer authentication (3DS / SCA) that this attempt did not carry (a soft
    decline): not a hard decline, but retrying the same request cannot help either."""


class PspNotFound(PspError):
    """The PSP does not know this payment or payout."""


class InvalidWebhook(PspError):
    """A webhook that must be refused. Codes: missing_signature, bad_signature, stale_timestamp, malformed_payload."""


# `verifier(headers, raw_body, now) -> WebhookEvent`, raising InvalidWebhook; what the API needs per PSP.
WebhookVerifier = Callable[[Mapping[str, str], bytes, float], WebhookEvent]


@runtime_checkable
class PspConnector(Protocol):
    """What activities call. Every connector in psp/registry.py conforms (tests/psp/test_connector_protocol.py:
    each method present, async (settlement_report an async generator), with these parameter names and types)."""

    name: str
    methods: frozenset[str]  # what players can pay with
    payout_methods: frozenset[str]  # what this PSP can pay players out to
    settlement_terms: SettlementTerms  # its contract's settlement lag (SLA) and fee tolerance, for reconciliation

    async def create_payment(self, req: CreatePaymentRequest) -> PspPayment: ...

    async def get_payment(self, payment_id: str) -> PspPayment: ...

    async def cancel_payment(self, payment_id: str) -> PspPayment: ...

    async def create_payout(self, req: CreatePayoutRequest) -> PspPayout: ...

    async def get_payout(self, payout_id: str) -> PspPayout: ...

    async def cancel_payout(self, payout_id: str) -> PspPayout:
        """Stop a payout the PSP has not paid yet: `cancelled` (again, if it already was); a paid or failed payout,
        or one the PSP cannot stop, is PspRequestRejected (`not_cancellable`); an unknown one PspNotFound."""
        ...

    async def create_refund(self, req: CreateRefundRequest) -> PspRefund:
        """Refund (part of) a captured payment, idempotent on `req.refund_id`: the same refund id answers the
        same refund. More than the payment's refundable amount at the PSP is PspRequestRejected
        (`refund_exceeds_captured`); a refund the PSP declines at once is PspDeclined."""
        ...

    async def get_refund(self, refund_id: str) -> PspRefund:
        """The refund as the PSP sees it, by our refund id; an unknown one PspNotFound."""
        ...

    def settlement_report(self, day: date) -> AsyncIterator[SettlementLine]:
        """The PSP's settlement report of UTC `day`, one line at a time as it streams in (never read whole): an
        async generator, so `async for line in connector.settlement_report(day)`, closed (`contextlib.aclosing`)
        when left early. Lines are in payloop/settlement.py's terms, gross signed per GROSS_SIGNS, fee >= 0.
        A report that cannot be read raises MalformedReport naming the line (its bad header or line, a net that is
        not gross less fee, a gross of the wrong sign, an unknown type), after the lines before it; transport
        failures and error answers raise this module's PspError taxonomy."""
        ...
