"""Activities of the dispute workflow: the ledger's side of a chargeback (hold on opened, post or release on the
outcome, the chargeback fee). Idempotent: every posting's id derives from the PSP and its dispute id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fees import count_fee, fee_minor
from events.outbox import emit_dispute
from ledger import Ledger
from ledger.disputes import DisputeRefused, open_dispute, resolve_dispute
from ledger.payments import payment_facts
from psp.routing import RoutingConfig
from workflows.types import ActivityName, DisputeOpened, ErrorType, OpenDisputeInput, ResolveDisputeInput


class DisputeActivities:
    def __init__(self, ledger: Ledger, routing: RoutingConfig,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.ledger = ledger
        self.routing = routing
        self.clock = clock

    def all(self) -> list[Callable]:
        return [self.open_dispute, self.resolve_dispute]

    @activity.defn(name=ActivityName.OPEN_DISPUTE)
    async def open_dispute(self, input: OpenDisputeInput) -> DisputeOpened:
        try:
            record = await open_dispute(
                self.ledger, psp=input.psp, dispute_id=input.dispute_id, payment_id=input.payment_id,
                amount_minor=input.amount_minor, currency=input.currency, reason_code=input.reason_code,
                now=self.clock(), on_status=emit_dispute,
            )
        except DisputeRefused as err:
            raise ApplicationError(str(err), err.code, type=ErrorType.DISPUTE_REFUSED, non_retryable=True) from err
        facts = await payment_facts(self.ledger.engine, input.payment_id)
        return DisputeOpened(record.player_id, facts.method if facts else "", record.held_minor,
                             record.shortfall_minor)

    @activity.defn(name=ActivityName.RESOLVE_DISPUTE)
    async def resolve_dispute(self, input: ResolveDisputeInput) -> None:
        fee = 0
        if input.outcome == "lost":
            fee = fee_minor(self.routing, input.psp, "chargeback", input.amount_minor, input.currency, input.fee_minor)
        await resolve_dispute(self.ledger, psp=input.psp, dispute_id=input.dispute_id, outcome=input.outcome,
                              fee_minor=fee, method=input.method, now=self.clock(), on_status=emit_dispute)
        count_fee(input.psp, "chargeback", input.currency, fee)
