"""Activities of the refund workflow at the PSP: create the refund there, and ask it how the refund stands.

The create carries our refund id as Idempotency-Key (and merchant reference), so a retried activity returns the
refund the PSP already took, never a second one. Errors reach the workflow as typed ApplicationErrors
(activities/psp_calls.py): a refund over what is left to refund (`refund_exceeds_captured`) or of a payment the PSP
cannot refund (`payment_not_refundable`) is a REJECTED, never retried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from temporalio import activity

from activities.psp_calls import call_and_record, call_psp, connector_for
from psp.base import CreateRefundRequest, PspConnector, PspRefund
from psp.routing.health import HealthStore
from workflows.types import ActivityName, CreatePspRefundInput, PspRef, PspRefundView


class RefundActivities:
    def __init__(self, connectors: Mapping[str, PspConnector], health: HealthStore) -> None:
        self.connectors = connectors
        self.health = health

    def all(self) -> list[Callable]:
        return [self.create_psp_refund, self.get_psp_refund]

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
        return _view(await call_psp(connector_for(self.connectors, ref.psp).get_refund(ref.merchant_reference)))


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
