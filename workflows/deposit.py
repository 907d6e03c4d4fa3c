"""Deposit workflow (`deposit-<payment_id>`): screen and route, create at the first PSP that takes it, wait for
its outcome, credit once — or end without money, or in review when the PSP's outcome cannot be learned.

Deterministic: every I/O step is an activity called by name; time comes from `workflow.now()`.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from payloop.psp_decision import PspDecision
from workflows.common import (
    Finish,
    activity_cause,
    error_code,
    error_type,
    mismatch,
    psp_details,
    publish_search_attributes,
    set_status,
    raise_alert,
)
from workflows.psp_step import (
    PAYMENT_CALLS, Created, Ending, PollSchedule, PspAnswer, PspOutcome, PspSignals, PspStep,
)
from workflows.retry_policies import DATABASE_STEP, DATABASE_STEP_TIMEOUT, UNTIL_DONE
from workflows.types import (
    ActivityName,
    CreatePspPaymentInput,
    CreditDepositInput,
    DepositInput,
    DepositRoute,
    DepositState,
    DepositStatus,
    ErrorType,
    InitAnswer,
    LedgerPosting,
    PspEvent,
    PspPaymentView,
    RouteInput,
    ScreenDepositInput,
    ScreeningResult,
    StatusPollPlan,
)

# Order of a payment's life at the PSP; an event never moves a payment back to an earlier rank.
_PSP_STATUS_RANK = {
    "pending": 0, "requires_action": 1, "authorized": 2, "captured": 3, "failed": 3, "cancelled": 3, "expired": 3,
}
# Screening, routing and the credit are short database steps in the worker's own process: local activities, so
# they cost no task-queue round trip (the init answer and webhook → credited latency are mostly such trips).
_LOCAL_STEP = dict(start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=DATABASE_STEP)
_REFUSAL_CODES = {PspDecision.STEP_UP: "step_up_required", PspDecision.REJECTED: "psp_rejected"}


@workflow.defn
class DepositWorkflow(PspSignals):
    @staticmethod
    def workflow_id(payment_id: str) -> str:
        return f"deposit-{payment_id}"

    @workflow.init
    def __init__(self, input: DepositInput) -> None:
        self._input = input
        self._state = DepositState.started(input, workflow.now().isoformat())
        self._answered = False
        self._counts_against_limits = False
        self._psp_status = "pending"
        self._psp = PspStep(PAYMENT_CALLS, input.payment_id, on_event=self._on_psp_event)
        self._left_psps: set[str] = set()  # PSPs this deposit failed over from

    # --- handlers --------------------------------------------------------------------------------------

    @workflow.update
    async def init_answer(self) -> InitAnswer:
        """Returns once the PSP has answered (or the deposit ended before reaching one)."""
        await workflow.wait_condition(lambda: self._answered)
        s = self._state
        return InitAnswer(s.payment_id, s.status, s.psp, s.redirect_url, s.failure_code)

    @workflow.query
    def status(self) -> DepositState:
        return self._state

    # --- the flow --------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DepositInput) -> DepositState:
        publish_search_attributes(self._state)
        try:
            route = await self._screen_and_route()
            created = await self._create_at_first_taker(route.candidates)
        except Finish as ending:
            return await self._finish(ending.status, failure_code=ending.failure_code,
                                      review_reason=ending.review_reason)
        except asyncio.CancelledError:
            # Cancelled (Temporal UI / CLI) before a PSP answered: end it, so the limit is released and the
            # init answer returns. A PSP that took it anyway is caught by the after-close capture alert.
            workflow.logger.warning("deposit %s cancelled before a PSP answered", input.payment_id)
            return await self._finish(DepositStatus.FAILED, failure_code="workflow_cancelled")

        s = self._state
        s.psp, s.psp_reference, s.redirect_url = created.psp, created.psp_reference, created.redirect_url
        s.failure_code = None  # an earlier PSP's failure no longer describes this payment
        await self._psp.verify_claims()  # webhooks may have overtaken the create call's answer
        for psp_status in [created.status] + [e.status for e in self._psp.events.events if e.psp == created.psp]:
            self._advance_psp_status(psp_status)
        self._answered = True

        if created.status in PAYMENT_CALLS.final_statuses:
            outcome = PspOutcome(Ending.ANSWERED, created)
        else:
            schedule = PollSchedule.of(route.status_polls.get(created.psp, StatusPollPlan()),
                                       input.status_poll_attempts, input.status_poll_interval_seconds)
            try:
                outcome = await self._psp.outcome(created.psp, schedule, on_status=self._advance_psp_status,
                                                  webhook_timeout_seconds=input.webhook_timeout_seconds)
            except (asyncio.CancelledError, ActivityError) as err:
                if not is_cancelled_exception(err):
                    raise
                # Cancelled from the Temporal UI / CLI while the PSP has it: the same rule as a wait that ran out.
                workflow.logger.warning("deposit %s cancelled while at %s", input.payment_id, created.psp)
                outcome = await self._psp.cancel(created.psp)
        if outcome.ending is Ending.CANCELLED:  # nothing came in time, and the PSP confirmed our cancel
            return await self._finish(DepositStatus.EXPIRED, failure_code="psp_timeout")
        if outcome.ending is Ending.UNKNOWN:  # the PSP may yet take the money: nothing is released
            return await self._finish(DepositStatus.IN_REVIEW, review_reason="psp_status_unknown")
        assert outcome.answer is not None
        return await self._settle(outcome.answer)

    async def _screen_and_route(self) -> DepositRoute:
        input = self._input
        # Screening may count the deposit against the limits (it is retried too), so from here a deposit that
        # fails releases it (a no-op when nothing was counted); a rejected one was never counted.
        self._counts_against_limits = True
        # Both run at once (routing only reads): the init answer waits for the slower, not for the sum.
        screening, route = await asyncio.gather(
            workflow.execute_local_activity(
                ActivityName.SCREEN_DEPOSIT,
                ScreenDepositInput(input.payment_id, input.player_id, input.amount_minor, input.currency),
                result_type=ScreeningResult, **_LOCAL_STEP,
            ),
            workflow.execute_local_activity(
                ActivityName.ROUTE_DEPOSIT,
                RouteInput(input.method, input.currency, input.amount_minor, input.country, input.payment_id),
                result_type=DepositRoute, **_LOCAL_STEP,
            ),
            return_exceptions=True,
        )
        for result in (screening, route):
            if isinstance(result, asyncio.CancelledError):  # the workflow is being cancelled: let it
                raise result
        if isinstance(screening, BaseException):
            # No money has moved yet, so a step that keeps failing ends the deposit instead of stalling it.
            workflow.logger.error("deposit %s could not be screened: %s", input.payment_id, activity_cause(screening))
            raise Finish(DepositStatus.FAILED, "screening_unavailable")
        if screening.outcome != "allow":
            self._counts_against_limits = False
            raise Finish(DepositStatus.REJECTED, screening.code)
        if isinstance(route, BaseException):
            if error_type(route) == ErrorType.ALL_PSPS_DOWN:
                raise Finish(DepositStatus.FAILED, "method_unavailable")
            workflow.logger.error("deposit %s could not be routed: %s", input.payment_id, activity_cause(route))
            raise Finish(DepositStatus.FAILED, "routing_unavailable")
        if not route.candidates:
            raise Finish(DepositStatus.FAILED, "no_route")
        return route

    async def _create_at_first_taker(self, candidates: list[str]) -> PspPaymentView:
        """The candidates in order, until one takes the payment. A PSP that did not take it is left for the next
        (before the player was redirected); a hard decline or a step-up request ends the deposit; a PSP that may
        have it but cannot say sends it to review, since going elsewhere could charge the player twice."""
        input = self._input
        for psp in candidates:
            self._state.psp = psp
            result = await self._psp.create(psp, CreatePspPaymentInput(
                psp=psp, payment_id=input.payment_id, player_id=input.player_id, amount_minor=input.amount_minor,
                currency=input.currency, method=input.method, return_url=input.return_url, country=input.country,
                sandbox_scenario=input.sandbox_scenario,
            ))
            self._record_attempt(psp, result.attempt())
            if result.created is Created.TAKEN:
                return result.view
            if result.created is Created.UNKNOWN:
                raise Finish(DepositStatus.IN_REVIEW, review_reason="psp_status_unknown")
            if result.created is Created.REFUSED:
                assert result.decision is not None
                raise Finish(DepositStatus.FAILED, _REFUSAL_CODES.get(result.decision, result.code or "declined"))
            workflow.logger.warning("payment %s not taken by %s (%s)", input.payment_id, psp, result.code)
            self._left_psps.add(psp)
        self._state.psp = None
        raise Finish(DepositStatus.FAILED, "psp_unavailable")

    async def _settle(self, answer: PspAnswer) -> DepositState:
        """Credits a capture of exactly the payment asked for; any other answer ends without money."""
        s = self._state
        if answer.status == "captured":
            s.captured_amount_minor = answer.amount_minor
            set_status(self._state, DepositStatus.CAPTURED)
            mismatch_reason = mismatch(answer, psp_reference=s.psp_reference, currency=s.currency,
                                       amount_minor=s.amount_minor)
        else:
            mismatch_reason = "reference_mismatch" if answer.psp_reference != s.psp_reference else None
        if mismatch_reason:
            # No money moves on an outcome that is not the payment we asked for; a person looks at it.
            workflow.logger.warning("payment %s: PSP outcome with a %s", s.payment_id, mismatch_reason)
            await raise_alert(f"deposit.{mismatch_reason}", s.payment_id, psp_details(answer))
            return await self._finish(DepositStatus.IN_REVIEW, review_reason=mismatch_reason)
        if answer.status != "captured":
            return await self._finish(DepositStatus.FAILED, failure_code=answer.failure_code or f"psp_{answer.status}")
        try:
            posting = await workflow.execute_local_activity(
                ActivityName.CREDIT_DEPOSIT,
                CreditDepositInput(s.payment_id, s.player_id, answer.psp, s.amount_minor, s.currency),
                result_type=LedgerPosting, start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
            )
        except (ActivityError, ApplicationError) as err:  # a local activity: see activity_cause
            workflow.logger.error("credit of %s refused by the ledger: %s", s.payment_id, activity_cause(err))
            return await self._finish(DepositStatus.IN_REVIEW, review_reason=error_code(err) or "ledger_error")
        s.credit_transfer_id = posting.transfer_id
        return await self._finish(DepositStatus.CREDITED)

    # --- helpers ---------------------------------------------------------------------------------------

    def _record_attempt(self, psp: str, attempt: str) -> None:
        """Kept in the state, and in the history as the `psp_attempts` memo (an event per attempt in the UI)."""
        self._state.attempts.append(f"{psp}: {attempt}")
        workflow.upsert_memo({"psp_attempts": self._state.attempts})

    def _on_psp_event(self, event: PspEvent) -> None:
        if self._answered and event.psp == self._state.psp:
            self._advance_psp_status(event.status)

    def _capture_at_a_left_psp(self) -> PspEvent | None:
        for event in self._psp.events.events:
            if event.psp in self._left_psps and event.status == "captured":
                return event
        return None

    def _advance_psp_status(self, psp_status: str) -> None:
        """Moves the payment forward on a PSP status; a late, lower-rank status is ignored, never applied."""
        if _PSP_STATUS_RANK.get(psp_status, -1) <= _PSP_STATUS_RANK.get(self._psp_status, -1):
            if psp_status != self._psp_status:
                workflow.logger.info("ignoring out-of-order PSP status %s after %s", psp_status, self._psp_status)
            return
        self._psp_status = psp_status
        mirrored = {"requires_action": DepositStatus.REQUIRES_ACTION, "authorized": DepositStatus.AUTHORIZED}
        if psp_status in mirrored and self._state.status not in DepositStatus.FINAL:
            set_status(self._state, mirrored[psp_status])

    async def _finish(
        self, status: str, *, failure_code: str | None = None, review_reason: str | None = None
    ) -> DepositState:
        await self._psp.verify_claims()
        if (stray := self._capture_at_a_left_psp()) is not None:
            # A PSP we failed over from took the money after all (its answer was lost, or it processed our request
            # late): the player may have paid twice. Whatever else happened, a person must look (and refund).
            await self._alert_stray_capture(stray)
            status, review_reason = DepositStatus.IN_REVIEW, "captured_at_left_psp"
        s = self._state
        if review_reason == "psp_status_unknown":
            # Whether the PSP has (or took) the money cannot be learned: a person must look, not a timer.
            workflow.logger.warning("payment %s: outcome at %s unknown; to review", s.payment_id, s.psp)
            await raise_alert("deposit.psp_status_unknown", s.payment_id,
                              {"psp": s.psp or "", "amount_minor": str(s.amount_minor), "currency": s.currency})
        if failure_code:
            s.failure_code = failure_code
        if review_reason:
            s.review_reason = review_reason
        if status in (DepositStatus.FAILED, DepositStatus.EXPIRED) and self._counts_against_limits:
            # No money arrived, so the deposit no longer counts against the player's limits.
            await workflow.execute_activity(
                ActivityName.RELEASE_DEPOSIT_LIMIT, self._input.payment_id,
                start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
            )
        set_status(self._state, status)
        self._answered = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._psp.verify_claims()
        if s.review_reason != "captured_at_left_psp" and (late := self._capture_at_a_left_psp()):
            await self._alert_stray_capture(late)  # that capture came in while the steps above ran
            s.review_reason = "captured_at_left_psp"
            set_status(self._state, DepositStatus.IN_REVIEW)
        return s

    async def _alert_stray_capture(self, capture: PspEvent) -> None:
        payment_id = self._input.payment_id
        workflow.logger.warning("payment %s: captured at %s, which it had failed over from", payment_id, capture.psp)
        await raise_alert("deposit.captured_at_left_psp", payment_id, psp_details(capture))
