"""A pure-Python model of the money after a payment (credits with fees, refunds, disputes), on top of the ledger
state machine's model of accounts and transfers (tests/ledger/test_ledger_stateful.py): it predicts every answer,
refusal and transfer of ledger/payments.py, refunds.py and disputes.py.

Each operation runs on a copy of the state and replaces it only when it succeeds, as the database transaction does;
a refusal is a `Refusal` (the exception's class name and code).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ledger import (
    TransferRequest,
    chargebacks_account,
    disputes_account,
    fee_account,
    player_account,
    player_receivables_account,
    psp_clearing_account,
)

T = TypeVar("T")
POSTED, PENDING, VOIDED = "posted", "pending", "voided"


@dataclass(frozen=True)
class Refusal:
    name: str
    code: str | None


class Refused(Exception):
    def __init__(self, name: str, code: str | None = None) -> None:
        self.refusal = Refusal(name, code)


@dataclass
class MPayment:
    player: str
    currency: str
    psp: str
    psp_reference: str
    captured: int = 0
    credited: int = 0
    credit_id: str | None = None
    refunded: int = 0
    pending: int = 0
    disputed: int = 0
    charged_back: int = 0
    fees: int = 0
    uncredited: int = 0  # of refunded + pending: refunds of the capture's uncredited part

    def money(self) -> tuple[Any, ...]:
        return (self.captured, self.credited, self.credit_id, self.refunded, self.pending, self.disputed,
                self.charged_back, self.fees, self.uncredited)

    def refundable(self) -> int:
        return self.captured - self.refunded - self.pending - self.disputed - self.charged_back

    def reservable(self, funding: str) -> int:
        """The player's refunds take the credited part of the capture, uncredited ones the rest."""
        if funding == "player":
            by_player = self.refunded + self.pending - self.uncredited + self.disputed + self.charged_back
            return min(self.refundable(), self.credited - by_player)
        return min(self.refundable(), self.captured - self.credited - self.uncredited)


@dataclass
class MRefund:
    payment_id: str
    client_id: str
    psp: str
    psp_payment_reference: str
    currency: str
    amount: int
    reason: str | None
    funding: str
    held: int
    shortfall: int
    status: str = "pending"
    fee: int | None = None

    def view(self) -> tuple[Any, ...]:
        return self.status, self.held, self.shortfall, self.fee, self.psp, self.funding, self.amount


@dataclass
class MDispute:
    payment_id: str
    player: str
    currency: str
    amount: int
    held: int
    shortfall: int
    state: str = "opened"
    fee: int | None = None

    def view(self) -> tuple[Any, ...]:
        return self.state, self.held, self.shortfall, self.fee, self.amount


class MoneyModel:
    def __init__(self, ledger_model: Any) -> None:
        self.m = ledger_model  # accounts, transfers, create(req, hold), resolve(id, target), available(account)
        self.payments: dict[str, MPayment] = {}
        self.refunds: dict[str, MRefund] = {}
        self.disputes: dict[tuple[str, str], MDispute] = {}

    def atomically(self, op: Callable[[], T]) -> T | Refusal:
        saved = copy.deepcopy((self.m.accounts, self.m.transfers, self.payments, self.refunds, self.disputes))
        try:
            return op()
        except Refused as refused:
            self.m.accounts, self.m.transfers, self.payments, self.refunds, self.disputes = saved
            return refused.refusal

    def _create(self, req: TransferRequest, hold: bool = False) -> bool:
        """The transfer, or the refusal the ledger gives; True when it was a replay."""
        outcome = self.m.create(req, hold)
        if hasattr(outcome, "exc"):
            raise Refused(type(outcome.exc).__name__, outcome.exc.code)
        return bool(outcome[-1])

    def _resolve(self, transfer_id: str, target: str) -> None:
        outcome = self.m.resolve(transfer_id, target)
        assert not hasattr(outcome, "exc"), outcome

    def _fee(self, payment: MPayment, operation: str, reference: str, psp: str, fee: int | None) -> None:
        if not fee:
            return
        currency = payment.currency
        req = TransferRequest(f"fee:{operation}:{reference}", fee_account(psp, currency),
                              psp_clearing_account(psp, currency), fee, currency, "fee", reference)
        if not self._create(req):
            payment.fees += fee

    # ---- payments ------------------------------------------------------------------------------------------------

    def record(self, payment_id: str, player: str, currency: str, psp: str) -> None:
        self.payments.setdefault(payment_id, MPayment(player, currency, psp, f"ref-{payment_id}"))

    def capture(self, payment_id: str, player: str | None, psp: str, currency: str, captured: int, credit: int,
                fee: int | None) -> str | None:
        p = self.payments.get(payment_id)
        if p is None:
            raise Refused("PaymentNotFound", "payment_not_found")
        if (p.currency != currency or p.captured not in (0, captured) or p.credited not in (0, credit)
                or (p.captured and p.psp != psp) or (player is not None and p.player != player)):
            raise Refused("CaptureConflict", "capture_conflict")
        p.captured, p.credited, p.psp = captured, credit, psp
        if credit:
            p.credit_id = f"deposit:{payment_id}:credit"
            self._create(TransferRequest(p.credit_id, psp_clearing_account(psp, currency),
                                         player_account(p.player, currency), credit, currency, "deposit",
                                         payment_id))
        self._fee(p, "capture", payment_id, psp, fee)
        return p.credit_id if credit else None

    # ---- refunds -------------------------------------------------------------------------------------------------

    def request_refund(self, refund_id: str, asked: dict[str, Any], allow_shortfall: bool) -> tuple[MRefund, bool]:
        if (stored := self.refunds.get(refund_id)) is not None:
            given = {k: v for k, v in asked.items() if v is not None or k not in ("psp", "psp_payment_reference")}
            if any(getattr(stored, _REFUND_FIELDS.get(k, k)) != v for k, v in given.items()):
                raise Refused("RecordConflict", "refund_conflict")
            return stored, True
        p = self.payments.get(asked["payment_id"])
        if p is None:
            raise Refused("RefundRefused", "payment_not_found")
        outside = asked["funding"] == "uncredited" and asked["psp_payment_reference"] is not None and (
            (asked["psp"] or p.psp) != p.psp or asked["currency"] != p.currency)
        if p.currency != asked["currency"] and not outside:
            raise Refused("RefundRefused", "currency_mismatch")
        psp = asked["psp"] or p.psp
        reference = asked["psp_payment_reference"] or (p.psp_reference if psp == p.psp else None)
        if reference is None:
            raise Refused("RefundRefused", "payment_not_refundable")
        funding, amount = asked["funding"], asked["amount_minor"]
        if psp != p.psp and funding != "uncredited":
            raise Refused("InvalidTransfer", "invalid_transfer")
        if psp == p.psp and asked["currency"] == p.currency:
            if p.reservable(funding) < amount or (funding == "player" and p.credited == 0):
                not_refundable = p.captured == 0 or (funding == "player" and p.credited == 0)
                raise Refused("RefundRefused",
                              "payment_not_refundable" if not_refundable else "refund_exceeds_refundable")
            p.pending += amount
            if funding == "uncredited":
                p.uncredited += amount
        held = shortfall = 0
        if funding == "player":
            player, clearing = player_account(p.player, p.currency), psp_clearing_account(psp, p.currency)
            held = min(amount, max(0, self.m.available(player))) if allow_shortfall else amount
            shortfall = amount - held
            if held:
                self._create(TransferRequest(f"refund:{refund_id}:hold", player, clearing, held, p.currency,
                                             "refund", refund_id), hold=True)
            if shortfall:
                self._create(TransferRequest(f"refund:{refund_id}:shortfall", player_receivables_account(p.currency),
                                             clearing, shortfall, p.currency, "refund_shortfall", refund_id),
                             hold=True)
        refund = MRefund(asked["payment_id"], asked["client_id"], psp, reference, asked["currency"], amount,
                         asked["reason"],
                         funding, held, shortfall)
        self.refunds[refund_id] = refund
        return refund, False

    def settle_refund(self, refund_id: str, outcome: str, fee: int | None) -> tuple[MRefund, bool]:
        r = self.refunds.get(refund_id)
        if r is None:
            raise Refused("RecordNotFound", "refund_not_found")
        if r.status not in ("pending", "in_review"):
            if r.status != outcome:
                raise Refused("AlreadyFinal", "refund_already_final")
            if (r.fee or 0) != (fee or 0):
                raise Refused("RecordConflict", "refund_conflict")
            return r, True
        r.status, r.fee = outcome, fee
        p = self.payments[r.payment_id]
        if r.psp == p.psp and r.currency == p.currency:
            p.pending -= r.amount
            p.refunded += r.amount if outcome == "succeeded" else 0
            if outcome != "succeeded" and r.funding == "uncredited":
                p.uncredited -= r.amount
        for step, amount in (("hold", r.held), ("shortfall", r.shortfall)):
            if amount:
                self._resolve(f"refund:{refund_id}:{step}", POSTED if outcome == "succeeded" else VOIDED)
        self._fee(p, "refund", refund_id, r.psp, fee)
        return r, False

    def review_refund(self, refund_id: str) -> tuple[MRefund, bool]:
        r = self.refunds.get(refund_id)
        if r is None:
            raise Refused("RecordNotFound", "refund_not_found")
        if r.status == "in_review":
            return r, True
        if r.status != "pending":
            raise Refused("AlreadyFinal", "refund_already_final")
        r.status = "in_review"
        return r, False

    # ---- disputes ------------------------------------------------------------------------------------------------

    def open_dispute(self, psp: str, dispute_id: str, payment_id: str, amount: int,
                     currency: str) -> tuple[MDispute, bool]:
        if (stored := self.disputes.get((psp, dispute_id))) is not None:
            if (stored.payment_id, stored.amount, stored.currency) != (payment_id, amount, currency):
                raise Refused("RecordConflict", "dispute_conflict")
            return stored, True
        p = self.payments.get(payment_id)
        if p is None:
            raise Refused("DisputeRefused", "payment_not_found")
        if p.currency != currency:
            raise Refused("DisputeRefused", "currency_mismatch")
        p.disputed += amount
        player = player_account(p.player, currency)
        held = min(amount, max(0, self.m.available(player)))
        d = MDispute(payment_id, p.player, currency, amount, held, amount - held)
        key = f"{psp}:{dispute_id}"
        self._create(self._move(key, "pulled", disputes_account(currency), psp_clearing_account(psp, currency), d,
                                amount))
        if held:
            self._create(self._move(key, "hold", player, chargebacks_account(currency), d, held), hold=True)
        if d.shortfall:
            self._create(self._move(key, "shortfall", player_receivables_account(currency),
                                    chargebacks_account(currency), d, d.shortfall))
        self.disputes[(psp, dispute_id)] = d
        return d, False

    def resolve_dispute(self, psp: str, dispute_id: str, outcome: str, fee: int | None) -> tuple[MDispute, bool]:
        d = self.disputes.get((psp, dispute_id))
        if d is None:
            raise Refused("RecordNotFound", "dispute_not_found")
        if d.state != "opened":
            if d.state != outcome:
                raise Refused("AlreadyFinal", "dispute_already_final")
            if (d.fee or 0) != (fee or 0):
                raise Refused("RecordConflict", "dispute_conflict")
            return d, True
        d.state, d.fee = outcome, fee
        p = self.payments[d.payment_id]
        p.disputed -= d.amount
        key, currency = f"{psp}:{dispute_id}", d.currency
        if d.held:
            self._resolve(f"dispute:{key}:hold", POSTED if outcome == "lost" else VOIDED)
        if outcome == "lost":
            p.charged_back += d.amount
            self._create(self._move(key, "chargeback", chargebacks_account(currency), disputes_account(currency), d,
                                    d.amount))
        else:
            self._create(self._move(key, "returned", psp_clearing_account(psp, currency), disputes_account(currency),
                                    d, d.amount))
            if d.shortfall:
                self._create(self._move(key, "shortfall_reversal", chargebacks_account(currency),
                                        player_receivables_account(currency), d, d.shortfall))
        self._fee(p, "chargeback", key, psp, fee)
        return d, False

    @staticmethod
    def _move(key: str, step: str, debit: str, credit: str, d: MDispute, amount: int) -> TransferRequest:
        return TransferRequest(f"dispute:{key}:{step}", debit, credit, amount, d.currency, f"dispute_{step}", key)


# request_refund's parameter names -> the model's field names
_REFUND_FIELDS = {"amount_minor": "amount"}
