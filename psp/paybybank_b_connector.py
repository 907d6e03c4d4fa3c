"""The second pay-by-bank PSP, `paybybank_b` (sandbox, open-banking redirect): UK Open Banking's shapes (PascalCase,
a `Data` envelope, decimal strings, its status words) and a detached JWS signature (psp/signature_schemes.py
`DETACHED_JWS`, `X-JWS-Signature`).

Flow: as paybybank's: create answers `AwaitingAuthorisation` with the bank's page in `Links.Authorisation`; once the
player authorises it is `AcceptedSettlementInProcess`, then `AcceptedSettlementCompleted`. Their words → ours:
Pending → pending, AwaitingAuthorisation → requires_action, AcceptedSettlementInProcess → authorized,
AcceptedSettlementCompleted (AcceptedCreditSettlementCompleted for a payout) → captured / paid / succeeded,
Rejected → failed, Cancelled, Expired.

Request:  {Data: {Initiation: {EndToEndIdentification, InstructedAmount: {Amount: "50.00", Currency},
           LocalInstrument: "bank_transfer"}, PsuId, PsuCountry?, RedirectUri (payments)}, SupplementaryData}
Refund:   {Data: {Initiation: {EndToEndIdentification, InstructedAmount}, OriginalResourceId: <the payment's>},
           SupplementaryData}
Answer:   {Data: {ResourceId, EndToEndIdentification, Type: "DomesticPayment"|"DomesticPayout"|"Refund", Status,
           InstructedAmount, OriginalResourceId? (refunds), StatusReason?, Links?: {Authorisation}}}
Webhook:  {Data: {EventNotificationId, EventTime, Resource: <answer's Data>}}
Error:    {Code, Message, Errors: [{ErrorCode, Message}]}

Settlement report (`GET <reports>/settlement?date=`): a continental statement export, semicolon-separated with a
decimal comma: `BookingDate` (the report's day), `ValueDate`, `EntryId` (the line's id), `TransactionType`
(PaymentReceived, PayoutSent, RefundSent), signed `Amount` ("-50,00"), `Fee`, `Currency`, `EndToEndId` (ours, or
empty), `ResourceId` (the PSP reference). Settles the next day at the latest (T+1).

It reports no fees (they come with the settlement), and a pay-by-bank payment carries no chargeback right: no
disputes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from payloop.money import to_decimal_string, to_minor_units
from payloop.psp_decision import PspDecision
from payloop.settlement import CAPTURE, PAYOUT, REFUND, SettlementLine, SettlementTerms
from psp import signature_schemes
from psp.base import CreatePaymentRequest, CreatePayoutRequest, CreateRefundRequest
from psp.http_connector import (
    HttpPspConnector,
    SignedWebhookVerifier,
    mapped,
    opt_str,
    req_obj,
    req_str,
)
from psp.settlement_parsing import CsvLineParser, report_currency, signed_decimal_minor, unsigned_decimal_minor

NAME = "paybybank_b"
METHODS = frozenset({"bank_transfer"})
PAYOUT_METHODS = frozenset({"bank_transfer"})

TYPES = {"DomesticPayment": "payment", "DomesticPayout": "payout", "Refund": "refund"}
STATUS_WORDS = {
    "payment": {
        "Pending": "pending", "AwaitingAuthorisation": "requires_action", "AcceptedSettlementInProcess": "authorized",
        "AcceptedSettlementCompleted": "captured", "Rejected": "failed", "Cancelled": "cancelled",
        "Expired": "expired",
    },
    "payout": {"Pending": "pending", "AcceptedCreditSettlementCompleted": "paid", "Rejected": "failed",
               "Cancelled": "cancelled"},
    "refund": {"Pending": "pending", "AcceptedSettlementCompleted": "succeeded", "Rejected": "failed"},
}
TRANSACTION_TYPES = {"PaymentReceived": CAPTURE, "PayoutSent": PAYOUT, "RefundSent": REFUND}
_DECIMAL_COMMA = re.compile(r"-?[0-9]+(,[0-9]+)?")

ERROR_TABLE: dict[str, PspDecision] = {
    "payment_rejected_by_aspsp": PspDecision.HARD_DECLINE,
    "account_closed": PspDecision.HARD_DECLINE,
    "payout_declined": PspDecision.HARD_DECLINE,
    "reauthorisation_required": PspDecision.STEP_UP,  # the bank wants the player to authorise again (SCA)
    "aspsp_unavailable": PspDecision.FAILOVER,
    "quota_exceeded": PspDecision.RETRY,
    "psp_unavailable": PspDecision.RETRY,
    "psp_internal_error": PspDecision.RETRY,
}


def _state(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    found = mapped(TYPES, data.get("Type"), "Type")
    if found != kind:
        raise ValueError(f"a {found} where a {kind} was expected")
    amount = req_obj(data, "InstructedAmount")
    currency = req_str(amount, "Currency")
    return {
        "merchant_reference": req_str(data, "EndToEndIdentification"),
        "psp_reference": req_str(data, "ResourceId"),
        "status": mapped(STATUS_WORDS[kind], data.get("Status"), "Status"),
        "amount_minor": to_minor_units(req_str(amount, "Amount"), currency),
        "currency": currency,
        "failure_code": opt_str(data, "StatusReason"),
        "fee_minor": None,
    }


def _instructed(minor: int, currency: str) -> dict[str, str]:
    return {"Amount": to_decimal_string(minor, currency), "Currency": currency}


def _create_body(req: CreatePaymentRequest | CreatePayoutRequest, merchant_reference: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "Initiation": {"EndToEndIdentification": merchant_reference,
                       "InstructedAmount": _instructed(req.amount_minor, req.currency), "LocalInstrument": req.method},
        "PsuId": req.player_id,
    }
    if req.country:
        data["PsuCountry"] = req.country
    return {"Data": data, "SupplementaryData": {"sandbox_scenario": req.scenario} if req.scenario else {}}


def decimal_comma_minor(value: str, currency: str) -> int:
    """A signed amount with a decimal comma ("-50,00"); a point or a thousands separator is refused."""
    if not _DECIMAL_COMMA.fullmatch(value):
        raise ValueError(f"{value!r} is not an amount with a decimal comma")
    return signed_decimal_minor(value.replace(",", "."), currency)


@dataclass
class ContinentalStatementParser(CsvLineParser):
    COLUMNS = ("BookingDate", "EntryId", "TransactionType", "Amount", "Fee", "Currency", "EndToEndId", "ResourceId")
    DELIMITER = ";"

    def row(self, cells: Mapping[str, str]) -> SettlementLine:
        if cells["BookingDate"] != self.day.isoformat():
            raise ValueError(f"an entry booked on {cells['BookingDate']!r} in the statement of {self.day}")
        currency = report_currency(cells["Currency"])
        fee_minor = decimal_comma_minor(cells["Fee"], currency)
        if fee_minor < 0:
            raise ValueError("a negative fee")
        return self.line(
            kind=mapped(TRANSACTION_TYPES, cells["TransactionType"], "TransactionType"), line_id=cells["EntryId"],
            merchant_reference=cells["EndToEndId"] or None, psp_reference=cells["ResourceId"], currency=currency,
            gross_minor=decimal_comma_minor(cells["Amount"], currency), fee_minor=fee_minor,
        )


class PayByBankBConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE
    settlement_terms = SettlementTerms(sla_days=1, fee_tolerance_minor=0)

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        body = _create_body(req, req.payment_id)
        body["Data"]["RedirectUri"] = req.return_url
        return body

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req, req.payout_id)

    def refund_body(self, req: CreateRefundRequest) -> dict[str, Any]:
        return {
            "Data": {
                "Initiation": {"EndToEndIdentification": req.refund_id,
                               "InstructedAmount": _instructed(req.amount_minor, req.currency)},
                "OriginalResourceId": req.psp_reference,
            },
            "SupplementaryData": {"sandbox_scenario": req.scenario} if req.scenario else {},
        }

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        data = req_obj(body, "Data")
        links = data.get("Links")
        redirect_url = req_str(links, "Authorisation") if isinstance(links, dict) else None
        return _state(data, "payment") | {"redirect_url": redirect_url}

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(req_obj(body, "Data"), "payout")

    def parse_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        data = req_obj(body, "Data")
        req_str(data, "OriginalResourceId")
        return _state(data, "refund")

    def error_of(self, body: Any) -> tuple[str | None, str]:
        errors = body.get("Errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        return first.get("ErrorCode"), str(first.get("Message", body.get("Message", "")))

    def settlement_parser(self, day: date) -> ContinentalStatementParser:
        return ContinentalStatementParser(self.name, day)


class PayByBankBWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signature_schemes.DETACHED_JWS

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        data = req_obj(body, "Data")
        resource = req_obj(data, "Resource")
        kind = mapped(TYPES, resource.get("Type"), "Type")
        if kind == "refund":
            req_str(resource, "OriginalResourceId")
        state = _state(resource, kind)
        payment_id = state.pop("merchant_reference")
        return state | {
            "kind": kind,
            "event_id": req_str(data, "EventNotificationId"),
            "payment_id": payment_id,
            "occurred_at": req_str(data, "EventTime"),
        }
