"""Activities of the refund workflow: at the PSP, create the refund and ask it how the refund stands; in the
ledger, reserve it (and hold the player's funds), settle it (post or void, and book the PSP's refund fee), or mark
it in review. Idempotent by refund id.

The create carries our refund id as Idempotency-Key (and merchant reference), so a retried activity returns the
refund the PSP already took, never a second one. Errors reach the workflow as typed ApplicationErrors
(activities/psp_calls.py): a refund over what is left to refund (`refund_exceeds_captured`) or of a payment the PSP
cannot refund (`payment_not_refundable`) is a REJECTED, never retried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fees import count_fee, fee_minor
from activities.psp_calls import call_and_record, call_psp, connector_for
from events.outbox import emit_refund
from ledger import Ledger
from ledger.errors import InsufficientFunds
from ledger.payments import payment_facts
from ledger.refunds import RefundRefused, mark_refund_in_review, request_refund, settle_refund
from psp.base import CreateRefundRequest, PspConnector, PspRefund
from psp.routing import RoutingConfig
from psp.routing.health import HealthStore
from workflows.types import (
    ActivityName, CreatePspRefundInput, ErrorType, PspRef, PspRefundView, RefundInput, RefundInReview,
    ReservedRefund, SettleRefundInput,
)


class RefundActivities:
    def __init__(
        self, ledger: Ledger, connectors: Mapping[str, PspConnector], routing: RoutingConfig, health: HealthStore,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.ledger = ledger
        self.connectors = connectors
        self.routing = routing
        self.health = health
        self.clock = clock

    def all(self) -> list[Callable]:
        return [self.create_psp_refund, self.get_psp_refund, self.request_refund, self.settle_refund,
                self.mark_refund_in_review]

    @activity.defn(name=ActivityName.CREATE_PSP_REFUND)
    async def create_psp_refund(self, input: CreatePspRefundInput) -> PspRefundView:
        connector = connector_for(self.connectors, input.psp)
        request = CreateRefundRequest(
            refund_id=input.refund_id,
            payment_id=input.payment_id,
            psp_reference=input.psp_payment_reference,
            amount_minor=input.amount_minor,
            currency=input.currency,
            scenario=input.sandbox_scenario,
        )
        return _view(await call_and_record(self.health, input.psp, "create_refund",
                                           lambda: connector.create_refund(request)))

    @activity.defn(name=ActivityName.GET_PSP_REFUND)
    async def get_psp_refund(self, ref: PspRef) -> PspRefundView:
        """The refund as the PSP sees it; `ref.merchant_reference` is our refund id. Like the payment and payout
        look-ups, not subject to the PSP's circuit: a refund of unknown fate must always be able to ask."""
        connector = connector_for(self.connectors, ref.psp)
        return _view(await call_psp(ref.psp, "get_refund", connector.get_refund(ref.merchant_reference)))

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
        facts = await payment_facts(self.ledger.engine, input.payment_id)
        return ReservedRefund(record.psp, record.psp_payment_reference, facts.method if facts else "",
                              record.held_minor, record.shortfall_minor)

    @activity.defn(name=ActivityName.SETTLE_REFUND)
    async def settle_refund(self, input: SettleRefundInput) -> None:
        fee = None
        if input.outcome == "succeeded":
            fee = fee_minor(self.routing, input.psp, "refund", input.amount_minor, input.currency, input.fee_minor)
        await settle_refund(self.ledger, input.refund_id, outcome=input.outcome,
                            psp_refund_reference=input.psp_refund_reference, failure_code=input.failure_code,
                            fee_minor=fee, method=input.method, now=self.clock(), on_status=emit_refund)
        count_fee(input.psp, "refund", input.currency, fee or 0)

    @activity.defn(name=ActivityName.MARK_REFUND_IN_REVIEW)
    async def mark_refund_in_review(self, input: RefundInReview) -> None:
        await mark_refund_in_review(self.ledger, input.refund_id, review_reason=input.review_reason, now=self.clock(),
                                    on_status=emit_refund)


def _view(refund: PspRefund) -> PspRefundView:
    return PspRefundView(
        psp=refund.psp,
        psp_reference=refund.psp_reference,
        status=refund.status,
        amount_minor=refund.amount_minor,
        currency=refund.currency,
        failure_code=refund.failure_code,
        fee_minor=refund.fee_minor,
    )
