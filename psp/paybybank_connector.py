"""The pay-by-bank PSP (sandbox, open-banking redirect): integer minor units, British status words, and
Standard Webhooks signatures (`webhook-id` / `webhook-timestamp` / `webhook-signature`).

Flow: create answers `redirect` with a bank-selection URL; after the player authorises at the bank the
payment is `authorised` at once, and `settled` later. Their words → ours: redirect → requires_action,
authorised → authorized, settled → captured, rejected → failed.

Request:  {external_id, amount: {value: 5000, currency: "EUR"}, scheme: "bank_transfer",
           user: {id, country?}, redirect_uri (payments), metadata}
Refund:   {external_id, payment_id: <their id of the payment>, amount: {value, currency}, metadata}; a refund is
           pending, then executed (or failed).
Answer:   {id, external_id, object: "payment"|"payout"|"refund", status, amount: {value, currency},
           payment_id? (refunds), redirect?: {url}, status_reason?}
Webhook:  {type: "<object>.<status>", timestamp, data: <answer>}; the event id is the `webhook-id` header.
Error:    {type, title, status, error_code}  (problem+json)

Settlement report (`GET <reports>/settlement?date=`): the account statement's entries, camt.053-flavoured CSV:
`Booking Date` (the report's day), `Value Date`, `Entry Reference` (the line's id), `Credit Debit Indicator`
(CRDT / DBIT), `Amount` (unsigned decimal, the operation's), `Charges` (the fee), `Currency`, `End To End Id` (ours;
NOTPROVIDED when none), `Account Servicer Reference` (the PSP reference), `Bank Transaction Code` (domain-family-
subfamily: PMNT-RCDT-ESCT a payment received, PMNT-ICDT-ESCT a payout, PMNT-ICDT-RRTN a refund). Settles the next
day at the latest (T+1).

It reports no fees (they come with the settlement), and a pay-by-bank payment, pushed by the payer from their own
bank, carries no chargeback right: no disputes.
"""

from __future__ import annotations

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
    CsvLineParser,
    report_currency,
    unsigned_decimal_minor,
)

NAME = "paybybank"
METHODS = frozenset({"bank_transfer"})
PAYOUT_METHODS = frozenset({"bank_transfer"})

PAYMENT_STATUS_WORDS = {
    "initiated": "pending",
    "redirect": "requires_action",
    "authorised": "authorized",
    "settled": "captured",
    "rejected": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}
PAYOUT_STATUS_WORDS = {"processing": "pending", "executed": "paid", "rejected": "failed", "cancelled": "cancelled"}
REFUND_STATUS_WORDS = {"pending": "pending", "executed": "succeeded", "failed": "failed"}
_STATUS_WORDS = {"payment": PAYMENT_STATUS_WORDS, "payout": PAYOUT_STATUS_WORDS, "refund": REFUND_STATUS_WORDS}

# The statement's bank transaction codes → our line kinds; its credit/debit indicator → the gross's sign.
BANK_TRANSACTION_CODES = {"PMNT-RCDT-ESCT": CAPTURE, "PMNT-ICDT-ESCT": PAYOUT, "PMNT-ICDT-RRTN": REFUND}
_INDICATOR_SIGNS = {"CRDT": 1, "DBIT": -1}
_NO_END_TO_END_ID = "NOTPROVIDED"

ERROR_TABLE: dict[str, PspDecision] = {
    "bank_rejected": PspDecision.HARD_DECLINE,
    "account_closed": PspDecision.HARD_DECLINE,
    "payout_declined": PspDecision.HARD_DECLINE,
    "consent_required": PspDecision.STEP_UP,  # the bank wants the player to re-authorise (SCA)
    "bank_unavailable": PspDecision.FAILOVER,
    "rate_limit_exceeded": PspDecision.RETRY,
    "psp_unavailable": PspDecision.RETRY,
    "psp_internal_error": PspDecision.RETRY,
}


def minor_amount(value: Any) -> int:
    """An integer amount in minor units; booleans, floats and strings are refused."""
    if type(value) is not int or not 0 < value <= MAX_MINOR_UNITS:
        raise ValueError("amount.value must be a positive integer of minor units")
    return value


def _state(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    found = body.get("object")
    if found != kind:
        raise ValueError(f"a {found!r} object where a {kind} was expected")
    words = _STATUS_WORDS[kind]
    amount = req_obj(body, "amount")
    currency = req_str(amount, "currency")
    currency_exponent(currency)  # MoneyError (a ValueError) when unsupported
    return {
        "merchant_reference": req_str(body, "external_id"),
        "psp_reference": req_str(body, "id"),
        "status": mapped(words, body.get("status")),
        "amount_minor": minor_amount(amount.get("value")),
        "currency": currency,
        "failure_code": opt_str(body, "status_reason"),
        "fee_minor": None,
    }


def _create_body(merchant_reference: str, req: CreatePaymentRequest | CreatePayoutRequest) -> dict[str, Any]:
    user: dict[str, Any] = {"id": req.player_id}
    if req.country:
        user["country"] = req.country
    return {
        "external_id": merchant_reference,
        "amount": {"value": req.amount_minor, "currency": req.currency},
        "scheme": req.method,
        "user": user,
        "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
    }


@dataclass
class StatementParser(CsvLineParser):
    COLUMNS = ("Booking Date", "Entry Reference", "Credit Debit Indicator", "Amount", "Charges", "Currency",
               "End To End Id", "Account Servicer Reference", "Bank Transaction Code")

    def row(self, cells: Mapping[str, str]) -> SettlementLine:
        if cells["Booking Date"] != self.day.isoformat():
            raise ValueError(f"an entry booked on {cells['Booking Date']!r} in the statement of {self.day}")
        currency = report_currency(cells["Currency"])
        sign = _INDICATOR_SIGNS.get(cells["Credit Debit Indicator"])
        if sign is None:
            raise ValueError(f"unknown Credit Debit Indicator {cells['Credit Debit Indicator']!r}")
        end_to_end_id = cells["End To End Id"]
        return self.line(
            kind=mapped(BANK_TRANSACTION_CODES, cells["Bank Transaction Code"], "Bank Transaction Code"),
            line_id=cells["Entry Reference"],
            merchant_reference=None if end_to_end_id == _NO_END_TO_END_ID else end_to_end_id,
            psp_reference=cells["Account Servicer Reference"], currency=currency,
            gross_minor=sign * unsigned_decimal_minor(cells["Amount"], currency),
            fee_minor=unsigned_decimal_minor(cells["Charges"], currency),
        )


class PayByBankConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE
    settlement_terms = SettlementTerms(sla_days=1, fee_tolerance_minor=0)

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        return _create_body(req.payment_id, req) | {"redirect_uri": req.return_url}

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req.payout_id, req)

    def refund_body(self, req: CreateRefundRequest) -> dict[str, Any]:
        return {
            "external_id": req.refund_id,
            "payment_id": req.psp_reference,
            "amount": {"value": req.amount_minor, "currency": req.currency},
            "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
        }

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        redirect = body.get("redirect")
        redirect_url = req_str(redirect, "url") if isinstance(redirect, dict) else None
        return _state(body, "payment") | {"redirect_url": redirect_url}

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payout")

    def parse_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        req_str(body, "payment_id")
        return _state(body, "refund")

    def error_of(self, body: Any) -> tuple[str | None, str]:
        return body.get("error_code"), str(body.get("title", ""))

    def settlement_parser(self, day: date) -> StatementParser:
        return StatementParser(self.name, day)


class PayByBankWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signatures.STANDARD_WEBHOOKS

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        if not message_id:
            raise ValueError("no webhook-id")
        kind, _, word = req_str(body, "type").partition(".")
        if kind not in _STATUS_WORDS:
            raise ValueError(f"unknown event type {body['type']!r}")
        data = req_obj(body, "data")
        if data.get("status") != word:
            raise ValueError(f"a {data.get('status')!r} {kind} in a {body['type']!r} event")
        if kind == "refund":
            req_str(data, "payment_id")
        state = _state(data, kind)
        payment_id = state.pop("merchant_reference")
        return state | {
            "kind": kind,
            "event_id": message_id,
            "payment_id": payment_id,
            "occurred_at": req_str(body, "timestamp"),
        }
