"""The card PSP (sandbox, 3DS): the original sandbox wire format and the DESIGN.md HMAC webhook signature.

Wire format: flat snake_case JSON; amounts as decimal strings ("50.00") next to `currency`; our statuses as
they are (`pending`, `requires_action`, `captured`, …, a refund's `succeeded`); errors `{"error": {"code",
"message"}}`. A settled operation (captured, paid, refund succeeded, dispute lost) carries its `fee`, a decimal
string in `currency`.
Refunds: `POST /v1/refunds {merchant_reference, payment_reference, amount, currency, metadata}`, the refunded
payment named by its `reference`; answers and webhooks carry `payment_reference` too.
A payment's answers and webhooks carry the card paid with, `card: {country, fingerprint}` (the issuer's country
from the BIN, and a fingerprint of the card number): `PspPayment.bin_country` / `.instrument`. The sandbox pays
with the test card named by merchant metadata `sandbox_card` (`CreatePaymentRequest.sandbox_card`).
Webhooks: `{event_id, type: "<payment|payout|refund|dispute>.<status>", merchant_reference, reference, status,
amount, currency, occurred_at, failure_code?, fee?, card?}` signed with `X-Signature` / `X-Timestamp`
(psp/signatures.py). A dispute event (`dispute.opened|won|lost`) is about our payment (`merchant_reference`):
`reference` is the dispute's id, `payment_reference` the payment's, `reason_code` the scheme's reason.

Settlement report (`GET <reports>/settlement?date=`): an acquirer's "settlement details" CSV, Adyen-like, one row per
settled operation: `Type` (Settled, Refunded, PaidOut, Chargeback, ChargebackReversed, Fee: a lost chargeback's
fee), `Psp Reference`, `Merchant Reference` (ours; empty when unknown), `Modification Reference` (the line's id),
gross and net in `Gross/Net Debit|Credit` columns (decimal strings), the fee in `Commission (NC)`, `Batch Number`.
Settles within two days (T+2).

`SandboxConnector` / `SandboxWebhookVerifier` are the card connector and verifier (`CardConnector`,
`CardWebhookVerifier` name the same classes). The second card acquirer `card_b` (psp/registry.py) uses them too.
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
from psp.settlement_parsing import CsvLineParser, checked_net, report_currency, unsigned_decimal_minor

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


_COUNTRY = re.compile(r"[A-Z]{2}")
_FINGERPRINT = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# The settlement report's `Type` words → our line kinds.
SETTLEMENT_TYPES = {
    "Settled": CAPTURE, "Refunded": REFUND, "PaidOut": PAYOUT, "Chargeback": CHARGEBACK,
    "ChargebackReversed": CHARGEBACK_REVERSAL, "Fee": CHARGEBACK_FEE,
}


def _money(body: Mapping[str, Any]) -> tuple[int, str]:
    currency = req_str(body, "currency")
    return to_minor_units(req_str(body, "amount"), currency), currency


def _state(body: Mapping[str, Any]) -> dict[str, Any]:
    """What answers and webhooks carry alike."""
    amount_minor, currency = _money(body)
    fee = body.get("fee")
    return {
        "merchant_reference": req_str(body, "merchant_reference"),
        "psp_reference": req_str(body, "reference"),
        "status": req_str(body, "status"),
        "amount_minor": amount_minor,
        "currency": currency,
        "failure_code": opt_str(body, "failure_code"),
        "fee_minor": None if fee is None else decimal_fee_minor(fee, currency),
    }


def _card(body: Mapping[str, Any]) -> dict[str, str | None]:
    """The card a payment answer names: `bin_country`, `instrument` (both None when it names none)."""
    if body.get("card") is None:
        return {"bin_country": None, "instrument": None}
    card = req_obj(body, "card")
    country, fingerprint = req_str(card, "country"), req_str(card, "fingerprint")
    if not _COUNTRY.fullmatch(country):
        raise ValueError(f"card.country {country!r} is not a country code")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError("card.fingerprint must be 1 to 128 letters, digits, '_', '-', '.' or ':'")
    return {"bin_country": country, "instrument": fingerprint}


def _create_body(
    merchant_reference: str, req: CreatePaymentRequest | CreatePayoutRequest, metadata: dict[str, str]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_reference": merchant_reference,
        "amount": to_decimal_string(req.amount_minor, req.currency),
        "currency": req.currency,
        "method": req.method,
        "customer_id": req.player_id,
        "metadata": ({"sandbox_scenario": req.scenario} if req.scenario else {}) | metadata,
    }
    if req.country:
        body["country"] = req.country
    return body


def _debit_credit(cells: Mapping[str, str], debit: str, credit: str, currency: str) -> int:
    """An amount from a debit and a credit column, one of them filled (or neither, for zero): credit positive."""
    if cells[debit] and cells[credit]:
        raise ValueError(f"both {debit} and {credit} are filled")
    if cells[credit]:
        return unsigned_decimal_minor(cells[credit], currency)
    return -unsigned_decimal_minor(cells[debit], currency) if cells[debit] else 0


@dataclass
class SettlementDetailsParser(CsvLineParser):
    COLUMNS = ("Psp Reference", "Merchant Reference", "Type", "Modification Reference", "Gross Currency",
               "Gross Debit (GC)", "Gross Credit (GC)", "Net Currency", "Net Debit (NC)", "Net Credit (NC)",
               "Commission (NC)", "Batch Number")

    def row(self, cells: Mapping[str, str]) -> SettlementLine:
        currency = report_currency(cells["Gross Currency"])
        if cells["Net Currency"] != currency:
            raise ValueError("gross and net in different currencies")
        gross_minor = _debit_credit(cells, "Gross Debit (GC)", "Gross Credit (GC)", currency)
        fee_minor = unsigned_decimal_minor(cells["Commission (NC)"] or "0", currency)
        checked_net(gross_minor, fee_minor, _debit_credit(cells, "Net Debit (NC)", "Net Credit (NC)", currency))
        return self.line(
            kind=mapped(SETTLEMENT_TYPES, cells["Type"], "Type"), line_id=cells["Modification Reference"],
            merchant_reference=cells["Merchant Reference"] or None, psp_reference=cells["Psp Reference"],
            currency=currency, gross_minor=gross_minor, fee_minor=fee_minor, batch=cells["Batch Number"] or None,
        )


class SandboxConnector(HttpPspConnector):
    ERROR_TABLE = ERROR_TABLE
    settlement_terms = SettlementTerms(sla_days=2, fee_tolerance_minor=0)

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        card = {"sandbox_card": req.sandbox_card} if req.sandbox_card else {}
        return _create_body(req.payment_id, req, card) | {"return_url": req.return_url}

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        return _create_body(req.payout_id, req, {})

    def refund_body(self, req: CreateRefundRequest) -> dict[str, Any]:
        return {
            "merchant_reference": req.refund_id,
            "payment_reference": req.psp_reference,
            "amount": to_decimal_string(req.amount_minor, req.currency),
            "currency": req.currency,
            "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
        }

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body) | {"redirect_url": opt_str(body, "redirect_url")} | _card(body)

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return _state(body)

    def parse_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        req_str(body, "payment_reference")  # what makes it a refund (not a payment or payout with our id)
        return _state(body)

    def error_of(self, body: Any) -> tuple[str | None, str]:
        error = body["error"]
        return error.get("code"), str(error.get("message", ""))

    def settlement_parser(self, day: date) -> SettlementDetailsParser:
        return SettlementDetailsParser(self.name, day)


class SandboxWebhookVerifier(SignedWebhookVerifier):
    SCHEME = signatures.DESIGN_HMAC

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        kind, _, status = req_str(body, "type").partition(".")
        state = _state(body)
        if state["status"] != status:
            raise ValueError(f"a {state['status']!r} event of type {body['type']!r}")
        payment_id = state.pop("merchant_reference")
        event = state | {
            "kind": kind,
            "event_id": req_str(body, "event_id"),
            "payment_id": payment_id,
            "occurred_at": req_str(body, "occurred_at"),
        }
        if kind == "refund":
            req_str(body, "payment_reference")
        elif kind == "dispute":
            # About the payment: its reference is the payment's, the dispute's own is `dispute_id`.
            event |= {"psp_reference": req_str(body, "payment_reference"), "dispute_id": state["psp_reference"],
                      "reason_code": req_str(body, "reason_code")}
        return event


CardConnector = SandboxConnector
CardWebhookVerifier = SandboxWebhookVerifier
