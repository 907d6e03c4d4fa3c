"""The e-wallet PSP (sandbox, settles instantly): camelCase JSON, money objects, upper-case statuses, and its
own webhook signature (HMAC-SHA512 over "<unix ms>\\n<body>", psp/signatures.py `WALLET_HMAC`).

Request:  {merchantReference, amount: {value: "50.00", currency: "EUR"}, paymentMethod: {type: "ewallet"},
           shopperReference, countryCode?, returnUrl (payments), metadata}
Refund:   {merchantReference, originalReference: <the payment's id>, amount: {value, currency}, metadata}
Answer:   {id, merchantReference, kind: "PAYMENT"|"PAYOUT"|"REFUND", status: "PENDING"|"SUCCEEDED"|…,
           amount: {value, currency}, originalReference? (refunds), refusalReason?, action?: {type: "redirect", url},
           fee?: {value, currency} (once settled)}
Webhook:  {notificationId, eventType: "PAYMENT_STATUS"|"PAYOUT_STATUS"|"REFUND_STATUS", eventDate,
           resource: <answer>}
Dispute:  {notificationId, eventType, eventDate, resource: {id: <dispute id>, kind: "DISPUTE", merchantReference:
           <our payment id>, originalReference: <the payment's id>, amount, reasonCode, fee? (lost)}}, with Adyen's
           chargeback event codes as the eventType: NOTIFICATION_OF_CHARGEBACK (opened), CHARGEBACK_REVERSED (won),
           SECOND_CHARGEBACK (lost for good); the resource has no status of its own.
Error:    {errorCode, message, httpStatus}

Settlement report (`GET <reports>/settlement?date=`): a balance-transactions CSV, Stripe-like: `id` (the line's,
`txn_…`), `created_utc`, `available_on_utc`, `currency` (lower case), signed decimal `gross` and `net`, `fee`,
`reporting_category` (charge, refund, payout, dispute, dispute_reversal, fee: a lost dispute's), `source_id` (the
PSP reference; a dispute's id for the dispute categories), `payment_metadata[merchant_reference]` (ours, or empty).
Settles the next day at the latest (T+1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from payloop.money import to_decimal_string, to_minor_units
from payloop.psp_decision import PspDecision
from payloop.settlement import (
    CAPTURE,
    CHARGEBACK,
    CHARGEBACK_FEE,
    CHARGEBACK_REVERSAL,
    PAYOUT,
    REFUND,
    SettlementLine,
    SettlementTerms,
)
from psp import signatures
from psp.base import CreatePaymentRequest, CreatePayoutRequest, CreateRefundRequest
from psp.http_connector import (
    HttpPspConnector,
    SignedWebhookVerifier,
    decimal_fee_minor,
    mapped,
    opt_str,
    req_obj,
    req_str,
)
from psp.settlement_parsing import (
    CsvLineParser,
    checked_net,
    report_currency,
    signed_decimal_minor,
    unsigned_decimal_minor,
)

NAME = "ewallet"
METHODS = frozenset({"ewallet"})
PAYOUT_METHODS = frozenset({"ewallet"})

# Their status words → ours, per resource kind.
PAYMENT_STATUS_WORDS = {
    "PENDING": "pending",
    "ACTION_REQUIRED": "requires_action",
    "AUTHORIZED": "authorized",
    "SUCCEEDED": "captured",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}
PAYOUT_STATUS_WORDS = {"PENDING": "pending", "SUCCEEDED": "paid", "FAILED": "failed", "CANCELLED": "cancelled"}
REFUND_STATUS_WORDS = {"PENDING": "pending", "SUCCEEDED": "succeeded", "FAILED": "failed"}
_STATUS_WORDS = {"payment": PAYMENT_STATUS_WORDS, "payout": PAYOUT_STATUS_WORDS, "refund": REFUND_STATUS_WORDS}
_KINDS = {"PAYMENT": "payment", "PAYOUT": "payout", "REFUND": "refund", "DISPUTE": "dispute"}
_EVENT_TYPES = {"PAYMENT_STATUS": "payment", "PAYOUT_STATUS": "payout", "REFUND_STATUS": "refund"}
# Adyen's chargeback event codes → the dispute's status.
CHARGEBACK_EVENT_CODES = {
    "NOTIFICATION_OF_CHARGEBACK": "opened", "CHARGEBACK_REVERSED": "won", "SECOND_CHARGEBACK": "lost",
}

# The settlement report's reporting categories → our line kinds.
REPORTING_CATEGORIES = {
    "charge": CAPTURE, "refund": REFUND, "payout": PAYOUT, "dispute": CHARGEBACK,
    "dispute_reversal": CHARGEBACK_REVERSAL, "fee": CHARGEBACK_FEE,
}
_LOWER_CURRENCY = re.compile(r"[a-z]{3}")

ERROR_TABLE: dict[str, PspDecision] = {
    "insufficient_funds": PspDecision.HARD_DECLINE,
    "account_blocked": PspDecision.HARD_DECLINE,
    "account_closed": PspDecision.HARD_DECLINE,
    "payout_declined": PspDecision.HARD_DECLINE,
    "sca_required": PspDecision.STEP_UP,
    "wallet_backend_unavailable": PspDecision.FAILOVER,
    "too_many_requests": PspDecision.RETRY,
    "psp_unavailable": PspDecision.RETRY,
    "psp_internal_error": PspDecision.RETRY,
}


def money(minor: int, currency: str) -> dict[str, str]:
    return {"value": to_decimal_string(minor, currency), "currency": currency}


def _state(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A resource of `kind`; a dispute's has no status (its event code is its stage)."""
    found = mapped(_KINDS, body.get("kind"), "kind")
    if found != kind:
        raise ValueError(f"a {found} where a {kind} was expected")
    amount = req_obj(body, "amount")
    currency = req_str(amount, "currency")
    state = {
        "merchant_reference": req_str(body, "merchantReference"),
        "psp_reference": req_str(body, "id"),
        "amount_minor": to_minor_units(req_str(amount, "value"), currency),
        "currency": currency,
        "failure_code": opt_str(body, "refusalReason"),
        "fee_minor": _fee_minor(body, currency),
    }
    if kind in _STATUS_WORDS:
        state["status"] = mapped(_STATUS_WORDS[kind], body.get("status"))
    return state


def _fee_minor(body: Mapping[str, Any], currency: str) -> int | None:
    if body.get("fee") is None:
        return None
    fee = req_obj(body, "fee")
    if fee.get("currency") != currency:
        raise ValueError("the fee is not in the operation's currency")
    return decimal_fee_minor(fee.get("value"), currency)


def _create_body(merchant_reference: str, req: CreatePaymentRequest | CreatePayoutRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchantReference": merchant_reference,
        "amount": money(req.amount_minor, req.currency),
        "paymentMethod": {"type": req.method},
        "shopperReference": req.player_id,
        "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
    }
    if req.country:
        body["countryCode"] = req.country
    return body


@dataclass
class BalanceTransactionsParser(CsvLineParser):
    COLUMNS = ("id", "currency", "gross", "fee", "net", "reporting_category", "source_id",
               "payment_metadata[merchant_reference]")

    def row(self, cells: Mapping[str, str]) -> SettlementLine:
        if not _LOWER_CURRENCY.fullmatch(cells["currency"]):
            raise ValueError(f"currency {cells['currency']!r} is not a lower-case ISO code")
        currency = report_currency(cells["currency"].upper())
        gross_minor = signed_decimal_minor(cells["gross"], currency)
        fee_minor = unsigned_decimal_minor(cells["fee"], currency)
        checked_net(gross_minor, fee_minor, signed_decimal_minor(cells["net"], currency))
        return self.line(
            kind=mapped(REPORTING_CATEGORIES, cells["reporting_category"], "reporting_category"),
            line_id=cells["id"], merchant_reference=cells["payment_metadata[merchant_reference]"] or None,
            psp_reference=cells["source_id"], currency=currency, gross_minor=gross_minor, fee_minor=fee_minor,
        )


class EwalletConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE
    settlement_terms = SettlementTerms(sla_days=1, fee_tolerance_minor=0)

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        return _create_body(req.payment_id, req) | {"returnUrl": req.return_url}

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req.payout_id, req)

    def refund_body(self, req: CreateRefundRequest) -> dict[str, Any]:
        return {
            "merchantReference": req.refund_id,
            "originalReference": req.psp_reference,
            "amount": money(req.amount_minor, req.currency),
            "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
        }

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        redirect_url = req_str(action, "url") if isinstance(action, dict) else None
        return _state(body, "payment") | {"redirect_url": redirect_url}

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payout")

    def parse_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "refund")

    def error_of(self, body: Any) -> tuple[str | None, str]:
        return body.get("errorCode"), str(body.get("message", ""))

    def settlement_parser(self, day: date) -> BalanceTransactionsParser:
        return BalanceTransactionsParser(self.name, day)


class EwalletWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signatures.WALLET_HMAC

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        event_type = body.get("eventType")
        kind = "dispute" if event_type in CHARGEBACK_EVENT_CODES else mapped(_EVENT_TYPES, event_type, "eventType")
        resource = req_obj(body, "resource")
        state = _state(resource, kind)
        payment_id = state.pop("merchant_reference")
        event = state | {
            "kind": kind,
            "event_id": req_str(body, "notificationId"),
            "payment_id": payment_id,
            "occurred_at": req_str(body, "eventDate"),
        }
        if kind == "refund":
            req_str(resource, "originalReference")
        elif kind == "dispute":
            # About the payment (`originalReference`); the resource's own id is the dispute's.
            event |= {"status": CHARGEBACK_EVENT_CODES[event_type], "dispute_id": state["psp_reference"],
                      "psp_reference": req_str(resource, "originalReference"),
                      "reason_code": req_str(resource, "reasonCode")}
        return event
