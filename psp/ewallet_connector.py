"""The e-wallet PSP (sandbox, settles instantly): camelCase JSON, money objects, upper-case statuses, and its
own webhook signature (HMAC-SHA512 over "<unix ms>\\n<body>", psp/signatures.py `WALLET_HMAC`).

Request:  {merchantReference, amount: {value: "50.00", currency: "EUR"}, paymentMethod: {type: "ewallet"},
           shopperReference, countryCode?, returnUrl (payments), metadata}
Answer:   {id, merchantReference, kind: "PAYMENT"|"PAYOUT", status: "PENDING"|"SUCCEEDED"|…,
           amount: {value, currency}, refusalReason?, action?: {type: "redirect", url}}
Webhook:  {notificationId, eventType: "PAYMENT_STATUS"|"PAYOUT_STATUS", eventDate, resource: <answer>}
Error:    {errorCode, message, httpStatus}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payloop.money import to_decimal_string, to_minor_units
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
_KINDS = {"PAYMENT": "payment", "PAYOUT": "payout"}
_EVENT_TYPES = {"PAYMENT_STATUS": "payment", "PAYOUT_STATUS": "payout"}

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


def _state(body: Mapping[str, Any], family: str) -> dict[str, Any]:
    kind = mapped(_KINDS, body.get("kind"), "kind")
    if kind != family:
        raise ValueError(f"a {kind} where a {family} was expected")
    words = PAYMENT_STATUS_WORDS if family == "payment" else PAYOUT_STATUS_WORDS
    amount = req_obj(body, "amount")
    currency = req_str(amount, "currency")
    state = {
        "merchant_reference": req_str(body, "merchantReference"),
        "psp_reference": req_str(body, "id"),
        "status": mapped(words, body.get("status")),
        "amount_minor": to_minor_units(req_str(amount, "value"), currency),
        "currency": currency,
        "failure_code": opt_str(body, "refusalReason"),
    }
    return state


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


class EwalletConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        return _create_body(req.payment_id, req) | {"returnUrl": req.return_url}

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req.payout_id, req)

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        redirect_url = req_str(action, "url") if isinstance(action, dict) else None
        return _state(body, "payment") | {"redirect_url": redirect_url}

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body, "payout")

    def error_of(self, body: Any) -> tuple[str | None, str]:
        return body.get("errorCode"), str(body.get("message", ""))


class EwalletWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signatures.WALLET_HMAC

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        family = mapped(_EVENT_TYPES, body.get("eventType"), "eventType")
        state = _state(req_obj(body, "resource"), family)
        payment_id = state.pop("merchant_reference")
        return state | {
            "family": family,
            "event_id": req_str(body, "notificationId"),
            "payment_id": payment_id,
            "occurred_at": req_str(body, "eventDate"),
        }
