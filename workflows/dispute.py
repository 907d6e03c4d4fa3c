"""Dispute workflow (`dispute-<psp>-<dispute_id>`): a chargeback raised by a PSP on a captured deposit.

Started by the first verified event of the dispute (signal-with-start from the webhook route). On `opened` the
disputed amount is held from the player's available balance (what is not there becomes a house receivable: a
player's balance never goes below zero), ops are alerted and the player's chargeback history grows (the disputes
table, which the risk engine reads). On `lost` the money goes to house:chargebacks with the PSP's chargeback fee;
on `won` it is released. Only verified events (read back from the webhook inbox) move money.
Deterministic: all I/O is in activities called by name.
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import metrics
from workflows.common import (
    activity_cause, error_code, error_type, publish_search_attributes, raise_alert, run_through_cancels, set_status,
)
from workflows.psp_step import PspEvents, PspSignals
from workflows.retry_policies import DATABASE_STEP_TIMEOUT, UNTIL_DONE
from workflows.types import (
    ActivityName, DisputeInput, DisputeOpened, DisputeState, DisputeView, ErrorType, OpenDisputeInput, PspEvent,
    ResolveDisputeInput,
)

_LEDGER_STEP = dict(start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE)
_RESOLUTIONS = frozenset({DisputeState.WON, DisputeState.LOST})


@workflow.defn
class DisputeWorkflow(PspSignals):
    @staticmethod
    def workflow_id(psp: str, dispute_id: str) -> str:
        return f"dispute-{psp}-{dispute_id}"

    @workflow.init
    def __init__(self, input: DisputeInput) -> None:
        self._input = input
        now = workflow.now().isoformat()
        self._state = DisputeView(psp=input.psp, dispute_id=input.dispute_id, payment_id=input.payment_id,
                                  status=DisputeState.OPENED, created_at=now, updated_at=now)
        # Evidence is about our payment (merchant reference) and of kind "dispute"; this dispute's own id is
        # checked on each event below, since one payment can be disputed more than once.
        self._psp_events = PspEvents(input.payment_id, "dispute", "dispute", frozenset(_RESOLUTIONS),
                                     on_event=self._on_event)
        self._taken: set[str] = set()  # event ids already acted on

    @workflow.query
    def status(self) -> DisputeView:
        return self._state

    @workflow.run
    async def run(self, input: DisputeInput) -> DisputeView:
        # The disputed money is held once opened: a cancel must not leave it so (see run_through_cancels).
        return await run_through_cancels(self._dispute(input), f"dispute {input.psp}/{input.dispute_id}")

    async def _dispute(self, input: DisputeInput) -> DisputeView:
        s = self._state
        publish_search_attributes(s)
        first = await self._next_event(lambda event: True)  # normally `opened`; a resolution may overtake it
        s.amount_minor, s.currency, s.reason_code = first.amount_minor, first.currency, first.reason_code
        try:
            opened = await workflow.execute_local_activity(ActivityName.OPEN_DISPUTE, OpenDisputeInput(
                input.psp, input.dispute_id, input.payment_id, first.amount_minor, first.currency, first.reason_code,
            ), result_type=DisputeOpened, **_LEDGER_STEP)
        except (ActivityError, ApplicationError) as err:  # a local activity: see activity_cause
            if error_type(err) != ErrorType.DISPUTE_REFUSED:
                raise
            # A dispute about no payment of ours (or in another currency): nothing to hold; a person looks.
            workflow.logger.warning("dispute %s not matched: %s", input.dispute_id, activity_cause(err))
            await raise_alert("dispute.unmatched", input.payment_id, self._details(code=error_code(err) or ""))
            set_status(s, DisputeState.UNMATCHED)
            return s
        s.player_id, s.method = opened.player_id, opened.method
        s.held_minor, s.shortfall_minor = opened.held_minor, opened.shortfall_minor
        set_status(s, DisputeState.OPENED)
        metrics.dispute_moved(s.status, input.psp)
        await raise_alert("dispute.opened", input.payment_id, self._details())

        resolution = first if first.status in _RESOLUTIONS else await self._next_event(
            lambda event: event.status in _RESOLUTIONS)
        await workflow.execute_local_activity(ActivityName.RESOLVE_DISPUTE, ResolveDisputeInput(
            input.psp, input.dispute_id, resolution.status, s.method or "", s.amount_minor, s.currency,
            resolution.fee_minor,
        ), **_LEDGER_STEP)
        s.fee_minor = resolution.fee_minor
        set_status(s, resolution.status)
        metrics.dispute_moved(s.status, input.psp)
        if resolution.status == DisputeState.LOST:
            await raise_alert("dispute.lost", input.payment_id, self._details())
        return s

    async def _next_event(self, wanted: Callable[[PspEvent], bool]) -> PspEvent:
        """The next verified event of this dispute that `wanted` accepts, in the order they were verified."""
        while True:
            await self._psp_events.verify_claims()
            for event in self._psp_events.events:
                if self._is_mine(event) and event.event_id not in self._taken and wanted(event):
                    self._taken.add(event.event_id)
                    return event
            await workflow.wait_condition(lambda: bool(self._psp_events.claims))

    def _on_event(self, event: PspEvent) -> None:
        if self._is_mine(event):
            self._state.events.append(event.status)

    def _is_mine(self, event: PspEvent) -> bool:
        return event.psp == self._input.psp and event.dispute_id == self._input.dispute_id

    def _details(self, **extra: str) -> dict[str, str]:
        s = self._state
        return {"psp": s.psp, "dispute_id": s.dispute_id, "amount_minor": str(s.amount_minor),
                "currency": s.currency, "held_minor": str(s.held_minor), "shortfall_minor": str(s.shortfall_minor),
                "reason_code": s.reason_code or "", **extra}
