"""The crypto PSP (sandbox): invoices priced in fiat minor units (decimal strings, no FX), paid to a deposit
address and confirmed on chain; Stripe-like webhook signatures (`X-Crypto-Signature: t=…,v1=…`).

Flow: create answers `awaiting_payment` with a `deposit_address`; the transfer is then seen (`pending`,
confirmations 1, 2) and `confirmed` after `confirmations_required` (3), one webhook per step. Their words →
ours: awaiting_payment → pending, pending → authorized, confirmed → captured. The amount reported is
`received_amount` once the transfer is seen (an under- or overpayment differs from `price_amount`), else
`price_amount`.

Request:  {order_id, price_amount: "5000", price_currency: "EUR", pay_method: "crypto", buyer_id,
           buyer_country?, success_url (deposits), metadata}
Answer:   {invoice_id, order_id, type: "deposit"|"withdrawal", state, price_amount, price_currency,
           received_amount?, deposit_address?, confirmations, confirmations_required, error?}
Webhook:  {notification_id, event: "invoice.updated", created, invoice: <answer>}
Error:    {status: "error", reason, message}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from payloop.money import MAX_MINOR_UNITS, currency_exponent
from payloop.psp_decision import PspDecision
from psp import signatures
from psp.base import CreatePaymentRequest, CreatePayoutRequest
from psp.http_connector import (
    HttpPspConnector,
    SignedWebhookVerifier,
    mapped,
    opt_str,
    req_obj,
    req_str,
)

NAME = "crypto"
METHODS = frozenset({"crypto"})
PAYOUT_METHODS = frozenset({"crypto"})
CONFIRMATIONS_REQUIRED = 3

DEPOSIT_STATUS_WORDS = {
    "awaiting_payment": "pending",
    "pending": "authorized",
    "confirmed": "captured",
    "failed": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}
WITHDRAWAL_STATUS_WORDS = {"processing": "pending", "confirmed": "paid", "failed": "failed", "cancelled": "cancelled"}
_TYPES = {"deposit": "payment", "withdrawal": "payout"}

ERROR_TABLE: dict[str, PspDecision] = {
    "address_screening_failed": PspDecision.HARD_DECLINE,
    "payout_declined": PspDecision.HARD_DECLINE,
    "node_unavailable": PspDecision.FAILOVER,
    "rate_limit": PspDecision.RETRY,
    "psp_unavailable": PspDecision.RETRY,
    "psp_internal_error": PspDecision.RETRY,
}

_MINOR_RE = re.compile(r"[1-9][0-9]{0,15}")


def minor_string(value: Any, name: str = "amount") -> int:
    """A decimal string of minor units ("5000"): ASCII digits, no sign or leading zero, positive, bounded."""
    if not isinstance(value, str) or not _MINOR_RE.fullmatch(value) or int(value) > MAX_MINOR_UNITS:
        raise ValueError(f"{name} must be a positive decimal string of minor units")
    return int(value)


def _state(body: Mapping[str, Any], family: str) -> dict[str, Any]:
    kind = mapped(_TYPES, body.get("type"), "type")
    if kind != family:
        raise ValueError(f"a {kind} where a {family} was expected")
    words = DEPOSIT_STATUS_WORDS if family == "payment" else WITHDRAWAL_STATUS_WORDS
    currency = req_str(body, "price_currency")
    currency_exponent(currency)
    price = minor_string(body.get("price_amount"), "price_amount")
    received = body.get("received_amount")
    return {
        "merchant_reference": req_str(body, "order_id"),
        "psp_reference": req_str(body, "invoice_id"),
        "status": mapped(words, body.get("state"), "state"),
        "amount_minor": price if received is None else minor_string(received, "received_amount"),
        "currency": currency,
        "failure_code": opt_str(body, "error"),
    }


def _create_body(merchant_reference: str, req: CreatePaymentRequest | CreatePayoutRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": merchant_reference,
        "price_amount": str(req.amount_minor),
        "price_currency": req.currency,
        "pay_method": req.method,
        "buyer_id": req.player_id,
        "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
    }
    if req.country:
        body["buyer_country"] = req.country
    return body


class CryptoConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        return _create_body(req.payment_id, req) | {"success_url": req.return_url}

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req.payout_id, req)

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payment") | {"redirect_url": None}

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payout")

    def error_of(self, body: Any) -> tuple[str | None, str]:
        return body.get("reason"), str(body.get("message", ""))


class CryptoWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signatures.STRIPE_LIKE

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        if body.get("event") != "invoice.updated":
            raise ValueError(f"unknown event {body.get('event')!r}")
        invoice = req_obj(body, "invoice")
        family = mapped(_TYPES, invoice.get("type"), "type")
        state = _state(invoice, family)
        payment_id = state.pop("merchant_reference")
        return state | {
            "family": family,
            "event_id": req_str(body, "notification_id"),
            "payment_id": payment_id,
            "occurred_at": req_str(body, "created"),
        }
