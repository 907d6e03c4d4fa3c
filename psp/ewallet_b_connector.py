"""The second e-wallet PSP, `ewallet_b` (sandbox, settles instantly): short snake_case JSON, operations with states,
and HTTP Signatures over a canonical header set (psp/signature_schemes.py `HTTP_SIGNATURE`).

Request:  {txn_ref, value: "50.00", ccy: "EUR", wallet: "ewallet", payer: {account_ref, country?} (payments) or
           payee (payouts), return_link (payments), extras}
Refund:   {txn_ref, original_txn_id: <the payment's txn_id>, value, ccy, extras}
Answer:   {txn_id, txn_ref, op: "debit"|"credit"|"reversal"|"claim", state, value, ccy, original_txn_id? (refunds and
           claims), decline_reason?, approval_link?, charge? (the fee, once completed), claim_reason? (claims)}
States:   debit open → pending, approval_pending → requires_action, approved → authorized, completed → captured,
           declined → failed, voided → cancelled, timed_out → expired; credit and reversal open / completed /
           declined (/ voided); a claim (dispute) claim_open → opened, claim_rejected → won, claim_accepted → lost.
Webhook:  {notification: {id, topic: "<op>.<state>", sent_at}, txn: <answer>}; the id is also the signed
           `X-EWB-Event-Id` header, and the two must agree.
Error:    {result: "ERROR", errors: [{code, text}]}

Settlement report (`GET <reports>/settlement?date=`): tab-separated, `line_ref` (the line's id), `booked_on`,
`txn_id` (the PSP reference), `txn_ref` (ours, or empty), `op` (debit, credit, reversal, claim, claim_reversal,
claim_fee), `ccy`, `direction` (IN / OUT) with the unsigned `amount`, `charge` (the fee), signed `net`. Settles the
next day at the latest (T+1).
"""

from __future__ import annotations

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
from psp import signature_schemes
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

NAME = "ewallet_b"
METHODS = frozenset({"ewallet"})
PAYOUT_METHODS = frozenset({"ewallet"})

# Their operations → our record kinds, and their states → ours per kind.
OPERATIONS = {"debit": "payment", "credit": "payout", "reversal": "refund", "claim": "dispute"}
STATES = {
    "payment": {
        "open": "pending", "approval_pending": "requires_action", "approved": "authorized", "completed": "captured",
        "declined": "failed", "voided": "cancelled", "timed_out": "expired",
    },
    "payout": {"open": "pending", "completed": "paid", "declined": "failed", "voided": "cancelled"},
    "refund": {"open": "pending", "completed": "succeeded", "declined": "failed"},
    "dispute": {"claim_open": "opened", "claim_rejected": "won", "claim_accepted": "lost"},
}
# The settlement report's operations → our line kinds; its direction → the gross's sign.
REPORT_OPERATIONS = {
    "debit": CAPTURE, "credit": PAYOUT, "reversal": REFUND, "claim": CHARGEBACK,
    "claim_reversal": CHARGEBACK_REVERSAL, "claim_fee": CHARGEBACK_FEE,
}
_DIRECTION_SIGNS = {"IN": 1, "OUT": -1}

ERROR_TABLE: dict[str, PspDecision] = {
    "funds_unavailable": PspDecision.HARD_DECLINE,
    "wallet_suspended": PspDecision.HARD_DECLINE,
    "payout_declined": PspDecision.HARD_DECLINE,
    "strong_auth_needed": PspDecision.STEP_UP,
    "wallet_network_down": PspDecision.FAILOVER,
    "throttled": PspDecision.RETRY,
    "psp_unavailable": PspDecision.RETRY,
    "psp_internal_error": PspDecision.RETRY,
}


def _state(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    found = mapped(OPERATIONS, body.get("op"), "op")
    if found != kind:
        raise ValueError(f"a {found} where a {kind} was expected")
    currency = req_str(body, "ccy")
    charge = body.get("charge")
    return {
        "merchant_reference": req_str(body, "txn_ref"),
        "psp_reference": req_str(body, "txn_id"),
        "status": mapped(STATES[kind], body.get("state"), "state"),
        "amount_minor": to_minor_units(req_str(body, "value"), currency),
        "currency": currency,
        "failure_code": opt_str(body, "decline_reason"),
        "fee_minor": None if charge is None else decimal_fee_minor(charge, currency),
    }


def _create_body(
    req: CreatePaymentRequest | CreatePayoutRequest, merchant_reference: str, party: str
) -> dict[str, Any]:
    account: dict[str, Any] = {"account_ref": req.player_id}
    if req.country:
        account["country"] = req.country
    return {
        "txn_ref": merchant_reference,
        "value": to_decimal_string(req.amount_minor, req.currency),
        "ccy": req.currency,
        "wallet": req.method,
        party: account,
        "extras": {"sandbox_scenario": req.scenario} if req.scenario else {},
    }


@dataclass
class WalletSettlementParser(CsvLineParser):
    COLUMNS = ("line_ref", "txn_id", "txn_ref", "op", "ccy", "direction", "amount", "charge", "net")
    DELIMITER = "\t"

    def row(self, cells: Mapping[str, str]) -> SettlementLine:
        currency = report_currency(cells["ccy"])
        sign = _DIRECTION_SIGNS.get(cells["direction"])
        if sign is None:
            raise ValueError(f"unknown direction {cells['direction']!r}")
        gross_minor = sign * unsigned_decimal_minor(cells["amount"], currency)
        fee_minor = unsigned_decimal_minor(cells["charge"], currency)
        checked_net(gross_minor, fee_minor, signed_decimal_minor(cells["net"], currency))
        return self.line(
            kind=mapped(REPORT_OPERATIONS, cells["op"], "op"), line_id=cells["line_ref"],
            merchant_reference=cells["txn_ref"] or None, psp_reference=cells["txn_id"], currency=currency,
            gross_minor=gross_minor, fee_minor=fee_minor,
        )


class EwalletBConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE
    settlement_terms = SettlementTerms(sla_days=1, fee_tolerance_minor=0)

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        return _create_body(req, req.payment_id, "payer") | {"return_link": req.return_url}

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req, req.payout_id, "payee")

    def refund_body(self, req: CreateRefundRequest) -> dict[str, Any]:
        return {
            "txn_ref": req.refund_id,
            "original_txn_id": req.psp_reference,
            "value": to_decimal_string(req.amount_minor, req.currency),
            "ccy": req.currency,
            "extras": {"sandbox_scenario": req.scenario} if req.scenario else {},
        }

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payment") | {"redirect_url": opt_str(body, "approval_link")}

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payout")

    def parse_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        req_str(body, "original_txn_id")
        return _state(body, "refund")

    def error_of(self, body: Any) -> tuple[str | None, str]:
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        return first.get("code"), str(first.get("text", ""))

    def settlement_parser(self, day: date) -> WalletSettlementParser:
        return WalletSettlementParser(self.name, day)


class EwalletBWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signature_schemes.HTTP_SIGNATURE

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        notification = req_obj(body, "notification")
        event_id = req_str(notification, "id")
        if event_id != message_id:
            raise ValueError("the notification's id is not the signed X-EWB-Event-Id")
        txn = req_obj(body, "txn")
        kind = mapped(OPERATIONS, txn.get("op"), "op")
        if req_str(notification, "topic") != f"{txn['op']}.{txn.get('state')}":
            raise ValueError("the topic does not name the transaction's operation and state")
        state = _state(txn, kind)
        payment_id = state.pop("merchant_reference")
        event = state | {
            "kind": kind, "event_id": event_id, "payment_id": payment_id,
            "occurred_at": req_str(notification, "sent_at"),
        }
        if kind == "refund":
            req_str(txn, "original_txn_id")
        elif kind == "dispute":
            # About the payment (`original_txn_id`); the claim's own id is the dispute's.
            event |= {"dispute_id": state["psp_reference"], "psp_reference": req_str(txn, "original_txn_id"),
                      "reason_code": req_str(txn, "claim_reason")}
        return event
