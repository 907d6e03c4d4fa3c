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
Refund:   {order_id, invoice_id: <the deposit's>, price_amount, price_currency, metadata} → {refund_id, order_id,
           invoice_id, type: "refund", state: "processing"|"confirmed"|"failed", price_amount, price_currency,
           error?}; its webhook: {notification_id, event: "refund.updated", created, refund: <answer>}
Error:    {status: "error", reason, message}

Settlement report (`GET <reports>/settlement?date=`): NDJSON, one settled entry per line: {entry_id (the line's),
type: "deposit"|"withdrawal"|"refund", invoice_id (a deposit's or withdrawal's) or refund_id (a refund's), order_id
(ours, or null), amount (signed), network_fee, net (signed), currency, settled_at}, amounts in minor units as
strings. Settles the next day at the latest (T+1).

It reports no fees (they come with the settlement), and a crypto transfer, sent by the payer from their own wallet,
carries no chargeback right: no disputes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from payloop.money import MAX_MINOR_UNITS, currency_exponent
from payloop.psp_decision import PspDecision
from payloop.settlement import CAPTURE, PAYOUT, REFUND, SettlementLine, SettlementTerms
from psp import signatures
from psp.base import CreatePaymentRequest, CreatePayoutRequest, CreateRefundRequest
from psp.http_connector import (
    HttpPspConnector,
    SignedWebhookVerifier,
    mapped,
    opt_str,
    req_obj,
    req_str,
)
from psp.settlement_parsing import (
    LineParser,
    checked_net,
    report_currency,
    signed_minor_string,
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
REFUND_STATUS_WORDS = {"processing": "pending", "confirmed": "succeeded", "failed": "failed"}
_STATUS_WORDS = {"payment": DEPOSIT_STATUS_WORDS, "payout": WITHDRAWAL_STATUS_WORDS, "refund": REFUND_STATUS_WORDS}
_TYPES = {"deposit": "payment", "withdrawal": "payout", "refund": "refund"}
# Which object each event carries: a refund's own, or an invoice (a deposit or a withdrawal).
_EVENT_SUBJECTS = {"invoice.updated": "invoice", "refund.updated": "refund"}

# The settlement entries' types → our line kinds.
ENTRY_TYPES = {"deposit": CAPTURE, "withdrawal": PAYOUT, "refund": REFUND}

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


def _state(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    found = mapped(_TYPES, body.get("type"), "type")
    if found != kind:
        raise ValueError(f"a {found} where a {kind} was expected")
    currency = req_str(body, "price_currency")
    currency_exponent(currency)
    price = minor_string(body.get("price_amount"), "price_amount")
    # A refund sends back what it says; an invoice may have received more or less than its price.
    received = body.get("received_amount") if kind != "refund" else None
    return {
        "merchant_reference": req_str(body, "order_id"),
        # A refund's own id; a refund also names its invoice (`invoice_id`).
        "psp_reference": req_str(body, "refund_id" if kind == "refund" else "invoice_id"),
        "status": mapped(_STATUS_WORDS[kind], body.get("state"), "state"),
        "amount_minor": price if received is None else minor_string(received, "received_amount"),
        "currency": currency,
        "failure_code": opt_str(body, "error"),
        "fee_minor": None,
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


@dataclass
class SettlementEntriesParser(LineParser):
    def feed(self, text: str) -> SettlementLine:
        entry = json.loads(text)
        if not isinstance(entry, dict):
            raise TypeError("an entry is not a JSON object")
        kind = mapped(ENTRY_TYPES, entry.get("type"), "type")
        currency = report_currency(req_str(entry, "currency"))
        gross_minor = signed_minor_string(entry.get("amount"), "amount")
        fee_minor = signed_minor_string(entry.get("network_fee"), "network_fee")
        checked_net(gross_minor, fee_minor, signed_minor_string(entry.get("net"), "net"))
        return self.line(
            kind=kind, line_id=req_str(entry, "entry_id"), merchant_reference=opt_str(entry, "order_id"),
            psp_reference=req_str(entry, "refund_id" if kind == REFUND else "invoice_id"), currency=currency,
            gross_minor=gross_minor, fee_minor=fee_minor,
        )


class CryptoConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE
    settlement_terms = SettlementTerms(sla_days=1, fee_tolerance_minor=0)

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        return _create_body(req.payment_id, req) | {"success_url": req.return_url}

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req.payout_id, req)

    def refund_body(self, req: CreateRefundRequest) -> dict[str, Any]:
        return {
            "order_id": req.refund_id,
            "invoice_id": req.psp_reference,
            "price_amount": str(req.amount_minor),
            "price_currency": req.currency,
            "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
        }

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payment") | {"redirect_url": None}

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payout")

    def parse_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        req_str(body, "invoice_id")
        return _state(body, "refund")

    def error_of(self, body: Any) -> tuple[str | None, str]:
        return body.get("reason"), str(body.get("message", ""))

    def settlement_parser(self, day: date) -> SettlementEntriesParser:
        return SettlementEntriesParser(self.name, day)


class CryptoWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signatures.STRIPE_LIKE

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        subject = mapped(_EVENT_SUBJECTS, body.get("event"), "event")
        resource = req_obj(body, subject)
        kind = mapped(_TYPES, resource.get("type"), "type")
        if (kind == "refund") != (subject == "refund"):
            raise ValueError(f"a {kind} in a {body['event']!r} event")
        if kind == "refund":
            req_str(resource, "invoice_id")
        state = _state(resource, kind)
        payment_id = state.pop("merchant_reference")
        return state | {
            "kind": kind,
            "event_id": req_str(body, "notification_id"),
            "payment_id": payment_id,
            "occurred_at": req_str(body, "created"),
        }
