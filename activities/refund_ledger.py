"""Activities of the refund workflow on the ledger's side: reserve (and hold the player's funds), settle (post or
void, and book the PSP's refund fee), or mark in review. Idempotent by refund id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fees import fee_minor
from ledger import Ledger
from ledger.errors import InsufficientFunds
from ledger.refunds import RefundRefused, mark_refund_in_review, request_refund, settle_refund
from psp.routing import RoutingConfig
from workflows.types import (
    ActivityName, ErrorType, RefundInput, RefundInReview, ReservedRefund, SettleRefundInput,
)


class RefundLedgerActivities:
    def __init__(self, ledger: Ledger, routing: RoutingConfig,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.ledger = ledger
        self.routing = routing
        self.clock = clock

    def all(self) -> list[Callable]:
        return [self.request_refund, self.settle_refund, self.mark_refund_in_review]

    @activity.defn(name=ActivityName.REQUEST_REFUND)
    async def request_refund(self, input: RefundInput) -> ReservedRefund:
        """Reserves the refund (a replay of the API's own reservation when the API made it)."""
        try:
            record = await request_refund(
                self.ledger, refund_id=input.refund_id, payment_id=input.payment_id, client_id=input.client_id,
                amount_minor=input.amount_minor, currency=input.currency, reason=input.reason,
                funding=input.funding, allow_shortfall=input.allow_shortfall, now=self.clock(), psp=input.psp,
                psp_payment_reference=input.psp_payment_reference,
            )
        except RefundRefused as err:
            raise ApplicationError(str(err), err.code, type=ErrorType.REFUND_REFUSED, non_retryable=True) from err
        except InsufficientFunds as err:
            raise ApplicationError(str(err), "insufficient_funds", type=ErrorType.INSUFFICIENT_FUNDS,
                                   non_retryable=True) from err
        return ReservedRefund(record.psp, record.psp_payment_reference, record.method, record.held_minor,
                              record.shortfall_minor)

    @activity.defn(name=ActivityName.SETTLE_REFUND)
    async def settle_refund(self, input: SettleRefundInput) -> None:
        fee = None
        if input.outcome == "succeeded":
            fee = fee_minor(self.routing, input.psp, "refund", input.amount_minor, input.currency, input.fee_minor)
        await settle_refund(self.ledger, input.refund_id, outcome=input.outcome,
                            psp_refund_reference=input.psp_refund_reference, failure_code=input.failure_code,
                            fee_minor=fee, method=input.method, now=self.clock())

    @activity.defn(name=ActivityName.MARK_REFUND_IN_REVIEW)
    async def mark_refund_in_review(self, input: RefundInReview) -> None:
        await mark_refund_in_review(self.ledger, input.refund_id, review_reason=input.review_reason, now=self.clock())
