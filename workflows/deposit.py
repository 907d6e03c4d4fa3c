"""Deposit workflow (`deposit-<payment_id>`): screen, route, create at a PSP, wait for the outcome, credit once.

Deterministic: every I/O step is an activity called by name; time comes from `workflow.now()`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.common import (
    NOT_TAKEN_CODES,
    PspEvents,
    activity_cause,
    error_code,
    error_type,
    mismatch,
    publish_search_attributes,
    raise_alert,
    wait_until,
)
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
    PspEventSignal,
    PspPaymentRef,
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
_PSP_FINAL = frozenset({"captured", "failed", "cancelled", "expired"})

# Screening, routing and the credit are short database steps in the worker's own process: local activities, so
# they cost no task-queue round trip (the init answer and webhook → credited latency are mostly such trips).
_INTERNAL_STEP = dict(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10),
                             maximum_attempts=10),
)
_PSP_CALL_TIMEOUT = timedelta(seconds=15)
# Deposits started before this patch made their create tries as one activity's retries (_PSP_CREATE_RETRY), so
# the workflow saw only the last try's error; since, each try is its own activity (see _create_at).
_CREATE_TRIES_PATCH = "deposit-create-tries-seen"
_PSP_CREATE_TRIES = 4
_PSP_CREATE_FIRST_WAIT = timedelta(milliseconds=200)
_PSP_CREATE_MAX_WAIT = timedelta(seconds=5)
_ONE_TRY = RetryPolicy(maximum_attempts=1)
_PSP_CREATE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=4,
    non_retryable_error_types=[ErrorType.PSP_DECLINED, ErrorType.PSP_REQUEST_REJECTED],
)
_PSP_LOOKUP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
    non_retryable_error_types=[ErrorType.PSP_REQUEST_REJECTED, ErrorType.PSP_NOT_FOUND],
)
_LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[ErrorType.LEDGER_CONFLICT],
)


class _CreateFailed(Exception):
    """A PSP did not create the payment: its last error, and whether any try may have reached it anyway."""

    def __init__(self, kind: str | None, code: str | None, maybe_reached: bool) -> None:
        super().__init__(code)
        self.kind, self.code, self.maybe_reached = kind, code, maybe_reached


class _Ending(Exception):
    """Ends the deposit before it reached a PSP outcome."""

    def __init__(self, status: str, code: str | None = None, *, review_reason: str | None = None) -> None:
        super().__init__(status)
        self.status, self.code, self.review_reason = status, code, review_reason


@workflow.defn
class DepositWorkflow:
    @staticmethod
    def workflow_id(payment_id: str) -> str:
        return f"deposit-{payment_id}"

    @workflow.init
    def __init__(self, input: DepositInput) -> None:
        now = workflow.now().isoformat()
        self._input = input
        self._state = DepositState(
            payment_id=input.payment_id,
            client_id=input.client_id,
            player_id=input.player_id,
            amount_minor=input.amount_minor,
            currency=input.currency,
            method=input.method,
            status=DepositStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        self._answered = False
        self._counts_against_limits = False
        self._psp_status = "pending"
        self._events = PspEvents(_PSP_FINAL)
        self._left_psps: set[str] = set()  # PSPs this deposit failed over from
        self._status_polls: dict[str, StatusPollPlan] = {}

    # --- handlers --------------------------------------------------------------------------------------

    @workflow.update
    async def init_answer(self) -> InitAnswer:
        """Returns once the PSP has answered (or the deposit ended before reaching one)."""
        await workflow.wait_condition(lambda: self._answered)
        s = self._state
        return InitAnswer(s.payment_id, s.status, s.psp, s.redirect_url, s.failure_code)

    @workflow.signal
    def psp_event(self, event: PspEventSignal) -> None:
        if self._events.add(event) and self._answered and event.psp == self._state.psp:
            self._advance_psp_status(event.status)

    @workflow.signal
    def status_recheck(self) -> None:
        """Someone (an unverified webhook) suggests news at the PSP: we ask the PSP, never take their word."""
        self._events.recheck_requested = True

    @workflow.query
    def status(self) -> DepositState:
        return self._state

    # --- the flow --------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DepositInput) -> DepositState:
        self._publish()
        try:
            created = await self._screen_route_and_create()
        except _Ending as ending:
            return await self._finish(ending.status, failure_code=ending.code, review_reason=ending.review_reason)
        except asyncio.CancelledError:
            # Cancelled (Temporal UI / CLI) before a PSP answered: end it, so the limit is released and the
            # init answer returns. A PSP that took it anyway is caught by the after-close capture alert.
            workflow.logger.warning("deposit %s cancelled before a PSP answered", input.payment_id)
            return await self._finish(DepositStatus.FAILED, failure_code="workflow_cancelled")

        s = self._state
        s.psp, s.psp_reference, s.redirect_url = created.psp, created.psp_reference, created.redirect_url
        s.failure_code = None  # an earlier PSP's failure no longer describes this payment
        self._advance_psp_status(created.status)
        for event in self._events.events:  # webhooks that overtook the create call's answer
            if event.psp == s.psp:
                self._advance_psp_status(event.status)
        self._answered = True

        outcome = created if created.status in _PSP_FINAL else await self._await_outcome()
        return await self._settle(outcome)

    async def _screen_route_and_create(self) -> PspPaymentView:
        input = self._input
        # Screening may count the deposit against the limits (it is retried too), so from here a deposit that
        # fails releases it (a no-op when nothing was counted); a rejected one was never counted.
        self._counts_against_limits = True
        # Both run at once (routing only reads): the init answer waits for the slower, not for the sum.
        screening, route = await asyncio.gather(
            workflow.execute_local_activity(
                ActivityName.SCREEN_DEPOSIT,
                ScreenDepositInput(input.payment_id, input.player_id, input.amount_minor, input.currency),
                result_type=ScreeningResult,
                **_INTERNAL_STEP,
            ),
            workflow.execute_local_activity(
                ActivityName.ROUTE_DEPOSIT,
                RouteInput(input.method, input.currency, input.amount_minor, input.country, input.payment_id),
                result_type=DepositRoute,
                **_INTERNAL_STEP,
            ),
            return_exceptions=True,
        )
        for result in (screening, route):
            if isinstance(result, asyncio.CancelledError):  # the workflow is being cancelled: let it
                raise result
        if isinstance(screening, BaseException):
            # No money has moved yet, so a step that keeps failing ends the deposit instead of stalling it.
            workflow.logger.error("deposit %s could not be screened: %s", input.payment_id, activity_cause(screening))
            raise _Ending(DepositStatus.FAILED, "screening_unavailable")
        if screening.outcome != "allow":
            self._counts_against_limits = False
            raise _Ending(DepositStatus.REJECTED, screening.code)
        if isinstance(route, BaseException):
            if error_type(route) == ErrorType.ALL_PSPS_DOWN:
                raise _Ending(DepositStatus.FAILED, "method_unavailable")
            workflow.logger.error("deposit %s could not be routed: %s", input.payment_id, activity_cause(route))
            raise _Ending(DepositStatus.FAILED, "routing_unavailable")
        if not route.candidates:
            raise _Ending(DepositStatus.FAILED, "no_route")
        self._status_polls = route.status_polls
        return await self._create_at_first_available_psp(route.candidates)

    async def _create_at_first_available_psp(self, candidates: list[str]) -> PspPaymentView:
        """Tries the candidates in order, deciding on each PSP's error by its classification: a hard decline or a
        step-up request ends the deposit; a PSP that did not take the payment fails over to the next candidate;
        one whose answer was lost is asked first, so a payment is never made twice. Each attempt ("psp: decision
        (code)") is kept in the state and in the history (see _record_attempt)."""
        input = self._input
        for psp in candidates:
            request = CreatePspPaymentInput(
                psp=psp,
                payment_id=input.payment_id,
                player_id=input.player_id,
                amount_minor=input.amount_minor,
                currency=input.currency,
                method=input.method,
                return_url=input.return_url,
                country=input.country,
                sandbox_scenario=input.sandbox_scenario,
            )
            try:
                created = await self._create_at(request)
                self._record_attempt(psp, "accepted")
                return created
            except _CreateFailed as failed:
                kind, code, maybe_reached = failed.kind, failed.code, failed.maybe_reached
            self._state.psp = psp
            decision = self._decide(psp, kind, code)
            if decision == "failover":
                # A PSP that said to go elsewhere, or that no try reached (every one refused or never sent), has
                # not taken the payment; after any other failure (a timeout, a 500) ask it before going elsewhere.
                not_taken = kind == ErrorType.PSP_FAILOVER or not maybe_reached
                found, known = (None, True) if not_taken else await self._find_at(psp)
                if found is not None:
                    self._record_attempt(psp, "accepted after all", code)
                    return found
                if not known:
                    self._record_attempt(psp, "outcome unknown", code)
                    raise _Ending(DepositStatus.IN_REVIEW, review_reason="psp_status_unknown")
            self._record_attempt(psp, decision, code)
            workflow.logger.warning("payment %s at %s: %s (%s)", input.payment_id, psp, decision, code)
            if decision == "failover":
                self._left_psps.add(psp)
            if decision == "hard_decline":
                raise _Ending(DepositStatus.FAILED, code or "declined")
            if decision == "step_up":
                raise _Ending(DepositStatus.FAILED, "step_up_required")
            if decision == "rejected":
                raise _Ending(DepositStatus.FAILED, "psp_rejected")
        self._state.psp = None
        raise _Ending(DepositStatus.FAILED, "psp_unavailable")

    async def _create_at(self, request: CreatePspPaymentInput) -> PspPaymentView:
        """The PSP's answer to the create, tried up to _PSP_CREATE_TRIES times with backoff under one
        Idempotency-Key, each try its own activity so that every try's error is seen; raises _CreateFailed."""
        if not workflow.patched(_CREATE_TRIES_PATCH):
            try:
                return await self._create_try(request, _PSP_CREATE_RETRY)
            except ActivityError as err:
                code = error_code(err)
                raise _CreateFailed(error_type(err), code, code not in NOT_TAKEN_CODES) from err
        maybe_reached = False
        wait = _PSP_CREATE_FIRST_WAIT
        for attempt in range(_PSP_CREATE_TRIES):
            try:
                return await self._create_try(request, _ONE_TRY)
            except ActivityError as err:
                kind, code = error_type(err), error_code(err)
                cause = activity_cause(err)
                final = isinstance(cause, ApplicationError) and cause.non_retryable
            # A timeout, a broken connection or a 5xx may have left the payment at the PSP: that stays so even
            # when a later try is refused outright.
            maybe_reached = maybe_reached or code not in NOT_TAKEN_CODES
            if final or attempt + 1 == _PSP_CREATE_TRIES:
                raise _CreateFailed(kind, code, maybe_reached)
            await workflow.sleep(wait)
            wait = min(wait * 2, _PSP_CREATE_MAX_WAIT)
        raise AssertionError("unreachable")

    @staticmethod
    async def _create_try(request: CreatePspPaymentInput, retry_policy: RetryPolicy) -> PspPaymentView:
        return await workflow.execute_activity(
            ActivityName.CREATE_PSP_PAYMENT, request, result_type=PspPaymentView,
            start_to_close_timeout=_PSP_CALL_TIMEOUT, retry_policy=retry_policy, summary=f"create at {request.psp}",
        )

    @staticmethod
    def _decide(psp: str, kind: str | None, code: str | None) -> str:
        """What a PSP's error means for this deposit (the PSP's error table already chose the error type)."""
        return {
            ErrorType.PSP_DECLINED: "hard_decline",
            ErrorType.PSP_STEP_UP: "step_up",
            ErrorType.PSP_REQUEST_REJECTED: "rejected",
        }.get(kind or "", "failover")

    async def _find_at(self, psp: str) -> tuple[PspPaymentView | None, bool]:
        """The payment as the PSP knows it; (None, True) when it does not know it, (None, False) when we
        could not find out."""
        try:
            view = await workflow.execute_activity(
                ActivityName.GET_PSP_PAYMENT,
                PspPaymentRef(psp, self._input.payment_id),
                result_type=PspPaymentView,
                start_to_close_timeout=_PSP_CALL_TIMEOUT,
                retry_policy=_PSP_LOOKUP_RETRY,
            )
        except ActivityError as err:
            return None, error_type(err) == ErrorType.PSP_NOT_FOUND
        return view, True

    async def _await_outcome(self) -> PspPaymentView | PspEventSignal | str:
        """The final PSP outcome from a webhook or a status look-up; else why there is none."""
        input = self._input
        ref = PspPaymentRef(self._state.psp or "", input.payment_id)
        outcome = await self._events.wait_for_final(
            lambda: self._state.psp, input.webhook_timeout_seconds,
            lambda: self._psp_lookup(ActivityName.GET_PSP_PAYMENT, ref),
        )
        if outcome is not None:
            return outcome
        plan = self._status_polls.get(ref.psp, StatusPollPlan())
        attempts = plan.attempts or input.status_poll_attempts
        interval = min(input.status_poll_interval_seconds, plan.max_interval_seconds)
        for attempt in range(attempts):
            view = await self._psp_lookup(ActivityName.GET_PSP_PAYMENT, ref)
            if view is not None:
                self._advance_psp_status(view.status)
                if view.status in _PSP_FINAL:
                    return view
            # A webhook may still land while we wait between polls.
            if attempt + 1 < attempts and await wait_until(lambda: self._final_event() is not None, interval):
                return self._final_event()
            interval = min(interval * plan.backoff, plan.max_interval_seconds)
        # Still unknown: cancel at the PSP. If the PSP settled meanwhile, the cancel answer says so.
        view = await self._psp_lookup(ActivityName.CANCEL_PSP_PAYMENT, ref)
        if view is None:
            # We could not learn whether money moved at the PSP: a person must look, not a timer.
            return "psp_status_unknown"
        return view if view.status == "captured" else "psp_timeout"

    async def _psp_lookup(self, activity_name: str, ref: PspPaymentRef) -> PspPaymentView | None:
        try:
            return await workflow.execute_activity(
                activity_name,
                ref,
                result_type=PspPaymentView,
                start_to_close_timeout=_PSP_CALL_TIMEOUT,
                retry_policy=_PSP_LOOKUP_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning("%s failed for %s: %s", activity_name, ref.payment_id, err.cause)
            return None

    async def _settle(self, outcome: PspPaymentView | PspEventSignal | str) -> DepositState:
        s = self._state
        if outcome == "psp_timeout":
            return await self._finish(DepositStatus.EXPIRED, failure_code=outcome)
        if isinstance(outcome, str):
            return await self._finish(DepositStatus.IN_REVIEW, review_reason=outcome)
        if outcome.status == "captured":
            s.captured_amount_minor = outcome.amount_minor
            self._set_status(DepositStatus.CAPTURED)
            mismatch_reason = mismatch(
                outcome, psp_reference=s.psp_reference, currency=s.currency, amount_minor=s.amount_minor
            )
        else:
            mismatch_reason = "reference_mismatch" if outcome.psp_reference != s.psp_reference else None
        if mismatch_reason:
            # No money moves on an outcome that is not the payment we asked for; a person looks at it.
            workflow.logger.warning("payment %s: PSP outcome with a %s", s.payment_id, mismatch_reason)
            await raise_alert(f"deposit.{mismatch_reason}", s.payment_id, outcome)
            return await self._finish(DepositStatus.IN_REVIEW, review_reason=mismatch_reason)
        if outcome.status != "captured":
            return await self._finish(DepositStatus.FAILED, failure_code=_failure_code(outcome))
        try:
            posting = await workflow.execute_local_activity(
                ActivityName.CREDIT_DEPOSIT,
                CreditDepositInput(s.payment_id, s.player_id, outcome.psp, s.amount_minor, s.currency),
                result_type=LedgerPosting,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=_LEDGER_RETRY,
            )
        except (ActivityError, ApplicationError) as err:  # a local activity: see activity_cause
            workflow.logger.error("credit of %s refused by the ledger: %s", s.payment_id, activity_cause(err))
            return await self._finish(DepositStatus.IN_REVIEW, review_reason=error_code(err) or "ledger_error")
        s.credit_transfer_id = posting.transfer_id
        return await self._finish(DepositStatus.CREDITED)

    # --- helpers ---------------------------------------------------------------------------------------

    def _record_attempt(self, psp: str, decision: str, code: str | None = None) -> None:
        """Kept in the state, and in the history as the `psp_attempts` memo (an event per attempt in the UI)."""
        self._state.attempts.append(f"{psp}: {decision}" + (f" ({code})" if code else ""))
        workflow.upsert_memo({"psp_attempts": self._state.attempts})

    def _capture_at_a_left_psp(self) -> PspEventSignal | None:
        for event in self._events.events:
            if event.psp in self._left_psps and event.status == "captured":
                return event
        return None

    def _final_event(self) -> PspEventSignal | None:
        return self._events.final(self._state.psp)

    def _advance_psp_status(self, psp_status: str) -> None:
        """Moves the payment forward on a PSP status; a late, lower-rank status is ignored, never applied."""
        if _PSP_STATUS_RANK.get(psp_status, -1) <= _PSP_STATUS_RANK.get(self._psp_status, -1):
            if psp_status != self._psp_status:
                workflow.logger.info("ignoring out-of-order PSP status %s after %s", psp_status, self._psp_status)
            return
        self._psp_status = psp_status
        mirrored = {"requires_action": DepositStatus.REQUIRES_ACTION, "authorized": DepositStatus.AUTHORIZED}
        if psp_status in mirrored and self._state.status not in DepositStatus.FINAL:
            self._set_status(mirrored[psp_status])

    def _set_status(self, status: str) -> None:
        self._state.status = status
        self._state.updated_at = workflow.now().isoformat()
        self._publish()

    def _publish(self) -> None:
        s = self._state
        publish_search_attributes(status=s.status, player_id=s.player_id, amount_minor=s.amount_minor,
                                  currency=s.currency, psp=s.psp, method=s.method)

    async def _finish(
        self, status: str, *, failure_code: str | None = None, review_reason: str | None = None
    ) -> DepositState:
        if (stray := self._capture_at_a_left_psp()) is not None:
            # A PSP we failed over from took the money after all (its answer was lost, or it processed our request
            # late): the player may have paid twice. Whatever else happened, a person must look (and refund).
            payment_id = self._input.payment_id
            workflow.logger.warning("payment %s: captured at %s, which it had failed over from", payment_id, stray.psp)
            await raise_alert("deposit.captured_at_left_psp", payment_id, stray)
            status, review_reason = DepositStatus.IN_REVIEW, "captured_at_left_psp"
        if failure_code:
            self._state.failure_code = failure_code
        if review_reason:
            self._state.review_reason = review_reason
        if status in (DepositStatus.FAILED, DepositStatus.EXPIRED) and self._counts_against_limits:
            # No money arrived, so the deposit no longer counts against the player's limits.
            await workflow.execute_activity(
                ActivityName.RELEASE_DEPOSIT_LIMIT, self._input.payment_id, start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                         maximum_interval=timedelta(seconds=30)),
            )
        self._set_status(status)
        self._answered = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._state.review_reason != "captured_at_left_psp" and (late := self._capture_at_a_left_psp()):
            # That capture came in while the steps above ran.
            await raise_alert("deposit.captured_at_left_psp", self._input.payment_id, late)
            self._state.review_reason = "captured_at_left_psp"
            self._set_status(DepositStatus.IN_REVIEW)
        return self._state


def _failure_code(outcome: PspPaymentView | PspEventSignal) -> str:
    code = getattr(outcome, "failure_code", None)
    return code or f"psp_{outcome.status}"
