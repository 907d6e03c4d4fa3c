"""Withdrawal workflow (`withdrawal-<payout_id>`): hold, check, route, pay out, then post or void the hold.

The hold is placed first; every ending posts it (paid, or approved after a review) or voids it, through
cancels and failures alike, so a finished withdrawal never leaves money held. Once a PSP may have the payout,
only the PSP's word (or a person) decides: the hold is never voided on an unknown outcome.
Deterministic: all I/O is in activities called by name.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

from workflows import metrics
from workflows.common import (
    Finish, error_type, mismatch, psp_details, publish_search_attributes, raise_alert, set_status, wait_until,
)
from workflows.psp_step import PAYOUT_CALLS, Created, Ending, PollSchedule, PspOutcome, PspSignals, PspStep
from workflows.retry_policies import (
    DATABASE_STEP_TIMEOUT, KYC_RECHECK_SECONDS, PAYOUT_DEFER_MAX_WAIT_SECONDS, UNTIL_DONE,
)
from workflows.types import (
    ActivityName, AmlTrigger, AuditEntry, CancelRequest, ConvertedPayout, CreatePspPayoutInput, ErrorType, FxDirection,
    HoldResult, PayoutCheckResult, PayoutFacts, PayoutRoute, PayoutStatus, PayoutSubject, PlayerNotification, PspEvent,
    QuoteConversionInput, ReviewDecision, StatusPollPlan, WalletConversion, WithdrawalInput, WithdrawalState,
)

# Endings without money paid out: a refused payout is a rule's or a person's word (INFO), a failed one may be an
# incident (WARNING).
_UNPAID_ENDINGS = {PayoutStatus.FAILED: logging.WARNING, PayoutStatus.REJECTED: logging.INFO}


@workflow.defn
class WithdrawalWorkflow(PspSignals):
    @workflow.init
    def __init__(self, input: WithdrawalInput) -> None:
        self._input = input
        self._state = WithdrawalState.started(input, workflow.now().isoformat())
        self._psp = PspStep(PAYOUT_CALLS, input.payout_id)
        self._psp_events = self._psp.events
        self._fee_minor: int | None = None  # the PSP's reported fee, from the answer that paid it
        self._status_poll = StatusPollPlan()  # the routed PSP's schedule
        self._answered = False
        self._kyc_nudged = False
        self._send_now = False  # ops asked a deferred payout to try its PSP now
        self._review: ReviewDecision | None = None
        self._review_update_id = ""
        self._cancel: CancelRequest | None = None

    @staticmethod
    def workflow_id(payout_id: str) -> str:
        return f"withdrawal-{payout_id}"

    # --- handlers --------------------------------------------------------------------------------------

    @workflow.query
    def status(self) -> WithdrawalState:
        return self._state

    @workflow.update
    async def init_answer(self) -> WithdrawalState:
        """Returns once the hold is placed (or refused)."""
        await workflow.wait_condition(lambda: self._answered)
        return self._state

    @workflow.update
    async def cancel(self, request: CancelRequest) -> WithdrawalState:
        self._cancel = request
        await workflow.wait_condition(lambda: self._state.status in PayoutStatus.FINAL)
        return self._state

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._state.status in PayoutStatus.FINAL:
            raise ApplicationError(f"the payout is already {self._state.status}", type="NotCancellable")
        if self._state.sent_to_psp:
            raise ApplicationError("the payout was already sent to the PSP", type="NotCancellable")

    @workflow.update
    async def review(self, decision: ReviewDecision) -> WithdrawalState:
        self._review = decision
        self._review_update_id = workflow.current_update_info().id  # type: ignore[union-attr]
        await workflow.wait_condition(lambda: self._state.status != PayoutStatus.IN_REVIEW)
        return self._state

    @review.validator
    def _validate_review(self, decision: ReviewDecision) -> None:
        if self._state.status != PayoutStatus.IN_REVIEW or self._review is not None:
            raise ApplicationError(f"the payout is {self._state.status}, not waiting for review", type="NotInReview")
        if decision.decision not in ("approve", "reject"):
            raise ApplicationError("decision must be approve or reject", type="InvalidDecision")

    @workflow.signal
    def kyc_changed(self) -> None:
        """A nudge only: the workflow reads the KYC status itself rather than trusting a signal's content."""
        self._kyc_nudged = True

    @workflow.signal
    def send_now(self) -> None:
        """Ops: the PSP this payout waits for is back; end the deferral now. Heard only while deferred, so a
        late one cannot cut a later deferral short."""
        if self._state.deferred_until is not None:
            self._send_now = True

    # --- the flow --------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: WithdrawalInput) -> WithdrawalState:
        publish_search_attributes(self._state)
        s = self._state
        if workflow.patched("fx-conversion"):
            try:
                await self._lock_rate()
            except Finish as ending:
                return await self._finish(ending.status, ending.failure_code, hold_placed=False)
        try:
            hold = await workflow.execute_activity(
                ActivityName.HOLD_PAYOUT, self._subject(), result_type=HoldResult,
                start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as err:
            if error_type(err) == ErrorType.INSUFFICIENT_FUNDS:
                return await self._finish(PayoutStatus.REJECTED, "insufficient_funds", hold_placed=False)
            cancelled = is_cancelled_exception(err)
            return await self._finish(PayoutStatus.CANCELLED if cancelled else PayoutStatus.REJECTED,
                                      "workflow_cancelled" if cancelled else "hold_failed")
        s.hold_transfer_id, s.available_after_hold_minor = hold.transfer_id, hold.available_after_minor
        self._answered = True

        outcome: PspOutcome | None = None
        try:
            await self._pass_checks()
            outcome = await self._send_to_psp()
        except Finish as ending:
            return await self._finish(ending.status, ending.failure_code)
        except (asyncio.CancelledError, ActivityError) as err:
            if not s.sent_to_psp:
                # Cancelled from the Temporal UI / CLI, or a step that cannot succeed, before the PSP has it:
                # give the money back, then end.
                cancelled = is_cancelled_exception(err)
                workflow.logger.warning("payout %s ends before the PSP call: %s", input.payout_id, err)
                code = "no_payout_route" if error_type(err) == ErrorType.NO_PAYOUT_ROUTE else "internal_error"
                return await self._finish(PayoutStatus.CANCELLED if cancelled else PayoutStatus.FAILED,
                                          "workflow_cancelled" if cancelled else code)
            if error_type(err) == ErrorType.NO_PAYOUT_ROUTE:  # re-routed after the last PSP confirmed it had nothing
                return await self._finish(PayoutStatus.FAILED, "no_payout_route")
            workflow.logger.warning("cancel of %s ignored: the PSP may already have it", input.payout_id)
        # Once the PSP may have the payout, only its outcome (or a person) decides between posting and voiding.
        while True:
            try:
                return await self._settle(outcome or await self._await_outcome())
            except Finish as ending:
                return await self._finish(ending.status, ending.failure_code)
            except (asyncio.CancelledError, ActivityError) as err:  # a cancel may arrive as either
                if not is_cancelled_exception(err):
                    raise
                workflow.logger.warning("cancel of %s ignored: the PSP may already have it", input.payout_id)
                outcome = None

    async def _lock_rate(self) -> None:
        """A payout in another currency than the player's wallet: its rate, locked once before the hold, so the
        hold and the posting charge the wallet the same amount however the source's rates move meanwhile. Its
        database read is retried until it answers, like the checks; the activity asks the rate source itself and
        answers FX_UNAVAILABLE, not retried, when it has no quote."""
        i = self._input
        try:
            conversion = await self._database_step(
                ActivityName.QUOTE_CONVERSION,
                QuoteConversionInput(i.payout_id, i.player_id, i.currency, i.amount_minor, FxDirection.DEBIT),
                WalletConversion,
            )
        except ActivityError as err:
            cancelled = is_cancelled_exception(err)
            if not cancelled:
                workflow.logger.error("payout %s got no FX quote: %s", i.payout_id, err.cause)
            raise Finish(PayoutStatus.CANCELLED if cancelled else PayoutStatus.FAILED,
                         "workflow_cancelled" if cancelled else "fx_unavailable") from None
        self._state.fx = conversion.lock

    async def _pass_checks(self) -> None:
        """Account state, KYC, AML/risk — and the waits they may need (KYC signal, ops review)."""
        input = self._input
        kyc_deadline = workflow.now() + timedelta(seconds=input.kyc_wait_timeout_seconds)
        while True:
            self._stop_if_cancelled()
            check = await self._database_step(ActivityName.CHECK_PAYOUT, self._subject(), PayoutCheckResult)
            if check.risk is not None:
                self._state.risk_level = check.risk.level
            if check.outcome == "reject":
                raise Finish(PayoutStatus.REJECTED, check.code)
            if check.outcome == "kyc_required":
                remaining_seconds = (kyc_deadline - workflow.now()).total_seconds()
                if remaining_seconds <= 0:
                    raise Finish(PayoutStatus.REJECTED, "kyc_timeout")
                set_status(self._state, PayoutStatus.KYC_REQUIRED)
                self._kyc_nudged = False
                await wait_until(lambda: self._kyc_nudged or self._cancel is not None,
                                 min(remaining_seconds, KYC_RECHECK_SECONDS))
                continue
            if check.outcome == "review":
                await self._wait_for_review(check.code or "risk", before_psp=True)
            set_status(self._state, PayoutStatus.PENDING)
            return

    async def _send_to_psp(self) -> PspOutcome | None:
        """Creates the payout at the routed PSP: its final answer, or None while it is open there. A PSP that did
        not take it sends the payout back to routing (another PSP once its circuit opens); one that may yet see a
        try land is kept (same Idempotency-Key). While no PSP takes it the payout waits, with back-off, up to its
        deadline; a PSP that may have it but cannot say is an UNKNOWN outcome."""
        input, s = self._input, self._state
        deadline = workflow.now() + timedelta(seconds=input.psp_down_deadline_seconds)
        delay_seconds = input.psp_down_first_retry_seconds
        refused: set[str] = set()  # PSPs that did not take the payout since the last wait
        pinned: PayoutRoute | None = None  # a PSP where a try may still land
        while True:
            route = pinned or await self._database_step(ActivityName.ROUTE_PAYOUT, self._subject(), PayoutRoute)
            s.psp, s.method, self._status_poll = route.psp, route.method, route.status_poll
            if not s.sent_to_psp:
                # Last moment a cancel can win: after this the PSP may pay out, so the cancel validator refuses.
                self._stop_if_cancelled()
                s.sent_to_psp = True
                set_status(self._state, PayoutStatus.PROCESSING)
            if route.psp in refused:  # no other PSP to go to: wait before asking this one again
                if workflow.now() + timedelta(seconds=delay_seconds) > deadline:
                    if pinned is not None:  # a try may still land there: only the PSP's word releases the hold
                        return await self._psp.cancel(pinned.psp)
                    raise Finish(PayoutStatus.FAILED, "psp_unavailable")
                workflow.logger.warning("payout %s deferred %.0f s: %s is down", s.payout_id, delay_seconds, route.psp)
                s.deferred_until = (workflow.now() + timedelta(seconds=delay_seconds)).isoformat()
                # The same one timer as a sleep (histories recorded before send_now replay), ended early by it.
                await wait_until(lambda: self._send_now, delay_seconds)
                s.deferred_until, self._send_now = None, False
                delay_seconds = min(delay_seconds * 2, PAYOUT_DEFER_MAX_WAIT_SECONDS)
                refused.clear()
            result = await self._psp.create(route.psp, CreatePspPayoutInput(
                psp=route.psp, payout_id=input.payout_id, player_id=input.player_id, amount_minor=input.amount_minor,
                currency=input.currency, method=route.method, country=input.country,
                sandbox_scenario=input.sandbox_scenario,
            ))
            if result.created is Created.TAKEN:
                s.psp_reference = result.view.psp_reference  # kept from the first answer on
                final = result.view.status in PAYOUT_CALLS.final_statuses
                return PspOutcome(Ending.ANSWERED, result.view) if final else None
            if result.created is Created.REFUSED:
                raise Finish(PayoutStatus.FAILED, result.code or "declined")
            if result.created is Created.UNKNOWN:
                return PspOutcome(Ending.UNKNOWN)
            workflow.logger.warning("payout %s not taken by %s (%s)", s.payout_id, route.psp, result.code)
            refused.add(route.psp)
            if result.maybe_in_flight:
                pinned = route

    async def _await_outcome(self) -> PspOutcome:
        input, s = self._input, self._state
        schedule = PollSchedule.of(self._status_poll, input.status_poll_attempts, input.status_poll_interval_seconds)
        return await self._psp.outcome(s.psp or "", schedule, webhook_timeout_seconds=input.webhook_timeout_seconds)

    async def _settle(self, outcome: PspOutcome) -> WithdrawalState:
        """Posts the hold on a payout paid as asked (or approved in review); voids it on a confirmed failure."""
        s = self._state
        if outcome.ending is Ending.CANCELLED:  # no outcome in time, and the PSP confirmed our cancel
            raise Finish(PayoutStatus.CANCELLED, "psp_timeout")
        if outcome.ending is Ending.UNKNOWN:
            # Whether the money left is unknown: voiding could pay twice, posting could charge for nothing.
            await raise_alert("withdrawal.psp_status_unknown", s.payout_id,
                              {"psp": s.psp or "", "amount_minor": str(s.amount_minor), "currency": s.currency})
            if (answer := await self._wait_for_review("psp_status_unknown", before_psp=False,
                                                      psp_may_decide=True)) is not None:
                return await self._settle(PspOutcome(Ending.ANSWERED, answer))  # the PSP spoke first
            return await self._finish(PayoutStatus.PAID, None)
        answer = outcome.answer
        assert answer is not None
        s.psp_reference = s.psp_reference or answer.psp_reference
        if answer.status != "paid":
            raise Finish(PayoutStatus.FAILED, answer.failure_code or f"psp_{answer.status}")
        self._fee_minor = answer.fee_minor
        mismatch_reason = mismatch(answer, psp_reference=s.psp_reference, currency=s.currency,
                                   amount_minor=s.amount_minor)
        if mismatch_reason:
            # Money left at the PSP but not as asked: a person decides whether the hold is posted.
            workflow.logger.warning("payout %s paid with a mismatch: %s", s.payout_id, mismatch_reason)
            await raise_alert(f"payout.{mismatch_reason}", s.payout_id, psp_details(answer))
            await self._wait_for_review(mismatch_reason, before_psp=False)
        return await self._finish(PayoutStatus.PAID, None)

    async def _wait_for_review(
        self, reason: str, *, before_psp: bool, psp_may_decide: bool = False
    ) -> PspEvent | None:
        """Returns on approval; raises Finish on a rejection — and before the PSP call on a cancel or when the
        review waits too long. Once the PSP may have the payout no timer decides, only a person — or, when its
        outcome was unknown (`psp_may_decide`), the PSP: a verified final event that arrives first is returned."""
        s = self._state
        self._review = None  # each review needs its own decision
        s.review_reason = reason
        set_status(self._state, PayoutStatus.IN_REVIEW)
        if before_psp:
            decided = await wait_until(lambda: self._review is not None or self._cancel is not None,
                                       self._input.review_wait_timeout_seconds)
            self._stop_if_cancelled()
            if not decided:
                raise Finish(PayoutStatus.REJECTED, "review_timeout")
        else:
            while self._review is None:
                await self._psp.verify_claims()
                if psp_may_decide and s.psp and (event := self._psp.events.final(s.psp)) is not None:
                    set_status(s, PayoutStatus.PROCESSING)
                    return event
                await workflow.wait_condition(lambda: self._review is not None or bool(self._psp.events.claims))
        assert self._review is not None
        s.reviewed_by = self._review.reviewer
        await self._audit_review(reason)
        if self._review.decision != "approve":
            raise Finish(PayoutStatus.REJECTED, "review_rejected")
        return None

    async def _audit_review(self, review_reason: str) -> None:
        """Written by the workflow itself, so a decision from the Temporal UI or CLI is audited too."""
        review = self._review
        assert review is not None
        await workflow.execute_activity(ActivityName.RECORD_AUDIT, AuditEntry(
            idempotency_key=f"{workflow.info().workflow_id}:review:{self._review_update_id}", actor=review.reviewer,
            action=f"payout.review.{review.decision}", subject=f"payout:{self._state.payout_id}",
            details={"review_reason": review_reason, **({"reason": review.reason} if review.reason else {})},
            incident_id=review.incident_id,
        ), start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE)

    # --- endings ---------------------------------------------------------------------------------------

    async def _finish(self, status: str, code: str | None, *, hold_placed: bool = True) -> WithdrawalState:
        s = self._state
        if code:
            s.failure_code = code
        if hold_placed and s.hold_resolution is None:
            # By payout id: a hold whose placing was cancelled half-way is voided too (a no-op if it never was).
            posted = status == PayoutStatus.PAID
            if posted and s.fx is not None:  # the hold, its payout-currency leg and the margin, at once
                await self._must(ActivityName.POST_CONVERTED_PAYOUT,
                                 ConvertedPayout(s.payout_id, s.player_id, s.fx, s.method, s.psp))
            else:
                await self._must(ActivityName.POST_PAYOUT_HOLD if posted else ActivityName.VOID_PAYOUT_HOLD,
                                 s.payout_id)
            s.hold_resolution = "posted" if posted else "voided"
        set_status(self._state, status)
        metrics.payout_ended(status=s.status, method=s.method, psp=s.psp, created_at=s.created_at,
                             updated_at=s.updated_at)
        self._answered = True
        if status in _UNPAID_ENDINGS:  # one line for an operator (workflow.logger skips replay: once per execution)
            workflow.logger.log(_UNPAID_ENDINGS[status], "payout %s ended %s (%s)", s.payout_id, status,
                                s.failure_code, extra={"status": status, "failure_code": s.failure_code})
        if hold_placed:
            details = {"amount_minor": str(s.amount_minor), "currency": s.currency}
            await self._must(ActivityName.NOTIFY_PLAYER, PlayerNotification(
                s.player_id, f"payout.{status}", s.payout_id,
                details | ({"reason": s.failure_code} if s.failure_code else {}), client_id=s.client_id,
            ))
        # The payouts table (the margin report); a paid payout's PSP fee is booked with it.
        await self._must(ActivityName.RECORD_PAYOUT, PayoutFacts(
            s.payout_id, s.client_id, s.player_id, s.currency, s.amount_minor, s.status, s.created_at, s.updated_at,
            s.method, s.psp, self._fee_minor))
        if status == PayoutStatus.PAID:
            # AML scenarios look at settled money (the payouts row above): this payout may complete a pattern.
            await self._must(ActivityName.CHECK_AML, AmlTrigger(s.player_id, "payout", s.payout_id))
        try:
            await workflow.wait_condition(workflow.all_handlers_finished)
        except asyncio.CancelledError:
            pass  # the payout is settled: a cancel now has nothing left to stop
        return s

    async def _must(self, activity_name: str, arg: object) -> None:
        """Settling the hold (and telling the player) must happen: retried until done, even through a cancel."""
        while True:
            try:
                await workflow.execute_activity(
                    activity_name, arg, start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
                return
            except (asyncio.CancelledError, ActivityError) as err:
                if not is_cancelled_exception(err):
                    raise

    # --- helpers ---------------------------------------------------------------------------------------

    async def _database_step(self, name: str, arg: object, result_type: type):  # noqa: ANN202
        """A check or a route: retried until the database answers, since the held money waits either way."""
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE
        )

    def _subject(self) -> PayoutSubject:
        i = self._input
        return PayoutSubject(i.payout_id, i.player_id, i.amount_minor, i.currency, i.country, i.device_id,
                             i.ip_address, self._state.fx,
                             client_id=i.client_id)

    def _stop_if_cancelled(self) -> None:
        if self._cancel is not None:
            raise Finish(PayoutStatus.CANCELLED, "cancelled_by_client")
