"""Refund workflow (`refund-<refund_id>`): reserve, refund at the PSP, then post or release.

The refundable amount is reserved (and the player's funds held) before the PSP is asked, in one database step that
refuses more than was captured; the PSP's verified word then posts the hold (succeeded) or voids it (failed). A
refund cannot be cancelled at a PSP, so when its outcome cannot be learned the money stays held and the refund is
in review until the PSP's word comes (a webhook, or a look-up on a re-check nudge and at growing intervals) or a
person decides (`review`: approve = the PSP made it, posted; reject = it did not, released); a PSP answer that is
not the refund asked for waits for that person.
Deterministic: all I/O is in activities called by name.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import metrics
from workflows.common import (
    activity_cause, error_code, error_type, mismatch, psp_details, publish_search_attributes, raise_alert,
    run_through_cancels, set_status, wait_until,
)
from workflows.psp_step import REFUND_CALLS, Created, Ending, PollSchedule, PspAnswer, PspOutcome, PspSignals, PspStep
from workflows.retry_policies import (
    DATABASE_STEP_TIMEOUT, REFUND_REVIEW_LOOK_UP_FIRST_SECONDS, REFUND_REVIEW_LOOK_UP_MAX_SECONDS, UNTIL_DONE,
)
from workflows.types import (
    ActivityName, AuditEntry, CreatePspRefundInput, ErrorType, RefundInput, RefundInReview, RefundState,
    RefundStatus, ReservedRefund, ReviewDecision, SettleRefundInput, StatusPollPlan,
)

_LEDGER_STEP = dict(start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE)


@workflow.defn
class RefundWorkflow(PspSignals):
    @staticmethod
    def workflow_id(refund_id: str) -> str:
        return f"refund-{refund_id}"

    @workflow.init
    def __init__(self, input: RefundInput) -> None:
        self._input = input
        self._state = RefundState.started(input, workflow.now().isoformat())
        self._psp = PspStep(REFUND_CALLS, input.refund_id)
        self._psp_events = self._psp.events
        self._review: ReviewDecision | None = None
        self._review_update_id = ""

    @workflow.query
    def status(self) -> RefundState:
        return self._state

    @workflow.update
    async def review(self, decision: ReviewDecision) -> RefundState:
        """An ops decision on a refund in review, checked with the PSP's own report: approve posts the held money
        (the PSP made the refund), reject releases it (it did not)."""
        self._review = decision
        self._review_update_id = workflow.current_update_info().id  # type: ignore[union-attr]
        await workflow.wait_condition(lambda: self._state.status in RefundStatus.FINAL)
        return self._state

    @review.validator
    def _validate_review(self, decision: ReviewDecision) -> None:
        if self._state.status != RefundStatus.IN_REVIEW or self._review is not None:
            raise ApplicationError(f"the refund is {self._state.status}, not waiting for review", type="NotInReview")
        if decision.decision not in ("approve", "reject") or decision.amount_minor is not None:
            raise ApplicationError("decision must be approve or reject, without an amount", type="InvalidDecision")

    @workflow.run
    async def run(self, input: RefundInput) -> RefundState:
        # Money is held, and the PSP may have the refund: a cancel (Temporal UI, CLI, a cancelled parent) must not
        # stop the workflow half-way, leaving the hold unresolved. It is logged and ignored.
        return await run_through_cancels(self._refund(input), f"refund {input.refund_id}")

    async def _refund(self, input: RefundInput) -> RefundState:
        s = self._state
        publish_search_attributes(s)
        try:
            reserved = await workflow.execute_local_activity(
                ActivityName.REQUEST_REFUND, input, result_type=ReservedRefund, **_LEDGER_STEP)
        except (ActivityError, ApplicationError) as err:  # a local activity: see activity_cause
            if error_type(err) not in (ErrorType.REFUND_REFUSED, ErrorType.INSUFFICIENT_FUNDS):
                raise
            # Nothing was reserved or held: the refund ends before reaching the PSP.
            workflow.logger.warning("refund %s refused: %s", input.refund_id, activity_cause(err))
            s.failure_code = error_code(err) if error_type(err) == ErrorType.REFUND_REFUSED else "insufficient_funds"
            set_status(s, RefundStatus.FAILED)
            metrics.refund_ended(s.status, s.psp)
            return s
        s.psp, s.method = reserved.psp, reserved.method
        set_status(s, RefundStatus.PENDING)

        outcome = await self._refund_at_psp(reserved)
        if s.status in RefundStatus.FINAL:  # the PSP refused it outright
            return s
        while outcome.ending is Ending.UNKNOWN:
            # Refunded or not, the PSP cannot say: the money stays held until it can, or a person decides.
            await self._to_review("psp_status_unknown")
            outcome = await self._await_word(reserved.psp)
            if self._review is not None:
                return await self._decided()
        answer = outcome.answer
        assert answer is not None
        if (reason := mismatch(answer, psp_reference=s.psp_reference or answer.psp_reference, currency=s.currency,
                               amount_minor=s.amount_minor)) is not None:
            # Not the refund we asked for: nothing is posted or released until a person decides.
            await raise_alert(f"refund.{reason}", s.refund_id, psp_details(answer))
            await self._to_review(reason)
            await workflow.wait_condition(lambda: self._review is not None)
            return await self._decided()
        return await self._settle(answer.status, answer=answer)

    async def _decided(self) -> RefundState:
        decision = self._review
        assert decision is not None
        await workflow.execute_activity(ActivityName.RECORD_AUDIT, AuditEntry(
            idempotency_key=f"{workflow.info().workflow_id}:review:{self._review_update_id}", actor=decision.reviewer,
            action=f"refund.review.{decision.decision}", subject=f"refund:{self._state.refund_id}",
            details={"review_reason": self._state.review_reason or "",
                     **({"reason": decision.reason} if decision.reason else {})},
            incident_id=decision.incident_id,
        ), start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE)
        if decision.decision == "approve":
            return await self._settle("succeeded")
        return await self._settle("failed", failure_code="review_rejected")

    async def _refund_at_psp(self, reserved: ReservedRefund) -> PspOutcome:
        input, s = self._input, self._state
        result = await self._psp.create(reserved.psp, CreatePspRefundInput(
            psp=reserved.psp, refund_id=input.refund_id, payment_id=input.payment_id,
            psp_payment_reference=reserved.psp_payment_reference, amount_minor=input.amount_minor,
            currency=input.currency, sandbox_scenario=input.sandbox_scenario,
        ))
        if result.created is Created.UNKNOWN or result.maybe_in_flight:
            # A try may still land there (the PSP takes our refund id once): releasing now could refund twice.
            return PspOutcome(Ending.UNKNOWN)
        if result.created is not Created.TAKEN:  # refused, or the PSP confirmed it does not have it
            await self._settle("failed", failure_code=result.code or "psp_refused")
            return PspOutcome(Ending.ANSWERED)
        s.psp_reference = result.view.psp_reference
        if result.view.status in REFUND_CALLS.final_statuses:
            return PspOutcome(Ending.ANSWERED, result.view)
        schedule = PollSchedule.of(StatusPollPlan(), input.status_poll_attempts, input.status_poll_interval_seconds)
        return await self._psp.outcome(reserved.psp, schedule, webhook_timeout_seconds=input.webhook_timeout_seconds)

    async def _await_word(self, psp: str) -> PspOutcome:
        """In review: the PSP's verified final event, or its answer to a look-up — on a re-check nudge, and by
        itself at growing intervals (an hour, doubling up to a day)."""
        interval_seconds = REFUND_REVIEW_LOOK_UP_FIRST_SECONDS
        while True:
            await self._psp.verify_claims()
            if (event := self._psp.events.final(psp)) is not None:
                return PspOutcome(Ending.ANSWERED, event)
            nudged = await wait_until(lambda: bool(self._psp.events.claims) or self._psp.events.recheck_requested
                                      or self._review is not None, interval_seconds)
            if self._review is not None:
                return PspOutcome(Ending.UNKNOWN)  # a person decides
            if self._psp.events.claims:
                continue
            self._psp.events.recheck_requested = False
            if not nudged:
                interval_seconds = min(interval_seconds * 2, REFUND_REVIEW_LOOK_UP_MAX_SECONDS)
            found = await self._psp.look_up(psp)
            if found.view is not None and found.view.status in REFUND_CALLS.final_statuses:
                return PspOutcome(Ending.ANSWERED, found.view)

    async def _to_review(self, reason: str) -> None:
        s = self._state
        if s.status == RefundStatus.IN_REVIEW:
            return
        workflow.logger.warning("refund %s: %s; the money stays held", s.refund_id, reason)
        await raise_alert(f"refund.{reason}", s.refund_id,
                          {"psp": s.psp or "", "amount_minor": str(s.amount_minor), "currency": s.currency})
        await workflow.execute_local_activity(ActivityName.MARK_REFUND_IN_REVIEW,
                                              RefundInReview(s.refund_id, reason), **_LEDGER_STEP)
        s.review_reason = reason
        set_status(s, RefundStatus.IN_REVIEW)

    async def _settle(self, outcome: str, *, answer: PspAnswer | None = None,
                      failure_code: str | None = None) -> RefundState:
        """Posts the held money on a refund the PSP made; releases it on one it refused."""
        s = self._state
        if s.status in RefundStatus.FINAL:
            return s
        succeeded = outcome == "succeeded"
        code = None if succeeded else (failure_code or (answer.failure_code if answer else None) or "psp_failed")
        await workflow.execute_local_activity(ActivityName.SETTLE_REFUND, SettleRefundInput(
            refund_id=s.refund_id, outcome="succeeded" if succeeded else "failed", psp=s.psp or "",
            method=s.method or "", amount_minor=s.amount_minor, currency=s.currency,
            psp_refund_reference=s.psp_reference, failure_code=code,
            fee_minor=answer.fee_minor if answer is not None and succeeded else None,
        ), **_LEDGER_STEP)
        s.failure_code, s.review_reason = code, None
        if succeeded and answer is not None:
            s.fee_minor = answer.fee_minor
        set_status(s, RefundStatus.SUCCEEDED if succeeded else RefundStatus.FAILED)
        metrics.refund_ended(s.status, s.psp)
        return s
