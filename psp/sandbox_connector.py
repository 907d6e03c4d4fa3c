"""The card PSP (sandbox, 3DS): the original sandbox wire format and the DESIGN.md HMAC webhook signature.

Wire format: flat snake_case JSON; amounts as decimal strings ("50.00") next to `currency`; our statuses as
they are (`pending`, `requires_action`, `captured`, …); errors `{"error": {"code", "message"}}`.
Webhooks: `{event_id, type: "<payment|payout>.<status>", merchant_reference, reference, status, amount,
currency, occurred_at, failure_code?}` signed with `X-Signature` / `X-Timestamp` (psp/signatures.py).

`SandboxConnector` / `SandboxWebhookVerifier` are the card connector and verifier (`CardConnector`,
`CardWebhookVerifier` name the same classes). The second card acquirer `card_b` (psp/registry.py) uses them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payloop.money import to_decimal_string, to_minor_units
from payloop.psp_decision import PspDecision
from psp import signatures
from psp.base import CreatePaymentRequest, CreatePayoutRequest
from psp.http_connector import HttpPspConnector, SignedWebhookVerifier, opt_str, req_str

NAME = "card"
METHODS = frozenset({"card"})
PAYOUT_METHODS = frozenset({"card"})

# The card PSP's error codes (GSM-style), and what to do about each.
ERROR_TABLE: dict[str, PspDecision] = {
    "card_declined": PspDecision.HARD_DECLINE,
    "insufficient_funds": PspDecision.HARD_DECLINE,
    "expired_card": PspDecision.HARD_DECLINE,
    "stolen_card": PspDecision.HARD_DECLINE,
    "fraud_suspected": PspDecision.HARD_DECLINE,
    "payout_declined": PspDecision.HARD_DECLINE,
    "authentication_required": PspDecision.STEP_UP,  # soft decline: retry with 3DS
    "issuer_unavailable": PspDecision.FAILOVER,
    "acquirer_unavailable": PspDecision.FAILOVER,
    "rate_limited": PspDecision.RETRY,
    "processing_error": PspDecision.RETRY,
    "psp_unavailable": PspDecision.RETRY,
    "psp_internal_error": PspDecision.RETRY,
}


def _money(body: Mapping[str, Any]) -> tuple[int, str]:
    currency = req_str(body, "currency")
    return to_minor_units(req_str(body, "amount"), currency), currency


def _state(body: Mapping[str, Any]) -> dict[str, Any]:
    """What answers and webhooks carry alike."""
    amount_minor, currency = _money(body)
    return {
        "merchant_reference": req_str(body, "merchant_reference"),
        "psp_reference": req_str(body, "reference"),
        "status": req_str(body, "status"),
        "amount_minor": amount_minor,
        "currency": currency,
        "failure_code": opt_str(body, "failure_code"),
    }


def _create_body(merchant_reference: str, req: CreatePaymentRequest | CreatePayoutRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_reference": merchant_reference,
        "amount": to_decimal_string(req.amount_minor, req.currency),
        "currency": req.currency,
        "method": req.method,
        "customer_id": req.player_id,
        "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
    }
    if req.country:
        body["country"] = req.country
    return body


class SandboxConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        return _create_body(req.payment_id, req) | {"return_url": req.return_url}

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req.payout_id, req)

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body) | {"redirect_url": opt_str(body, "redirect_url")}

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body)

    def error_of(self, body: Any) -> tuple[str | None, str]:
        error = body["error"]
        return error.get("code"), str(error.get("message", ""))


class SandboxWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signatures.DESIGN_HMAC

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        family = req_str(body, "type").partition(".")[0]
        state = _state(body)
        del state["merchant_reference"]
        return state | {
            "family": family,
            "event_id": req_str(body, "event_id"),
            "payment_id": req_str(body, "merchant_reference"),
            "occurred_at": req_str(body, "occurred_at"),
        }


CardConnector = SandboxConnector
CardWebhookVerifier = SandboxWebhookVerifier
