"""Withdrawal workflow (`withdrawal-<payout_id>`): hold, check, route, pay out, then post or void the hold.

The hold is placed first; every ending posts it (paid, or approved after a review) or voids it, through
cancels and failures alike, so a finished withdrawal never leaves money held. Deterministic: all I/O is in
activities called by name.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from workflows.common import (
    NOT_TAKEN_CODES,
    PspEvents,
    error_code,
    error_type,
    mismatch,
    publish_search_attributes,
    raise_alert,
    wait_until,
)
from workflows.types import (
    ActivityName,
    CancelRequest,
    CreatePspPayoutInput,
    ErrorType,
    HoldResult,
    PayoutCheckResult,
    PayoutRoute,
    PayoutStatus,
    PayoutSubject,
    PlayerNotification,
    PspEventSignal,
    PspPaymentRef,
    PspPayoutView,
    ReviewDecision,
    WithdrawalInput,
    WithdrawalState,
    payout_hold_id,
)

_PSP_FINAL = frozenset({"paid", "failed", "cancelled"})
_PSP_CALL_TIMEOUT = timedelta(seconds=15)
_INTERNAL = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
_LEDGER = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
_UNTIL_DONE = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=30))
# A payout create is tried up to _PSP_CREATE_TRIES times with backoff, each try its own activity (see
# _create_at_psp); declines and rejected requests end it at once.
_ONE_TRY = RetryPolicy(maximum_attempts=1)
_PSP_CREATE_TRIES = 4
_PSP_CREATE_FIRST_WAIT = 0.2
_PSP_CREATE_MAX_WAIT = 5.0
_PSP_LOOKUP = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
    non_retryable_error_types=[ErrorType.PSP_REQUEST_REJECTED, ErrorType.PSP_NOT_FOUND],
)
# While the payout PSP is down, the wait between tries doubles, up to this.
_DEFER_MAX_DELAY = 900.0
# KYC can be verified while visibility lags behind the nudge signal, so a waiting payout also re-reads the
# KYC status on this period by itself.
_KYC_RECHECK = timedelta(hours=1)


class _Ending(Exception):
    """Ends the withdrawal early with a final status; the hold is voided on the way out."""

    def __init__(self, status: str, code: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.code = code


@workflow.defn
class WithdrawalWorkflow:
    @staticmethod
    def workflow_id(payout_id: str) -> str:
        return f"withdrawal-{payout_id}"

    @workflow.init
    def __init__(self, input: WithdrawalInput) -> None:
        now = workflow.now().isoformat()
        self._input = input
        self._state = WithdrawalState(
            payout_id=input.payout_id,
            client_id=input.client_id,
            player_id=input.player_id,
            amount_minor=input.amount_minor,
            currency=input.currency,
            status=PayoutStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        self._answered = False
        self._kyc_nudged = False
        self._review: ReviewDecision | None = None
        self._cancel: CancelRequest | None = None
        self._create_unconfirmed = False
        self._psp_unreachable = False
        self._maybe_at_psp = False  # a create try may have reached a PSP
        self._confirmed_absent = False  # that PSP's last look-up said it does not know the payout
        self._events = PspEvents(_PSP_FINAL)

    # --- handlers --------------------------------------------------------------------------------------

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
    def psp_event(self, event: PspEventSignal) -> None:
        self._events.add(event)

    @workflow.signal
    def status_recheck(self) -> None:
        """Someone (an unverified webhook) suggests news at the PSP: we ask the PSP, never take their word."""
        self._events.recheck_requested = True

    @workflow.query
    def status(self) -> WithdrawalState:
        return self._state

    # --- the flow --------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: WithdrawalInput) -> WithdrawalState:
        self._publish()
        s = self._state
        # The hold's id is known before it exists, so an ending can always void it (a no-op if it never was).
        s.hold_transfer_id = payout_hold_id(input.payout_id)
        try:
            hold = await workflow.execute_activity(
                ActivityName.HOLD_PAYOUT, self._subject(), result_type=HoldResult,
                start_to_close_timeout=timedelta(seconds=10), retry_policy=_LEDGER,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as err:
            if error_type(err) == ErrorType.INSUFFICIENT_FUNDS:
                s.hold_transfer_id = None
                return await self._finish(PayoutStatus.REJECTED, "insufficient_funds")
            cancelled = is_cancelled_exception(err)
            return await self._finish(PayoutStatus.CANCELLED if cancelled else PayoutStatus.REJECTED,
                                      "workflow_cancelled" if cancelled else "hold_failed")
        s.available_after_hold_minor = hold.available_after_minor
        self._answered = True

        view: PspPayoutView | None = None
        try:
            await self._pass_checks()
            view = await self._send_to_psp()
        except _Ending as ending:
            return await self._finish(ending.status, ending.code)
        except (asyncio.CancelledError, ActivityError) as err:
            if not self._maybe_at_psp:
                # Cancelled from the Temporal UI / CLI, or a step that cannot succeed, before the PSP has it:
                # give the money back, then end.
                cancelled = is_cancelled_exception(err)
                workflow.logger.warning("payout %s ends before the PSP call: %s", input.payout_id, err)
                return await self._finish(PayoutStatus.CANCELLED if cancelled else PayoutStatus.FAILED,
                                          "workflow_cancelled" if cancelled else "internal_error")
            workflow.logger.warning("cancel of %s ignored: the PSP already has it", input.payout_id)
        # Once the PSP has the payout, only its outcome decides between posting and voiding the hold.
        while True:
            try:
                await self._settle_sent(view)
                return await self._finish(PayoutStatus.PAID, None)
            except _Ending as ending:
                return await self._finish(ending.status, ending.code)
            except asyncio.CancelledError:
                workflow.logger.warning("cancel of %s ignored: the PSP already has it", input.payout_id)
                view = None

    async def _send_to_psp(self) -> PspPayoutView | None:
        """The PSP's answer; None when we could not learn whether it took the payout. A PSP that certainly did
        not get the payout is left for the next route (another PSP once its circuit opens); one that may have got
        it is never left (retried with the same Idempotency-Key), since paying out elsewhere could pay twice.
        While no PSP takes it the payout waits (with backoff, up to its deadline), then goes out on recovery."""
        input, s = self._input, self._state
        deadline = workflow.now() + timedelta(seconds=input.psp_down_deadline_seconds)
        delay = input.psp_down_first_retry_seconds
        refused: set[str] = set()  # PSPs that did not take the payout since the last wait
        pinned: PayoutRoute | None = None  # a PSP that may have the payout
        while True:
            route = pinned or await self._activity(ActivityName.ROUTE_PAYOUT, self._subject(), PayoutRoute)
            s.psp, s.method = route.psp, route.method
            if not s.sent_to_psp:
                # Last moment a cancel can win: after this the PSP may pay out, so the cancel validator refuses.
                self._stop_if_cancelled()
                s.sent_to_psp = True
                self._set_status(PayoutStatus.PROCESSING)
            if route.psp in refused:  # no other PSP to go to: wait before asking this one again
                if workflow.now() + timedelta(seconds=delay) > deadline:
                    if pinned is not None and not self._confirmed_absent:
                        # It may have gone out and the PSP never said otherwise: a person decides, not a timer.
                        self._create_unconfirmed = True
                        return None
                    raise _Ending(PayoutStatus.FAILED, "psp_unavailable")
                workflow.logger.warning("payout %s deferred %.0f s: %s is down", input.payout_id, delay, route.psp)
                s.deferred_until = (workflow.now() + timedelta(seconds=delay)).isoformat()
                await workflow.sleep(delay)
                s.deferred_until = None
                delay = min(delay * 2, _DEFER_MAX_DELAY)
                refused.clear()
            taken, view = await self._create_at_psp(route)
            if taken:
                s.psp_reference = view.psp_reference if view else None
                return view
            refused.add(route.psp)
            if self._maybe_at_psp:
                pinned = route

    async def _settle_sent(self, view: PspPayoutView | None) -> None:
        """Returns when the PSP paid out the held amount; raises _Ending for every other end."""
        s = self._state
        outcome = view if view is not None and view.status in _PSP_FINAL else await self._await_outcome()
        if outcome is None and (self._create_unconfirmed or self._psp_unreachable):
            # Whether the money left is unknown (the create's answer was lost, or the PSP stopped answering):
            # voiding could pay twice, posting could charge for nothing.
            await self._wait_for_review("psp_status_unknown", allow_cancel=False)
            return
        if outcome is None:
            raise _Ending(PayoutStatus.FAILED, "psp_timeout")
        if outcome.status != "paid":
            raise _Ending(PayoutStatus.FAILED, outcome.failure_code or f"psp_{outcome.status}")
        if s.psp_reference is None:  # the create call was interrupted by a cancel; the PSP's answer names it
            s.psp_reference = outcome.psp_reference
        mismatch_reason = mismatch(
            outcome, psp_reference=s.psp_reference, currency=s.currency, amount_minor=s.amount_minor
        )
        if mismatch_reason:
            # Money left at the PSP but not as asked: a person decides whether the hold is posted.
            workflow.logger.warning("payout %s paid with a mismatch: %s", s.payout_id, mismatch_reason)
            await raise_alert(f"payout.{mismatch_reason}", s.payout_id, outcome)
            await self._wait_for_review(mismatch_reason, allow_cancel=False)

    async def _pass_checks(self) -> None:
        """Account state, KYC, AML/risk — and the waits they may need (KYC signal, ops review)."""
        input = self._input
        kyc_deadline = workflow.now() + timedelta(seconds=input.kyc_wait_timeout_seconds)
        while True:
            self._stop_if_cancelled()
            check = await self._activity(ActivityName.CHECK_PAYOUT, self._subject(), PayoutCheckResult)
            if check.outcome == "reject":
                raise _Ending(PayoutStatus.REJECTED, check.code)
            if check.outcome == "kyc_required":
                remaining = (kyc_deadline - workflow.now()).total_seconds()
                if remaining <= 0:
                    raise _Ending(PayoutStatus.REJECTED, "kyc_timeout")
                self._set_status(PayoutStatus.KYC_REQUIRED)
                self._kyc_nudged = False
                await wait_until(lambda: self._kyc_nudged or self._cancel is not None,
                                 min(remaining, _KYC_RECHECK.total_seconds()))
                self._stop_if_cancelled()
                continue
            if check.outcome == "review":
                await self._wait_for_review(check.code or "risk", allow_cancel=True)
            self._set_status(PayoutStatus.PENDING)
            return

    async def _wait_for_review(self, reason: str, *, allow_cancel: bool) -> None:
        s = self._state
        self._review = None  # each review needs its own decision
        s.review_reason = reason
        self._set_status(PayoutStatus.IN_REVIEW)
        decided = await wait_until(
            lambda: self._review is not None or (allow_cancel and self._cancel is not None),
            self._input.review_wait_timeout_seconds,
        )
        if allow_cancel:
            self._stop_if_cancelled()
        if not decided:
            raise _Ending(PayoutStatus.REJECTED, "review_timeout")
        assert self._review is not None
        s.reviewed_by = self._review.reviewer
        if self._review.decision != "approve":
            raise _Ending(PayoutStatus.REJECTED, "review_rejected")

    async def _create_at_psp(self, route: PayoutRoute) -> tuple[bool, PspPayoutView | None]:
        """(True, the PSP's answer), (True, None) when we could not learn whether it took the payout, or
        (False, None) when it does not have it. Tries are made here, one activity each, so that every try's error
        is seen: one that may have reached the PSP (a timeout, a broken connection, a 5xx) sets `_maybe_at_psp`."""
        input = self._input
        request = CreatePspPayoutInput(
            psp=route.psp, payout_id=input.payout_id, player_id=input.player_id, amount_minor=input.amount_minor,
            currency=input.currency, method=route.method, country=input.country,
            sandbox_scenario=input.sandbox_scenario,
        )
        wait = _PSP_CREATE_FIRST_WAIT
        for attempt in range(_PSP_CREATE_TRIES):
            try:
                return True, await workflow.execute_activity(
                    ActivityName.CREATE_PSP_PAYOUT, request, result_type=PspPayoutView,
                    start_to_close_timeout=_PSP_CALL_TIMEOUT, retry_policy=_ONE_TRY,
                    summary=f"pay out at {route.psp}",
                )
            except ActivityError as err:
                kind, code = error_type(err), error_code(err)
                final = isinstance(err.cause, ApplicationError) and err.cause.non_retryable
            if kind in (ErrorType.PSP_DECLINED, ErrorType.PSP_REQUEST_REJECTED):
                raise _Ending(PayoutStatus.FAILED, code or "declined")
            if code not in NOT_TAKEN_CODES:
                self._maybe_at_psp = True
            if final or attempt + 1 == _PSP_CREATE_TRIES:
                break
            await workflow.sleep(wait)
            wait = min(wait * 2, _PSP_CREATE_MAX_WAIT)
        # The tries ran out: whether the PSP has the payout is asked, never assumed.
        try:
            return True, await workflow.execute_activity(
                ActivityName.GET_PSP_PAYOUT, PspPaymentRef(route.psp, input.payout_id),
                result_type=PspPayoutView, start_to_close_timeout=_PSP_CALL_TIMEOUT, retry_policy=_PSP_LOOKUP,
            )
        except ActivityError as err:
            self._confirmed_absent = error_type(err) == ErrorType.PSP_NOT_FOUND
        if self._maybe_at_psp and not self._confirmed_absent:
            self._create_unconfirmed = True
            return True, None
        workflow.logger.warning("payout %s not taken by %s (%s)", input.payout_id, route.psp, code)
        return False, None

    async def _await_outcome(self) -> PspPayoutView | PspEventSignal | None:
        input = self._input
        outcome = await self._events.wait_for_final(lambda: self._state.psp, input.webhook_timeout_seconds,
                                                    self._lookup)
        if outcome is not None:
            return outcome
        for attempt in range(input.status_poll_attempts):
            view = await self._lookup()
            if view is not None and view.status in _PSP_FINAL:
                return view
            if attempt + 1 < input.status_poll_attempts and await wait_until(
                lambda: self._final_event() is not None, input.status_poll_interval_seconds
            ):
                return self._final_event()
        return None

    async def _lookup(self) -> PspPayoutView | None:
        """The payout as its PSP sees it; None (and `_psp_unreachable`) when the PSP did not answer."""
        try:
            view = await workflow.execute_activity(
                ActivityName.GET_PSP_PAYOUT, PspPaymentRef(self._state.psp or "", self._input.payout_id),
                result_type=PspPayoutView, start_to_close_timeout=_PSP_CALL_TIMEOUT, retry_policy=_PSP_LOOKUP,
            )
        except ActivityError as err:
            workflow.logger.warning("payout status look-up failed for %s: %s", self._input.payout_id, err.cause)
            self._psp_unreachable = True
            return None
        self._psp_unreachable = False
        return view

    # --- endings ---------------------------------------------------------------------------------------

    async def _finish(self, status: str, code: str | None) -> WithdrawalState:
        s = self._state
        if code:
            s.failure_code = code
        if s.hold_transfer_id and s.hold_resolution is None:
            if status == PayoutStatus.PAID:
                await self._ledger(ActivityName.POST_PAYOUT_HOLD)
                s.hold_resolution = "posted"
            else:
                await self._ledger(ActivityName.VOID_PAYOUT_HOLD)
                s.hold_resolution = "voided"
        self._set_status(status)
        self._answered = True
        if s.hold_transfer_id:
            await self._must(
                ActivityName.NOTIFY_PLAYER,
                PlayerNotification(s.player_id, f"payout.{status}", s.payout_id,
                                   {"amount_minor": str(s.amount_minor), "currency": s.currency,
                                    **({"reason": s.failure_code} if s.failure_code else {})}),
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return s

    async def _ledger(self, activity_name: str) -> None:
        await self._must(activity_name, self._state.hold_transfer_id)

    async def _must(self, activity_name: str, arg: object) -> None:
        """Settling the hold (and telling the player) must happen: retried until done, even through a cancel."""
        while True:
            try:
                await workflow.execute_activity(
                    activity_name, arg, start_to_close_timeout=timedelta(seconds=10), retry_policy=_UNTIL_DONE,
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
                return
            except (asyncio.CancelledError, ActivityError) as err:
                if not is_cancelled_exception(err):
                    raise


    # --- helpers ---------------------------------------------------------------------------------------

    async def _activity(self, name: str, arg: object, result_type: type | None):  # noqa: ANN202
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=timedelta(seconds=10), retry_policy=_INTERNAL
        )

    def _subject(self) -> PayoutSubject:
        i = self._input
        return PayoutSubject(i.payout_id, i.player_id, i.amount_minor, i.currency, i.country)

    def _stop_if_cancelled(self) -> None:
        if self._cancel is not None:
            raise _Ending(PayoutStatus.CANCELLED, "cancelled_by_client")

    def _final_event(self) -> PspEventSignal | None:
        return self._events.final(self._state.psp)

    def _set_status(self, status: str) -> None:
        self._state.status = status
        self._state.updated_at = workflow.now().isoformat()
        self._publish()

    def _publish(self) -> None:
        s = self._state
        publish_search_attributes(status=s.status, player_id=s.player_id, amount_minor=s.amount_minor,
                                  currency=s.currency, psp=s.psp, method=s.method)

