"""The sandbox PSPs' wire formats: how each reads a create request and writes answers, webhooks and errors.

The sandbox keeps every record in our vocabulary (minor units, our statuses); a `WireFormat` translates at
the edge, as a real provider's API would look from outside. The words here are the providers' own, written
independently of the connectors (psp/*_connector.py), so the tests exercise both sides of each mapping.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from payloop.money import MAX_MINOR_UNITS, MoneyError, currency_exponent, to_decimal_string, to_minor_units
from psp import signature_schemes, signatures
from psp.scenarios import FAMILIES

CONFIRMATIONS_REQUIRED = 3

Reference = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Customer = Annotated[str, Field(min_length=1, max_length=128)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
Url = Annotated[str, Field(max_length=2048, pattern=r"^https?://\S+$")]
Metadata = Annotated[dict[str, str], Field(max_length=50)]
_MINOR_DIGITS = re.compile(r"(0|[1-9][0-9]*)")
T = TypeVar("T")


class SandboxError(Exception):
    """Answered in the PSP's error shape with `status`; `psp` names the PSP when the path does not."""

    def __init__(
        self, status: int, code: str, message: str, *, psp: str | None = None, fields: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.psp = psp
        self.fields = fields


@dataclass(frozen=True)
class Order:
    """A create request in our terms."""

    merchant_reference: str
    amount_minor: int
    currency: str
    method: str
    customer_id: str
    country: str | None
    metadata: dict[str, str]
    return_url: str | None
    fingerprint: str  # of the request as sent: a reused Idempotency-Key must come with the same one


@dataclass(frozen=True)
class RefundOrder:
    """A refund create request in our terms."""

    merchant_reference: str  # the refund's
    payment_reference: str  # the PSP's reference of the captured payment it refunds
    amount_minor: int
    currency: str
    metadata: dict[str, str]
    fingerprint: str


@dataclass(frozen=True)
class Snapshot:
    """A payment, payout, refund or dispute as it stands (or stood, for a late webhook), in our vocabulary.

    For a refund, `merchant_reference` is our refund id; for a dispute, our (disputed) payment id and `reference` the
    dispute's id. `payment_reference`: the PSP's reference of the payment a refund or dispute is about."""

    kind: str  # "payment" | "payout" | "refund" | "dispute"
    reference: str
    merchant_reference: str
    status: str
    amount_minor: int  # what was captured / paid / received
    requested_minor: int  # what was asked for
    currency: str
    failure_code: str | None = None
    redirect_url: str | None = None  # only while the payment requires action
    deposit_address: str | None = None
    confirmations: int = 0
    payment_reference: str | None = None
    fee_minor: int | None = None  # what the PSP charged for it, once settled (psp/sandbox/fees.py)
    reason_code: str | None = None  # a dispute's
    # A card payment's card (psp/sandbox/cards.py): its BIN country and fingerprint; None elsewhere.
    bin_country: str | None = None
    instrument: str | None = None


class _Body(BaseModel):
    # Unknown fields are refused: in particular the sandbox never accepts card or account data.
    model_config = ConfigDict(extra="forbid")


def _parsed(model: type[_Body], raw: Any, build: Callable[[Any], T]) -> T:
    """`build(body)` from a request validated against `model`; a 422 in the PSP's words for anything wrong."""
    try:
        body = model.model_validate(raw)
    except ValidationError as exc:
        fields = [{"loc": list(err.get("loc", ())), "message": err.get("msg", "")} for err in exc.errors()]
        raise SandboxError(422, "invalid_request", "the request is invalid", fields=fields) from None
    try:
        return build(body)
    except MoneyError as exc:
        raise SandboxError(422, exc.code, str(exc)) from None


def _checked_minor(units: int, currency: str) -> int:
    currency_exponent(currency)
    if units <= 0:
        raise MoneyError("invalid_amount", "amount must be greater than zero")
    if units > MAX_MINOR_UNITS:
        raise MoneyError("amount_too_large", "amount exceeds the largest accepted amount")
    return units


class WireFormat:
    name: ClassVar[str]
    scheme: ClassVar[signatures.SignatureScheme]
    payment_model: ClassVar[type[_Body]]
    payout_model: ClassVar[type[_Body]]
    refund_model: ClassVar[type[_Body]]
    event_id_prefix: ClassVar[str] = "evt_"
    # Card and wallet payments carry a chargeback right; push payments (pay-by-bank, crypto) do not.
    supports_disputes: ClassVar[bool] = False

    def parse_create(self, kind: str, raw: Any) -> Order:
        return _parsed(self.payment_model if kind == "payment" else self.payout_model, raw, self.order)

    def parse_refund(self, raw: Any) -> RefundOrder:
        def order(body: Any) -> RefundOrder:
            return RefundOrder(*self.refund_terms(body), metadata=self.refund_metadata(body),
                               fingerprint=body.model_dump_json())

        return _parsed(self.refund_model, raw, order)

    def refund_metadata(self, body: Any) -> dict[str, str]:
        """A refund request's merchant metadata."""
        return dict(body.metadata)

    def order(self, body: Any) -> Order:
        raise NotImplementedError

    def refund_terms(self, body: Any) -> tuple[str, str, int, str]:
        """A refund request's merchant reference, refunded payment's reference, amount in minor units, currency."""
        raise NotImplementedError

    def resource(self, snap: Snapshot) -> dict[str, Any]:
        raise NotImplementedError

    def event(self, event_id: str, snap: Snapshot, occurred_at: str) -> dict[str, Any]:
        raise NotImplementedError

    def error(self, status: int, code: str, message: str, fields: list[Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError


# -- card: flat snake_case, decimal strings, our statuses -----------------------------------------
# A refund or dispute names the payment by `payment_reference`; a dispute event's `reference` is the dispute's id,
# its type `dispute.opened|won|lost`. The fee of a settled operation: `fee`, a decimal string in `currency`. A
# payment, in answers and webhooks alike, tells the card it was made with as Stripe does: `card` {country (the
# issuer's, from the BIN), fingerprint}. The merchant picks a test card by `metadata.sandbox_card`.


class CardCreate(_Body):
    merchant_reference: Reference
    amount: str
    currency: Currency
    method: str
    customer_id: Customer
    country: Country | None = None
    metadata: Metadata = Field(default_factory=dict)


class CardPayment(CardCreate):
    return_url: Url


class CardRefund(_Body):
    merchant_reference: Reference
    payment_reference: Reference
    amount: str
    currency: Currency
    metadata: Metadata = Field(default_factory=dict)


class CardFormat(WireFormat):
    name = "card"
    scheme = signatures.DESIGN_HMAC
    payment_model = CardPayment
    payout_model = CardCreate
    refund_model = CardRefund
    supports_disputes = True

    def order(self, body: Any) -> Order:
        return Order(
            merchant_reference=body.merchant_reference,
            amount_minor=to_minor_units(body.amount, body.currency),
            currency=body.currency,
            method=body.method,
            customer_id=body.customer_id,
            country=body.country,
            metadata=body.metadata,
            return_url=getattr(body, "return_url", None),
            fingerprint=body.model_dump_json(),
        )

    def refund_terms(self, body: Any) -> tuple[str, str, int, str]:
        amount_minor = to_minor_units(body.amount, body.currency)
        return body.merchant_reference, body.payment_reference, amount_minor, body.currency

    def resource(self, snap: Snapshot) -> dict[str, Any]:
        body = self._common(snap)
        if snap.failure_code:
            body["failure_code"] = snap.failure_code
        if snap.redirect_url:
            body["redirect_url"] = snap.redirect_url
        return body

    def event(self, event_id: str, snap: Snapshot, occurred_at: str) -> dict[str, Any]:
        event = {"event_id": event_id, "type": f"{snap.kind}.{snap.status}", **self._common(snap),
                 "occurred_at": occurred_at}
        if snap.failure_code and snap.status == "failed":
            event["failure_code"] = snap.failure_code
        return event

    def _common(self, snap: Snapshot) -> dict[str, Any]:
        body: dict[str, Any] = {
            "reference": snap.reference,
            "merchant_reference": snap.merchant_reference,
            "status": snap.status,
            "amount": to_decimal_string(snap.amount_minor, snap.currency),
            "currency": snap.currency,
        }
        if snap.payment_reference:
            body["payment_reference"] = snap.payment_reference
        if snap.reason_code:
            body["reason_code"] = snap.reason_code
        if snap.fee_minor is not None:
            body["fee"] = to_decimal_string(snap.fee_minor, snap.currency)
        if snap.instrument is not None:
            body["card"] = {"country": snap.bin_country, "fingerprint": snap.instrument}
        return body

    def error(self, status: int, code: str, message: str, fields: list[Any] | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": code, "message": message}
        if fields is not None:
            error["fields"] = fields
        return {"error": error}


# -- ewallet: camelCase, money objects, upper-case statuses ---------------------------------------
# Its field names are Adyen's (merchantReference, originalReference, refusalReason, amount {value, currency}), and so
# are its chargeback event codes (`eventType`): NOTIFICATION_OF_CHARGEBACK when a dispute opens, CHARGEBACK_REVERSED
# when the merchant wins it, SECOND_CHARGEBACK when the issuer's second presentment makes the loss final. A dispute
# resource has no status: its event code is its stage. The fee of a settled operation: `fee` {value, currency}.

_WALLET_WORDS = {
    "payment": {
        "pending": "PENDING", "requires_action": "ACTION_REQUIRED", "authorized": "AUTHORIZED",
        "captured": "SUCCEEDED", "failed": "FAILED", "cancelled": "CANCELLED", "expired": "EXPIRED",
    },
    "payout": {"pending": "PENDING", "paid": "SUCCEEDED", "failed": "FAILED", "cancelled": "CANCELLED"},
    "refund": {"pending": "PENDING", "succeeded": "SUCCEEDED", "failed": "FAILED"},
}
_CHARGEBACK_EVENT_CODES = {
    "opened": "NOTIFICATION_OF_CHARGEBACK", "won": "CHARGEBACK_REVERSED", "lost": "SECOND_CHARGEBACK",
}


class WalletMoney(_Body):
    value: str
    currency: Currency


class WalletMethod(_Body):
    type: str


class WalletCreate(_Body):
    merchantReference: Reference
    amount: WalletMoney
    paymentMethod: WalletMethod
    shopperReference: Customer
    countryCode: Country | None = None
    metadata: Metadata = Field(default_factory=dict)


class WalletPayment(WalletCreate):
    returnUrl: Url


class WalletRefund(_Body):
    merchantReference: Reference
    originalReference: Reference
    amount: WalletMoney
    metadata: Metadata = Field(default_factory=dict)


def _wallet_money(minor: int, currency: str) -> dict[str, str]:
    return {"value": to_decimal_string(minor, currency), "currency": currency}


class EwalletFormat(WireFormat):
    name = "ewallet"
    scheme = signatures.WALLET_HMAC
    payment_model = WalletPayment
    payout_model = WalletCreate
    refund_model = WalletRefund
    supports_disputes = True

    def order(self, body: Any) -> Order:
        return Order(
            merchant_reference=body.merchantReference,
            amount_minor=to_minor_units(body.amount.value, body.amount.currency),
            currency=body.amount.currency,
            method=body.paymentMethod.type,
            customer_id=body.shopperReference,
            country=body.countryCode,
            metadata=body.metadata,
            return_url=getattr(body, "returnUrl", None),
            fingerprint=body.model_dump_json(),
        )

    def refund_terms(self, body: Any) -> tuple[str, str, int, str]:
        amount_minor = to_minor_units(body.amount.value, body.amount.currency)
        return body.merchantReference, body.originalReference, amount_minor, body.amount.currency

    def resource(self, snap: Snapshot) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": snap.reference,
            "merchantReference": snap.merchant_reference,
            "kind": snap.kind.upper(),
            "amount": _wallet_money(snap.amount_minor, snap.currency),
        }
        if snap.kind != "dispute":
            body["status"] = _WALLET_WORDS[snap.kind][snap.status]
        if snap.payment_reference:
            body["originalReference"] = snap.payment_reference
        if snap.reason_code:
            body["reasonCode"] = snap.reason_code
        if snap.failure_code:
            body["refusalReason"] = snap.failure_code
        if snap.redirect_url:
            body["action"] = {"type": "redirect", "url": snap.redirect_url}
        if snap.fee_minor is not None:
            body["fee"] = _wallet_money(snap.fee_minor, snap.currency)
        return body

    def event(self, event_id: str, snap: Snapshot, occurred_at: str) -> dict[str, Any]:
        if snap.kind == "dispute":
            event_type = _CHARGEBACK_EVENT_CODES[snap.status]
        else:
            event_type = f"{snap.kind.upper()}_STATUS"
        return {
            "notificationId": event_id,
            "eventType": event_type,
            "eventDate": occurred_at,
            "resource": self.resource(snap),
        }

    def error(self, status: int, code: str, message: str, fields: list[Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"errorCode": code, "message": message, "httpStatus": status}
        if fields is not None:
            body["invalidFields"] = fields
        return body


# -- paybybank: integer minor units, British words, Standard Webhooks ------------------------------
# A refund names the refunded payment by their id (`payment_id`); no fees are reported, no disputes exist.

_BANK_WORDS = {
    "payment": {
        "pending": "initiated", "requires_action": "redirect", "authorized": "authorised", "captured": "settled",
        "failed": "rejected", "cancelled": "cancelled", "expired": "expired",
    },
    "payout": {"pending": "processing", "paid": "executed", "failed": "rejected", "cancelled": "cancelled"},
    "refund": {"pending": "pending", "succeeded": "executed", "failed": "failed"},
}


class BankAmount(_Body):
    value: StrictInt
    currency: Currency


class BankUser(_Body):
    id: Customer
    country: Country | None = None


class BankCreate(_Body):
    external_id: Reference
    amount: BankAmount
    scheme: str
    user: BankUser
    metadata: Metadata = Field(default_factory=dict)


class BankPayment(BankCreate):
    redirect_uri: Url


class BankRefund(_Body):
    external_id: Reference
    payment_id: Reference
    amount: BankAmount
    metadata: Metadata = Field(default_factory=dict)


class PayByBankFormat(WireFormat):
    name = "paybybank"
    scheme = signatures.STANDARD_WEBHOOKS
    payment_model = BankPayment
    payout_model = BankCreate
    refund_model = BankRefund
    event_id_prefix = "msg_"

    def order(self, body: Any) -> Order:
        return Order(
            merchant_reference=body.external_id,
            amount_minor=_checked_minor(body.amount.value, body.amount.currency),
            currency=body.amount.currency,
            method=body.scheme,
            customer_id=body.user.id,
            country=body.user.country,
            metadata=body.metadata,
            return_url=getattr(body, "redirect_uri", None),
            fingerprint=body.model_dump_json(),
        )

    def refund_terms(self, body: Any) -> tuple[str, str, int, str]:
        amount_minor = _checked_minor(body.amount.value, body.amount.currency)
        return body.external_id, body.payment_id, amount_minor, body.amount.currency

    def resource(self, snap: Snapshot) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": snap.reference,
            "external_id": snap.merchant_reference,
            "object": snap.kind,
            "status": _BANK_WORDS[snap.kind][snap.status],
            "amount": {"value": snap.amount_minor, "currency": snap.currency},
        }
        if snap.payment_reference:
            body["payment_id"] = snap.payment_reference
        if snap.redirect_url:
            body["redirect"] = {"url": snap.redirect_url}
        if snap.failure_code:
            body["status_reason"] = snap.failure_code
        return body

    def event(self, event_id: str, snap: Snapshot, occurred_at: str) -> dict[str, Any]:
        data = self.resource(snap)
        # The event id travels in the `webhook-id` header (Standard Webhooks), not in the body.
        return {"type": f"{snap.kind}.{data['status']}", "timestamp": occurred_at, "data": data}

    def error(self, status: int, code: str, message: str, fields: list[Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://paybybank.sandbox/errors/{code}",
            "title": message,
            "status": status,
            "error_code": code,
        }
        if fields is not None:
            body["invalid_params"] = fields
        return body


# -- crypto: fiat-priced invoices in minor-unit strings, confirmations -----------------------------
# A refund (coins sent back to the payer) names the refunded invoice by `invoice_id`; its webhook is
# `refund.updated` with the refund under `refund`. No fees are reported, no disputes exist.

_CRYPTO_DEPOSIT_WORDS = {
    "pending": "awaiting_payment", "authorized": "pending", "captured": "confirmed", "failed": "failed",
    "cancelled": "cancelled", "expired": "expired",
}
_CRYPTO_WITHDRAWAL_WORDS = {"pending": "processing", "paid": "confirmed", "failed": "failed", "cancelled": "cancelled"}
_CRYPTO_REFUND_WORDS = {"pending": "processing", "succeeded": "confirmed", "failed": "failed"}
_RECEIVED = frozenset({"authorized", "captured", "paid"})


class CryptoCreate(_Body):
    order_id: Reference
    price_amount: str = Field(max_length=32)
    price_currency: Currency
    pay_method: str
    buyer_id: Customer
    buyer_country: Country | None = None
    metadata: Metadata = Field(default_factory=dict)


class CryptoPayment(CryptoCreate):
    success_url: Url


class CryptoRefund(_Body):
    order_id: Reference
    invoice_id: Reference
    price_amount: str = Field(max_length=32)
    price_currency: Currency
    metadata: Metadata = Field(default_factory=dict)


def _price_minor(body: Any) -> int:
    if not _MINOR_DIGITS.fullmatch(body.price_amount):
        raise MoneyError("invalid_amount", "price_amount must be minor units as a decimal string, e.g. \"5000\"")
    return _checked_minor(int(body.price_amount), body.price_currency)


class CryptoFormat(WireFormat):
    name = "crypto"
    scheme = signatures.STRIPE_LIKE
    payment_model = CryptoPayment
    payout_model = CryptoCreate
    refund_model = CryptoRefund

    def order(self, body: Any) -> Order:
        return Order(
            merchant_reference=body.order_id,
            amount_minor=_price_minor(body),
            currency=body.price_currency,
            method=body.pay_method,
            customer_id=body.buyer_id,
            country=body.buyer_country,
            metadata=body.metadata,
            return_url=getattr(body, "success_url", None),
            fingerprint=body.model_dump_json(),
        )

    def refund_terms(self, body: Any) -> tuple[str, str, int, str]:
        return body.order_id, body.invoice_id, _price_minor(body), body.price_currency

    def resource(self, snap: Snapshot) -> dict[str, Any]:
        if snap.kind == "refund":
            return self._refund(snap)
        deposit = snap.kind == "payment"
        words = _CRYPTO_DEPOSIT_WORDS if deposit else _CRYPTO_WITHDRAWAL_WORDS
        body: dict[str, Any] = {
            "invoice_id": snap.reference,
            "order_id": snap.merchant_reference,
            "type": "deposit" if deposit else "withdrawal",
            "state": words[snap.status],
            "price_amount": str(snap.requested_minor),
            "price_currency": snap.currency,
        }
        if snap.status in _RECEIVED:
            body["received_amount"] = str(snap.amount_minor)
        if snap.deposit_address:
            body["deposit_address"] = snap.deposit_address
        body["confirmations"] = snap.confirmations
        body["confirmations_required"] = CONFIRMATIONS_REQUIRED
        if snap.failure_code:
            body["error"] = snap.failure_code
        return body

    def _refund(self, snap: Snapshot) -> dict[str, Any]:
        body: dict[str, Any] = {
            "refund_id": snap.reference,
            "order_id": snap.merchant_reference,
            "invoice_id": snap.payment_reference,
            "type": "refund",
            "state": _CRYPTO_REFUND_WORDS[snap.status],
            "price_amount": str(snap.amount_minor),
            "price_currency": snap.currency,
        }
        if snap.failure_code:
            body["error"] = snap.failure_code
        return body

    def event(self, event_id: str, snap: Snapshot, occurred_at: str) -> dict[str, Any]:
        subject = "refund" if snap.kind == "refund" else "invoice"
        return {
            "notification_id": event_id,
            "event": f"{subject}.updated",
            "created": occurred_at,
            subject: self.resource(snap),
        }

    def error(self, status: int, code: str, message: str, fields: list[Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "error", "reason": code, "message": message}
        if fields is not None:
            body["fields"] = fields
        return body


# -- ewallet_b: short snake_case, operations and states, notification envelope, HTTP Signatures ---------------
# A second e-wallet, unlike the first in every word: an operation (`op`: debit = a payment, credit = a payout,
# reversal = a refund, claim = a dispute) with a `state`, amounts as `value` + `ccy`, the wallet's id `txn_id`, ours
# `txn_ref`; a refund or claim names the payment by `original_txn_id`. A settled operation carries its `charge` (the
# fee, a decimal string). Webhooks: {notification: {id, topic: "<op>.<state>", sent_at}, txn: <resource>}, the id
# also in the signed `X-EWB-Event-Id` header. Errors: {result: "ERROR", errors: [{code, text}]}.

_EWB_OPS = {"payment": "debit", "payout": "credit", "refund": "reversal", "dispute": "claim"}
_EWB_STATES = {
    "payment": {
        "pending": "open", "requires_action": "approval_pending", "authorized": "approved", "captured": "completed",
        "failed": "declined", "cancelled": "voided", "expired": "timed_out",
    },
    "payout": {"pending": "open", "paid": "completed", "failed": "declined", "cancelled": "voided"},
    "refund": {"pending": "open", "succeeded": "completed", "failed": "declined"},
    "dispute": {"opened": "claim_open", "won": "claim_rejected", "lost": "claim_accepted"},
}


class EwbParty(_Body):
    account_ref: Customer
    country: Country | None = None


class EwbPayout(_Body):
    txn_ref: Reference
    value: str = Field(max_length=32)
    ccy: Currency
    wallet: str
    payee: EwbParty
    extras: Metadata = Field(default_factory=dict)


class EwbPayment(_Body):
    txn_ref: Reference
    value: str = Field(max_length=32)
    ccy: Currency
    wallet: str
    payer: EwbParty
    return_link: Url
    extras: Metadata = Field(default_factory=dict)


class EwbRefund(_Body):
    txn_ref: Reference
    original_txn_id: Reference
    value: str = Field(max_length=32)
    ccy: Currency
    extras: Metadata = Field(default_factory=dict)


class EwalletBFormat(WireFormat):
    name = "ewallet_b"
    scheme = signature_schemes.HTTP_SIGNATURE
    payment_model = EwbPayment
    payout_model = EwbPayout
    refund_model = EwbRefund
    event_id_prefix = "ntf_"
    supports_disputes = True

    def order(self, body: Any) -> Order:
        party = body.payer if isinstance(body, EwbPayment) else body.payee
        return Order(
            merchant_reference=body.txn_ref,
            amount_minor=to_minor_units(body.value, body.ccy),
            currency=body.ccy,
            method=body.wallet,
            customer_id=party.account_ref,
            country=party.country,
            metadata=body.extras,
            return_url=getattr(body, "return_link", None),
            fingerprint=body.model_dump_json(),
        )

    def refund_terms(self, body: Any) -> tuple[str, str, int, str]:
        return body.txn_ref, body.original_txn_id, to_minor_units(body.value, body.ccy), body.ccy

    def refund_metadata(self, body: Any) -> dict[str, str]:
        return dict(body.extras)

    def resource(self, snap: Snapshot) -> dict[str, Any]:
        body: dict[str, Any] = {
            "txn_id": snap.reference,
            "txn_ref": snap.merchant_reference,
            "op": _EWB_OPS[snap.kind],
            "state": _EWB_STATES[snap.kind][snap.status],
            "value": to_decimal_string(snap.amount_minor, snap.currency),
            "ccy": snap.currency,
        }
        if snap.payment_reference:
            body["original_txn_id"] = snap.payment_reference
        if snap.reason_code:
            body["claim_reason"] = snap.reason_code
        if snap.failure_code:
            body["decline_reason"] = snap.failure_code
        if snap.redirect_url:
            body["approval_link"] = snap.redirect_url
        if snap.fee_minor is not None:
            body["charge"] = to_decimal_string(snap.fee_minor, snap.currency)
        return body

    def event(self, event_id: str, snap: Snapshot, occurred_at: str) -> dict[str, Any]:
        txn = self.resource(snap)
        return {"notification": {"id": event_id, "topic": f"{txn['op']}.{txn['state']}", "sent_at": occurred_at},
                "txn": txn}

    def error(self, status: int, code: str, message: str, fields: list[Any] | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": code, "text": message}
        if fields is not None:
            error["fields"] = fields
        return {"result": "ERROR", "errors": [error]}


# -- paybybank_b: Open Banking style, PascalCase `Data` envelope, decimal strings, detached JWS -----------------
# A second pay-by-bank provider (UK Open Banking's shapes): requests and answers wrapped in `Data`, the amount as
# `InstructedAmount` {Amount: "50.00", Currency}, our id the `EndToEndIdentification`, theirs the `ResourceId`, the
# resource's `Type` DomesticPayment / DomesticPayout / Refund, Open Banking status words, the bank's page under
# `Links.Authorisation`; a refund names the payment's `OriginalResourceId`. Merchant metadata: `SupplementaryData`.
# Webhooks: {Data: {EventNotificationId, EventTime, Resource: <answer's Data>}}. Errors: {Code, Message, Errors:
# [{ErrorCode, Message}]}. No fees reported, no disputes.

_OB_TYPES = {"payment": "DomesticPayment", "payout": "DomesticPayout", "refund": "Refund"}
_OB_STATUS = {
    "payment": {
        "pending": "Pending", "requires_action": "AwaitingAuthorisation", "authorized": "AcceptedSettlementInProcess",
        "captured": "AcceptedSettlementCompleted", "failed": "Rejected", "cancelled": "Cancelled",
        "expired": "Expired",
    },
    "payout": {"pending": "Pending", "paid": "AcceptedCreditSettlementCompleted", "failed": "Rejected",
               "cancelled": "Cancelled"},
    "refund": {"pending": "Pending", "succeeded": "AcceptedSettlementCompleted", "failed": "Rejected"},
}


class ObAmount(_Body):
    Amount: str = Field(max_length=32)
    Currency: Currency


class ObInitiation(_Body):
    EndToEndIdentification: Reference
    InstructedAmount: ObAmount
    LocalInstrument: str


class ObPayoutData(_Body):
    Initiation: ObInitiation
    PsuId: Customer
    PsuCountry: Country | None = None


class ObPaymentData(ObPayoutData):
    RedirectUri: Url


class ObRefundInitiation(_Body):
    EndToEndIdentification: Reference
    InstructedAmount: ObAmount


class ObRefundData(_Body):
    Initiation: ObRefundInitiation
    OriginalResourceId: Reference


class ObPayout(_Body):
    Data: ObPayoutData
    SupplementaryData: Metadata = Field(default_factory=dict)


class ObPayment(_Body):
    Data: ObPaymentData
    SupplementaryData: Metadata = Field(default_factory=dict)


class ObRefund(_Body):
    Data: ObRefundData
    SupplementaryData: Metadata = Field(default_factory=dict)


class PayByBankBFormat(WireFormat):
    name = "paybybank_b"
    scheme = signature_schemes.DETACHED_JWS
    payment_model = ObPayment
    payout_model = ObPayout
    refund_model = ObRefund
    event_id_prefix = "ob_evt_"

    def order(self, body: Any) -> Order:
        data = body.Data
        amount = data.Initiation.InstructedAmount
        return Order(
            merchant_reference=data.Initiation.EndToEndIdentification,
            amount_minor=to_minor_units(amount.Amount, amount.Currency),
            currency=amount.Currency,
            method=data.Initiation.LocalInstrument,
            customer_id=data.PsuId,
            country=data.PsuCountry,
            metadata=body.SupplementaryData,
            return_url=getattr(data, "RedirectUri", None),
            fingerprint=body.model_dump_json(),
        )

    def refund_terms(self, body: Any) -> tuple[str, str, int, str]:
        initiation = body.Data.Initiation
        amount = initiation.InstructedAmount
        return (initiation.EndToEndIdentification, body.Data.OriginalResourceId,
                to_minor_units(amount.Amount, amount.Currency), amount.Currency)

    def refund_metadata(self, body: Any) -> dict[str, str]:
        return dict(body.SupplementaryData)

    def _data(self, snap: Snapshot) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ResourceId": snap.reference,
            "EndToEndIdentification": snap.merchant_reference,
            "Type": _OB_TYPES[snap.kind],
            "Status": _OB_STATUS[snap.kind][snap.status],
            "InstructedAmount": {"Amount": to_decimal_string(snap.amount_minor, snap.currency),
                                 "Currency": snap.currency},
        }
        if snap.payment_reference:
            data["OriginalResourceId"] = snap.payment_reference
        if snap.failure_code:
            data["StatusReason"] = snap.failure_code
        if snap.redirect_url:
            data["Links"] = {"Authorisation": snap.redirect_url}
        return data

    def resource(self, snap: Snapshot) -> dict[str, Any]:
        return {"Data": self._data(snap)}

    def event(self, event_id: str, snap: Snapshot, occurred_at: str) -> dict[str, Any]:
        return {"Data": {"EventNotificationId": event_id, "EventTime": occurred_at, "Resource": self._data(snap)}}

    def error(self, status: int, code: str, message: str, fields: list[Any] | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"ErrorCode": code, "Message": message}
        if fields is not None:
            error["Fields"] = fields
        return {"Code": str(status), "Message": message, "Errors": [error]}


# Each sandbox PSP's format is its family's (FAMILIES, in psp/scenarios.py).
_FORMATS_BY_FAMILY: dict[str, WireFormat] = {
    f.name: f for f in (CardFormat(), EwalletFormat(), EwalletBFormat(), PayByBankFormat(), PayByBankBFormat(),
                        CryptoFormat())
}
FORMATS: dict[str, WireFormat] = {psp: _FORMATS_BY_FAMILY[family] for psp, family in FAMILIES.items()}
DEFAULT_FORMAT = FORMATS["card"]
