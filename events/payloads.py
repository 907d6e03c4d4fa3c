"""Which state change is which event, and what its `data` holds: ids, status, the amount as a decimal string with
its currency, method, PSP, failure code or review reason — nothing personal beyond the player id, no card data.

Each draft names its ordering key (deliveries of one key reach an endpoint in order) and its dedupe key (one event
per state change, whoever writes it again)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.disputes import DisputeRecord
from ledger.payments import PaymentRecord
from ledger.payouts import PayoutRecord
from ledger.refunds import RefundRecord
from payloop.money import to_decimal_string

# A deposit's row status → its event type. A deposit that ends without money (declined, refused by the rules,
# expired waiting for KYC, rejected in review and refunded) is payment.failed; `data.status` says which.
PAYMENT_TYPES = {
    "credited": "payment.succeeded",
    "failed": "payment.failed",
    "rejected": "payment.failed",
    "expired": "payment.failed",
    "refunded": "payment.failed",
    "in_review": "payment.in_review",
}
# A payout cancelled before it was sent (by the client, or from the Temporal UI) is payout.cancelled: its money is
# back in the wallet, and the platform shows the player why the withdrawal is gone.
PAYOUT_TYPES = {"paid": "payout.paid", "failed": "payout.failed", "rejected": "payout.failed",
                "cancelled": "payout.cancelled"}
REFUND_TYPES = {"succeeded": "refund.succeeded", "failed": "refund.failed", "in_review": "refund.in_review"}
DISPUTE_TYPES = {"opened": "dispute.opened", "won": "dispute.won", "lost": "dispute.lost"}
KYC_REQUIRED = "player.kyc_required"
NOTIFICATION = "player.notification"
EVENT_TYPES = frozenset({*PAYMENT_TYPES.values(), *PAYOUT_TYPES.values(), *REFUND_TYPES.values(),
                         *DISPUTE_TYPES.values(), KYC_REQUIRED, NOTIFICATION})


@dataclass(frozen=True, slots=True)
class EventDraft:
    type: str
    client_id: str
    ordering_key: str
    dedupe_key: str
    data: dict[str, Any]


def payment_event(record: PaymentRecord) -> EventDraft | None:
    type_ = PAYMENT_TYPES.get(record.status)
    if type_ is None:
        return None
    return EventDraft(type_, record.client_id, record.payment_id, f"{type_}:{record.payment_id}:{record.status}", {
        "payment_id": record.payment_id, "player_id": record.player_id, "status": record.status,
        "amount": to_decimal_string(record.amount_minor, record.currency), "currency": record.currency,
        "method": record.method, "psp": record.psp, "failure_code": record.failure_code,
        "review_reason": record.review_reason,
    })


def payout_event(record: PayoutRecord) -> EventDraft | None:
    type_ = PAYOUT_TYPES.get(record.status)
    if type_ is None:
        return None
    return EventDraft(type_, record.client_id, record.payout_id, f"{type_}:{record.payout_id}:{record.status}", {
        "payout_id": record.payout_id, "player_id": record.player_id, "status": record.status,
        "amount": to_decimal_string(record.amount_minor, record.currency), "currency": record.currency,
        "method": record.method, "psp": record.psp,
    })


def refund_event(record: RefundRecord) -> EventDraft | None:
    type_ = REFUND_TYPES.get(record.status)
    if type_ is None:
        return None
    # Ordered with its payment's events: a refund's outcome never overtakes the deposit's own.
    return EventDraft(type_, record.client_id, record.payment_id, f"{type_}:{record.refund_id}", {
        "refund_id": record.refund_id, "payment_id": record.payment_id, "player_id": record.player_id,
        "status": record.status, "amount": to_decimal_string(record.amount_minor, record.currency),
        "currency": record.currency, "psp": record.psp, "failure_code": record.failure_code,
        "review_reason": record.review_reason,
    })


def dispute_event(record: DisputeRecord, client_id: str) -> EventDraft | None:
    type_ = DISPUTE_TYPES.get(record.state)
    if type_ is None:
        return None
    return EventDraft(type_, client_id, record.payment_id, f"{type_}:{record.key}", {
        "dispute_id": record.dispute_id, "psp": record.psp, "payment_id": record.payment_id,
        "player_id": record.player_id, "status": record.state,
        "amount": to_decimal_string(record.amount_minor, record.currency), "currency": record.currency,
        "reason_code": record.reason_code,
    })


def kyc_required_event(*, client_id: str, player_id: str, subject: str, subject_id: str, reason: str | None
                       ) -> EventDraft:
    """A deposit or payout (`subject`) started waiting for the player's identity check."""
    return EventDraft(KYC_REQUIRED, client_id, subject_id, f"{KYC_REQUIRED}:{subject_id}", {
        "player_id": player_id, f"{subject}_id": subject_id, "reason": reason,
    })


def notification_event(*, client_id: str, player_id: str, kind: str, reference: str, details: dict[str, str]
                       ) -> EventDraft:
    return EventDraft(NOTIFICATION, client_id, reference, f"{NOTIFICATION}:{kind}:{reference}", {
        "player_id": player_id, "kind": kind, "reference": reference, "details": details,
    })
