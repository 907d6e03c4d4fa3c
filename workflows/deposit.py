"""Deposit workflow (`deposit-<payment_id>`): screen and route, create at the first PSP that takes it, wait for
its outcome, credit once — or end without money, or in review when the outcome is not the payment asked for or
cannot be learned. A deposit in review waits for a person (no timer ever credits): approve credits what the PSP
captured (or less: the rest is refunded at the PSP), reject refunds the capture at the PSP that took it or closes
a deposit nothing was captured for. When the outcome was unknown, the PSP's own verified word may decide first.

Deterministic: every I/O step is an activity called by name; time comes from `workflow.now()`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception
from temporalio.workflow import ChildWorkflowCancellationType, ParentClosePolicy

from payloop.psp_decision import PspDecision
from workflows import metrics
from workflows.common import (
    Finish,
    activity_cause,
    error_code,
    error_type,
    mismatch,
    psp_details,
    publish_search_attributes,
    raise_alert,
    set_status,
    wait_until,
)
from workflows.psp_step import (
    PAYMENT_CALLS, Created, Ending, PollSchedule, PspAnswer, PspOutcome, PspSignals, PspStep,
)
from workflows.refund import RefundWorkflow
from workflows.retry_policies import (
    DATABASE_STEP, DATABASE_STEP_TIMEOUT, KYC_RECHECK_SECONDS, UNTIL_DONE,
)
from workflows.types import (
    ActivityName,
    AmlTrigger,
    AuditEntry,
    CreatePspPaymentInput,
    CreditDepositInput,
    DepositInput,
    DepositRoute,
    DepositState,
    DepositStatus,
    ErrorType,
    FxDirection,
    InitAnswer,
    LedgerPosting,
    PaymentFacts,
    PspEvent,
    PspPaymentView,
    QuoteConversionInput,
    RefundInput,
    RefundState,
    RefundStatus,
    ReviewDecision,
    RiskAssessment,
    RouteInput,
    ScreenDepositInput,
    ScreeningResult,
    StatusPollPlan,
    UncreditedCapture,
    WalletConversion,
)

# Order of a payment's life at the PSP; an event never moves a payment back to an earlier rank.
_PSP_STATUS_RANK = {
    "pending": 0, "requires_action": 1, "authorized": 2, "captured": 3, "failed": 3, "cancelled": 3, "expired": 3,
}
# Screening, routing and the credit are short database steps in the worker's own process: local activities, so
# they cost no task-queue round trip (the init answer and webhook → credited latency are mostly such trips).
_LOCAL_STEP = dict(start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=DATABASE_STEP)
_REFUSAL_CODES = {PspDecision.STEP_UP: "step_up_required", PspDecision.REJECTED: "psp_rejected"}
_LEVEL_RANK = {"low": 0, "medium": 1, "high": 2}


# Endings without money, each one line for an operator (workflow.logger skips replay: once per execution). A
# refused deposit is the rules' word, not an incident: INFO; a failed or expired one may be (a PSP down): WARNING.
_UNPAID_ENDINGS = {DepositStatus.FAILED: logging.WARNING, DepositStatus.EXPIRED: logging.WARNING,
                   DepositStatus.REJECTED: logging.INFO}


def _log_ending_without_money(s: DepositState) -> None:
    if (level := _UNPAID_ENDINGS.get(s.status)) is not None:
        workflow.logger.log(level, "deposit %s ended %s (%s)", s.payment_id, s.status, s.failure_code,
                            extra={"status": s.status, "failure_code": s.failure_code})


def _highest_level(decisions: list[RiskAssessment]) -> str:
    return max((d.level for d in decisions), key=lambda level: _LEVEL_RANK.get(level, 0))


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
        self._challenged = False  # the PSP asked the player for a 3-D Secure / bank challenge
        self._psp = PspStep(PAYMENT_CALLS, input.payment_id, on_event=self._on_psp_event)
        self._psp_events = self._psp.events
        self._left_psps: set[str] = set()  # PSPs this deposit failed over from
        self._strays_seen: set[tuple[str, str]] = set()  # (psp, reference) of captures at left PSPs, reviewed once
        self._capture: PspAnswer | None = None  # in review: the capture the decision is about, when there is one
        self._stray: PspEvent | None = None  # in review: a capture at a left PSP, the decision is about
        self._before_stray: tuple[str, str | None] = (DepositStatus.PENDING, None)  # status, review reason
        self._review: ReviewDecision | None = None
        self._review_update_id = ""
        self._kyc_nudged = False
        self._waited_for_kyc = False
        self._risk_decisions: list[RiskAssessment] = []  # one per stage scored (before the PSP, on its card)
        self._card_risk: RiskAssessment | None = None
        # (status, review reason, failure code) of the payments row as last written: the row is written at the end
        # (and in review) only when it does not say so already.
        self._row_written: tuple[str, str | None, str | None] | None = None

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

    @workflow.signal
    def kyc_changed(self) -> None:
        """A nudge only: a deposit waiting for KYC screens itself again rather than trusting a signal's content."""
        self._kyc_nudged = True

    @workflow.update
    async def review(self, decision: ReviewDecision) -> DepositState:
        """An ops decision on a deposit in review; returns once it is carried out (a refund may take a while)."""
        self._review = decision
        self._review_update_id = workflow.current_update_info().id  # type: ignore[union-attr]
        await workflow.wait_condition(lambda: self._review is None)
        return self._state

    @review.validator
    def _validate_review(self, decision: ReviewDecision) -> None:
        s = self._state
        if s.status != DepositStatus.IN_REVIEW:
            raise ApplicationError(f"the deposit is {s.status}, not waiting for review", type="NotInReview")
        if self._review is not None:
            raise ApplicationError("a decision on this deposit is being carried out", type="NotInReview")
        if decision.decision not in ("approve", "reject"):
            raise ApplicationError("decision must be approve or reject", type="InvalidDecision")
        if decision.amount_minor is not None and (decision.decision != "approve" or decision.amount_minor <= 0):
            raise ApplicationError("an amount goes only with approve, and must be positive", type="InvalidDecision")
        if decision.decision == "reject":
            return
        capture = self._capture_under_review()
        if s.credit_transfer_id is not None or (
                self._stray is not None and self._before_stray[0] == DepositStatus.IN_REVIEW):
            raise ApplicationError("the deposit is credited, or its own PSP may still take it: a capture at a PSP "
                                   "it failed over from can only be refunded (reject)", type="DecisionNotAllowed")
        if capture is not None and capture.currency != s.currency:
            raise ApplicationError("a capture in another currency than asked can only be refunded (reject)",
                                   type="DecisionNotAllowed")
        if capture is None:
            seen = s.review_psp_view.status if s.review_psp_view else "unknown"
            raise ApplicationError(f"the PSP has captured nothing to credit (its last word: {seen}); reject it, or "
                                   "wait for the PSP", type="NothingCaptured")
        if decision.amount_minor is not None and decision.amount_minor > capture.amount_minor:
            raise ApplicationError(f"the PSP captured {capture.amount_minor} minor units; approve at most that",
                                   type="AmountOverCaptured")

    # --- the flow --------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DepositInput) -> DepositState:
        publish_search_attributes(self._state)
        try:
            if workflow.patched("fx-conversion"):
                await self._lock_rate()
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
        await self._assess_instrument(created)

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
        ending = await self._settle(outcome.answer)
        return await self._finish(ending.status, failure_code=ending.failure_code, review_reason=ending.review_reason)

    async def _lock_rate(self) -> None:
        """The player's wallet currency (a deposit claims it when the player has none) and, for a deposit in another
        currency, the rate: locked here, once, before the PSP step. Its result is in the history, so the credit
        converts at this rate however the source's rates move meanwhile, and a retry or a replay finds the same.
        A database step like screening: retried through a hiccup; the activity asks the rate source itself and
        answers FX_UNAVAILABLE, not retried, when it has no quote."""
        input = self._input
        try:
            conversion = await workflow.execute_local_activity(
                ActivityName.QUOTE_CONVERSION,
                QuoteConversionInput(input.payment_id, input.player_id, input.currency, input.amount_minor,
                                     FxDirection.CREDIT),
                result_type=WalletConversion, **_LOCAL_STEP,
            )
        except (ActivityError, ApplicationError) as err:  # a local activity: see activity_cause
            if is_cancelled_exception(err):
                raise asyncio.CancelledError() from err
            # Nothing has moved or been counted yet: without a rate (or a wallet currency) the deposit cannot be
            # credited, so it ends.
            workflow.logger.error("deposit %s got no wallet currency or FX quote: %s", input.payment_id,
                                  activity_cause(err))
            no_quote = error_type(err) == ErrorType.FX_UNAVAILABLE
            raise Finish(DepositStatus.FAILED, "fx_unavailable" if no_quote else "screening_unavailable") from None
        self._state.fx = conversion.lock

    async def _screen_and_route(self) -> DepositRoute:
        """Screening and routing at once, routing for a low risk (what most deposits score), so the init answer waits
        for the slower step, not the sum. A deposit the rules score higher is routed again for its level (the
        routing file's `risk:` rules read it), and one that waited for KYC with the circuits of now."""
        screening, route = await asyncio.gather(self._screen(), self._route("low"), return_exceptions=True)
        if isinstance(screening, BaseException):  # a refusal (Finish) or a cancel: it decides, whatever the route
            raise screening
        level = screening.risk.level if screening.risk is not None else "low"
        if level != "low" or self._waited_for_kyc:
            return await self._route(level)
        if isinstance(route, BaseException):
            raise route
        return route

    async def _route(self, risk_level: str) -> DepositRoute:
        input = self._input
        try:
            route = await workflow.execute_local_activity(
                ActivityName.ROUTE_DEPOSIT,
                RouteInput(input.method, input.currency, input.amount_minor, input.country, input.payment_id,
                           risk_level, player_id=input.player_id),
                result_type=DepositRoute, **_LOCAL_STEP,
            )
        except (ActivityError, ApplicationError) as err:  # a local activity: see activity_cause
            if is_cancelled_exception(err):
                raise asyncio.CancelledError() from err
            if error_type(err) == ErrorType.ALL_PSPS_DOWN:
                raise Finish(DepositStatus.FAILED, "method_unavailable") from None
            workflow.logger.error("deposit %s could not be routed: %s", input.payment_id, activity_cause(err))
            raise Finish(DepositStatus.FAILED, "routing_unavailable") from None
        if not route.candidates:
            raise Finish(DepositStatus.FAILED, "no_route")
        return route

    async def _screen(self) -> ScreeningResult:
        """Player controls, KYC gates and the risk rules. A deposit whose market or risk asks for verified KYC
        waits for it (the init answer says `kyc_required`), then is screened again; it expires if none comes."""
        input, s = self._input, self._state
        kyc_deadline = workflow.now() + timedelta(seconds=input.kyc_wait_timeout_seconds)
        while True:
            # Screening may count the deposit against the limits (it is retried too), so from here a deposit that
            # fails releases it (a no-op when nothing was counted); a rejected one was never counted.
            self._counts_against_limits = True
            try:
                screening = await workflow.execute_local_activity(
                    ActivityName.SCREEN_DEPOSIT, self._screening_input(), result_type=ScreeningResult, **_LOCAL_STEP,
                )
            except (ActivityError, ApplicationError) as err:
                if is_cancelled_exception(err):
                    raise asyncio.CancelledError() from err
                # No money has moved yet, so a step that keeps failing ends the deposit instead of stalling it.
                workflow.logger.error("deposit %s could not be screened: %s", input.payment_id, activity_cause(err))
                raise Finish(DepositStatus.FAILED, "screening_unavailable") from None
            if screening.risk is not None:
                self._risk_decisions.append(screening.risk)
                s.risk_level = _highest_level(self._risk_decisions)
            if screening.outcome == "allow":
                if s.status == DepositStatus.KYC_REQUIRED:
                    s.failure_code = None
                    set_status(s, DepositStatus.PENDING)
                return screening
            self._counts_against_limits = False
            if screening.outcome != "kyc_required":
                raise Finish(DepositStatus.REJECTED, screening.code)
            remaining_seconds = (kyc_deadline - workflow.now()).total_seconds()
            if remaining_seconds <= 0:
                raise Finish(DepositStatus.EXPIRED, "kyc_timeout")
            s.failure_code = screening.code  # why: the market's gate, or the risk rules' step-up
            if s.status != DepositStatus.KYC_REQUIRED:
                set_status(s, DepositStatus.KYC_REQUIRED)
                self._answered = True  # the init answer says so now; the player verifies, then pays
                self._waited_for_kyc = True
            self._kyc_nudged = False
            await wait_until(lambda: self._kyc_nudged, min(remaining_seconds, KYC_RECHECK_SECONDS))

    async def _assess_instrument(self, answer: PspPaymentView) -> None:
        """The PSP's answer named the card: scored again with its BIN country and fingerprint. A verdict of review
        (or worse — the player is at the PSP already) holds the capture for a person instead of crediting it."""
        if answer.instrument is None and answer.bin_country is None:
            return
        subject = self._screening_input()
        subject.instrument, subject.bin_country = answer.instrument, answer.bin_country
        assessment = await workflow.execute_local_activity(
            ActivityName.ASSESS_DEPOSIT_INSTRUMENT, subject, result_type=RiskAssessment,
            start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
        )
        self._risk_decisions.append(assessment)
        self._card_risk = assessment
        self._state.risk_level = _highest_level(self._risk_decisions)

    def _screening_input(self) -> ScreenDepositInput:
        i = self._input
        return ScreenDepositInput(i.payment_id, i.player_id, i.amount_minor, i.currency, i.method, i.country,
                                  i.device_id, i.ip_address, client_id=i.client_id)

    def _risk_holds_the_capture(self) -> bool:
        """The rules asked for a person; or, on the card, for KYC the player has not passed (the assessing
        activity says `allow` once they have): the player is at the PSP already, so a person looks instead."""
        card_step_up = self._card_risk is not None and self._card_risk.action == "step_up_kyc"
        return card_step_up or any(d.action in ("review", "deny") for d in self._risk_decisions)

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
                sandbox_scenario=input.sandbox_scenario, sandbox_card=input.sandbox_card,
            ))
            self._record_attempt(psp, result.attempt())
            if result.created is Created.TAKEN:
                # Visibility names the PSP that has a deposit still pending (the monitor's transaction_timeout
                # scope); before, it did only from the next status change.
                if workflow.patched("deposit-psp-search-attribute"):
                    publish_search_attributes(self._state)
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

    async def _settle(self, answer: PspAnswer) -> Finish:
        """Credits a capture of exactly the payment asked for; any other answer ends without money, or in review
        with the capture kept for the decision."""
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
            self._capture = answer if answer.status == "captured" else None
            return Finish(DepositStatus.IN_REVIEW, review_reason=mismatch_reason)
        if answer.status != "captured":
            return Finish(DepositStatus.FAILED, answer.failure_code or f"psp_{answer.status}")
        if self._risk_holds_the_capture():
            # The risk rules asked for a person: approve credits the capture, reject refunds it.
            await raise_alert("deposit.risk_review", s.payment_id, {"risk_level": s.risk_level or ""})
            self._capture = answer
            return Finish(DepositStatus.IN_REVIEW, review_reason="risk_review")
        credited = await self._credit(answer, answer.amount_minor)
        if credited is not None:
            self._capture = answer
            return Finish(DepositStatus.IN_REVIEW, review_reason=credited)
        return Finish(DepositStatus.CREDITED)

    async def _credit(self, capture: PspAnswer, credit_minor: int) -> str | None:
        """Credits `credit_minor` of `capture` (and books the PSP's fee for it); the refusal's code when the
        ledger refuses (a bug to look at: the deposit goes to review, never retried into a double credit)."""
        s = self._state
        # The payments row as it will read once credited, written with the credit (no write of its own).
        credited = PaymentFacts.of(s)
        credited.status, credited.updated_at = DepositStatus.CREDITED, workflow.now().isoformat()
        credited.psp, credited.psp_reference, credited.review_reason = capture.psp, capture.psp_reference, None
        try:
            posting = await workflow.execute_local_activity(
                ActivityName.CREDIT_DEPOSIT,
                CreditDepositInput(s.payment_id, s.player_id, capture.psp, credit_minor, capture.currency, s.method,
                                   captured_minor=capture.amount_minor, fee_minor=capture.fee_minor,
                                   facts=credited, fx=s.fx),
                result_type=LedgerPosting, start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
            )
        except (ActivityError, ApplicationError) as err:  # a local activity: see activity_cause
            workflow.logger.error("credit of %s refused by the ledger: %s", s.payment_id, activity_cause(err))
            return error_code(err) or "ledger_error"
        s.credit_transfer_id = posting.transfer_id
        s.captured_amount_minor = capture.amount_minor
        if s.fx is not None and posting.wallet_amount_minor is not None:
            # The lock's figures as the credit booked them: all of the capture, or less on a review's word.
            s.fx.amount_minor, s.fx.wallet_amount_minor = credit_minor, posting.wallet_amount_minor
            if posting.margin_minor is not None:  # a credit recorded before the margin was returned has none
                s.fx.margin_minor = posting.margin_minor
        self._row_written = (credited.status, credited.review_reason, credited.failure_code)
        return None

    # --- helpers ---------------------------------------------------------------------------------------

    def _record_attempt(self, psp: str, attempt: str) -> None:
        """Kept in the state, and in the history as the `psp_attempts` memo (an event per attempt in the UI)."""
        self._state.attempts.append(f"{psp}: {attempt}")
        workflow.upsert_memo({"psp_attempts": self._state.attempts})

    def _on_psp_event(self, event: PspEvent) -> None:
        if self._answered and event.psp == self._state.psp:
            self._advance_psp_status(event.status)

    def _capture_at_a_left_psp(self) -> PspEvent | None:
        """A capture at a PSP this deposit failed over from, not reviewed yet."""
        for event in self._psp.events.events:
            if (event.psp in self._left_psps and event.status == "captured"
                    and (event.psp, event.psp_reference) not in self._strays_seen):
                return event
        return None

    def _capture_under_review(self) -> PspAnswer | None:
        """What an approval would credit and a rejection refund: the stray or mismatched capture, or — when the
        outcome was unknown — a capture the PSP has since reported."""
        if self._capture is not None:
            return self._capture
        view = self._state.review_psp_view
        return view if view is not None and view.status == "captured" else None

    async def _record(self) -> None:
        """The payments table's row (what ops list and filter by); retried until stored."""
        await workflow.execute_local_activity(ActivityName.RECORD_PAYMENT, PaymentFacts.of(self._state),
                                              start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE)
        self._row_written = self._row_now()

    def _row_now(self) -> tuple[str, str | None, str | None]:
        s = self._state
        return s.status, s.review_reason, s.failure_code

    def _advance_psp_status(self, psp_status: str) -> None:
        """Moves the payment forward on a PSP status; a late, lower-rank status is ignored, never applied."""
        if _PSP_STATUS_RANK.get(psp_status, -1) <= _PSP_STATUS_RANK.get(self._psp_status, -1):
            if psp_status != self._psp_status:
                workflow.logger.info("ignoring out-of-order PSP status %s after %s", psp_status, self._psp_status)
            return
        self._psp_status = psp_status
        self._challenged = self._challenged or psp_status == "requires_action"
        mirrored = {"requires_action": DepositStatus.REQUIRES_ACTION, "authorized": DepositStatus.AUTHORIZED}
        if psp_status in mirrored and self._state.status not in DepositStatus.FINAL:
            set_status(self._state, mirrored[psp_status])

    async def _finish(
        self, status: str, *, failure_code: str | None = None, review_reason: str | None = None
    ) -> DepositState:
        await self._end(status, failure_code, review_reason)
        s = self._state
        while True:
            while s.status == DepositStatus.IN_REVIEW:
                await self._review_once()
            self._answered = True
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._psp.verify_claims()
            if (late := self._capture_at_a_left_psp()) is None:
                break
            await self._review_stray(late)  # that capture came in while the steps above ran
        if self._row_written != self._row_now():  # a credit wrote its row with the money
            await self._record()
        _log_ending_without_money(s)
        if s.status == DepositStatus.CREDITED:
            # AML scenarios look at settled money: this deposit may complete a pattern (a case for ops).
            await workflow.execute_local_activity(
                ActivityName.CHECK_AML, AmlTrigger(s.player_id, "deposit", s.payment_id),
                start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
            )
        metrics.deposit_ended(status=s.status, method=s.method, psp=s.psp, currency=s.currency, country=s.country,
                              device_class=self._input.device_class, failure_code=s.failure_code,
                              challenged=self._challenged, created_at=s.created_at, updated_at=s.updated_at)
        return s

    async def _end(self, status: str, failure_code: str | None = None, review_reason: str | None = None) -> None:
        """Sets the deposit's ending (or review); a stray capture at a left PSP always sends it to review."""
        await self._psp.verify_claims()
        s = self._state
        if failure_code:
            s.failure_code = failure_code
        s.review_reason = review_reason
        if review_reason == "psp_status_unknown":
            # Whether the PSP has (or took) the money cannot be learned: a person must look, not a timer.
            workflow.logger.warning("payment %s: outcome at %s unknown; to review", s.payment_id, s.psp)
            await raise_alert("deposit.psp_status_unknown", s.payment_id,
                              {"psp": s.psp or "", "amount_minor": str(s.amount_minor), "currency": s.currency})
        stray = self._capture_at_a_left_psp()
        money_stayed = stray is not None or status not in (
            DepositStatus.FAILED, DepositStatus.EXPIRED, DepositStatus.REJECTED, DepositStatus.REFUNDED)
        if not money_stayed:
            await self._release_limit()
        set_status(self._state, status)
        if stray is not None:
            await self._review_stray(stray)
        self._answered = True

    async def _review_stray(self, capture: PspEvent) -> None:
        """A PSP we failed over from took the money after all (its answer was lost, or it processed our request
        late): the player may have paid twice. Whatever else happened, a person must look (and refund)."""
        s = self._state
        payment_id = self._input.payment_id
        workflow.logger.warning("payment %s: captured at %s, which it had failed over from", payment_id, capture.psp)
        self._strays_seen.add((capture.psp, capture.psp_reference))
        if self._stray is None:  # restored once the stray capture is refunded
            self._before_stray = (s.status, s.review_reason)
        self._capture = self._stray = capture
        s.review_reason = "captured_at_left_psp"
        # In review before the alert's await, so a query in between never sees the ending `_end` just set; the
        # search attributes follow the alert, the order recorded histories hold.
        s.status = DepositStatus.IN_REVIEW
        await raise_alert("deposit.captured_at_left_psp", payment_id, psp_details(capture))
        set_status(s, DepositStatus.IN_REVIEW)

    async def _release_limit(self) -> None:
        if not self._counts_against_limits:
            return
        # No money stayed, so the deposit no longer counts against the player's limits.
        self._counts_against_limits = False
        await workflow.execute_activity(
            ActivityName.RELEASE_DEPOSIT_LIMIT, self._input.payment_id,
            start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
        )

    # --- review ----------------------------------------------------------------------------------------

    async def _review_once(self) -> None:
        """One round of review: show the PSP's own view, wait for a decision (or the PSP's word when the outcome
        was unknown), carry it out. The deposit leaves review, or stays in it for another round."""
        s = self._state
        s.review_psp_view = await self._psp_view()
        await self._record()
        if (evidence := await self._await_decision()) is not None:
            workflow.logger.info("payment %s: the PSP's word decides the review", s.payment_id)
            s.review_reason = None
            # A create whose answer was lost left no reference: the PSP's own event names it.
            s.psp_reference = s.psp_reference or evidence.psp_reference
            ending = await self._settle(evidence)
            await self._end(ending.status, ending.failure_code, ending.review_reason)
            self._review = None  # a decision that came meanwhile is moot: its update returns the outcome
            return
        decision = self._review
        assert decision is not None
        s.reviewed_by = decision.reviewer
        await self._audit_review(decision)
        try:
            if decision.decision == "approve":
                await self._approve(decision.amount_minor)
            else:
                await self._reject()
        finally:
            self._review = None  # the update returns; a deposit still in review takes a new decision

    async def _psp_view(self) -> PspPaymentView | None:
        """The PSP's own view of what is under review (the stray capture's PSP, else the payment's)."""
        psp = self._capture.psp if self._capture is not None else self._state.psp
        if psp is None:
            return None
        found = await self._psp.look_up(psp)
        return found.view

    async def _await_decision(self) -> PspEvent | None:
        """Waits for an ops decision; raises an alert once the review is overdue and keeps waiting. When the
        outcome was unknown, a verified final event from the PSP that arrives first is returned instead."""
        s = self._state
        alert_at = workflow.now() + timedelta(seconds=self._input.review_alert_seconds)
        alerted = False

        def woken() -> bool:
            return self._review is not None or bool(self._psp.events.claims)

        while True:
            await self._psp.verify_claims()
            if s.review_reason == "psp_status_unknown" and s.psp and (event := self._psp.events.final(s.psp)):
                return event
            if self._review is not None:
                return None
            if alerted:
                await workflow.wait_condition(woken)
            elif not await wait_until(woken, max(0.0, (alert_at - workflow.now()).total_seconds())):
                alerted = True
                await raise_alert("deposit.review_overdue", s.payment_id,
                                  {"review_reason": s.review_reason or "", "since": s.updated_at})

    async def _approve(self, amount_minor: int | None) -> None:
        """Credits what the PSP captured, or the smaller amount ops entered (the rest is refunded at the PSP)."""
        s = self._state
        capture = self._capture_under_review()
        if capture is None or (amount_minor or 0) > capture.amount_minor:  # the PSP's view changed since validation
            await raise_alert("deposit.review_not_applied", s.payment_id, {"decision": "approve"})
            return  # stays in review
        credit_minor = amount_minor or capture.amount_minor
        if (refused := await self._credit(capture, credit_minor)) is not None:
            await raise_alert("deposit.ledger_refused", s.payment_id, {"code": refused})
            return  # stays in review
        s.psp, s.psp_reference = capture.psp, capture.psp_reference
        self._capture = self._stray = None
        await self._end(DepositStatus.CREDITED)
        if capture.amount_minor > credit_minor:
            rest = await self._refund(capture, capture.amount_minor - credit_minor, "approved for less than captured")
            if rest.status != RefundStatus.SUCCEEDED:  # the PSP keeps money we credited no one with
                await raise_alert("deposit.refund_failed", s.payment_id,
                                  {"refund_id": rest.refund_id, "failure_code": rest.failure_code or rest.status})

    async def _reject(self) -> None:
        """Refunds whatever the PSP captured, at the PSP that took it; closes a deposit nothing was captured for."""
        s = self._state
        capture = self._capture_under_review()
        if capture is None and s.psp:
            # Nothing may be closed while the PSP could still take it: its own answer to a cancel decides.
            outcome = await self._psp.cancel(s.psp, heed_events=False)
            if outcome.ending is Ending.UNKNOWN:
                await raise_alert("deposit.psp_status_unknown", s.payment_id, {"psp": s.psp, "step": "reject"})
                return  # stays in review: the PSP could not confirm
            if outcome.answer is not None and outcome.answer.status == "captured":
                capture = outcome.answer
        if capture is None:
            await self._end(DepositStatus.REJECTED, failure_code="review_rejected")
            return
        if capture is not self._stray and capture.currency == s.currency:
            # The capture joins the payment's record (and its fee the ledger) before it is refunded.
            try:
                await workflow.execute_local_activity(
                    ActivityName.RECORD_UNCREDITED_CAPTURE,
                    UncreditedCapture(s.payment_id, capture.psp, s.method, capture.amount_minor, capture.currency,
                                      capture.fee_minor),
                    start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
                )
            except (ActivityError, ApplicationError) as err:  # a local activity: see activity_cause
                workflow.logger.error("capture of %s refused by the ledger: %s", s.payment_id, activity_cause(err))
                await raise_alert("deposit.ledger_refused", s.payment_id, {"code": error_code(err) or "ledger_error"})
                return  # stays in review
        refund = await self._refund(capture, capture.amount_minor, f"review rejected: {s.review_reason}")
        if refund.status != RefundStatus.SUCCEEDED:
            await raise_alert("deposit.refund_failed", s.payment_id,
                              {"refund_id": refund.refund_id, "failure_code": refund.failure_code or ""})
            s.review_reason = "refund_failed"
            return  # stays in review: the money is still at the PSP
        if capture is self._stray:  # the stray capture is gone: the deposit is as it was before it came
            self._capture = self._stray = None
            status, review_reason = self._before_stray
            await self._end(status, review_reason=review_reason)
            return
        self._capture = None
        await self._end(DepositStatus.REFUNDED, failure_code="review_rejected")

    async def _refund(self, capture: PspAnswer, amount_minor: int, reason: str) -> RefundState:
        """Refunds money the PSP captured and the player was never credited with: a child refund workflow (left
        running should this deposit ever be terminated or cancelled, since it may hold the PSP's answer). One that
        ends abnormally reads as not succeeded, so the deposit stays in review."""
        s = self._state
        refund_id = f"ref_{workflow.uuid4().hex[:24]}"
        s.refund_ids.append(refund_id)
        try:
            return await self._refund_child(refund_id, capture, amount_minor, reason)
        except ChildWorkflowError as err:  # terminated or failed: whether the PSP refunded is for a person to see
            workflow.logger.error("refund %s of %s ended abnormally: %s", refund_id, s.payment_id, err.cause)
            return RefundState.started(RefundInput(refund_id, s.payment_id, s.client_id, s.player_id, amount_minor,
                                                   capture.currency, reason), workflow.now().isoformat())

    async def _refund_child(self, refund_id: str, capture: PspAnswer, amount_minor: int, reason: str) -> RefundState:
        s, input = self._state, self._input
        return await workflow.execute_child_workflow(
            RefundWorkflow.run,
            RefundInput(refund_id=refund_id, payment_id=s.payment_id, client_id=s.client_id, player_id=s.player_id,
                        amount_minor=amount_minor, currency=capture.currency, reason=reason, funding="uncredited",
                        psp=capture.psp, psp_payment_reference=capture.psp_reference,
                        webhook_timeout_seconds=input.refund_webhook_timeout_seconds,
                        status_poll_attempts=input.refund_status_poll_attempts,
                        status_poll_interval_seconds=input.refund_status_poll_interval_seconds),
            id=RefundWorkflow.workflow_id(refund_id), parent_close_policy=ParentClosePolicy.ABANDON,
            cancellation_type=ChildWorkflowCancellationType.ABANDON,
        )

    async def _audit_review(self, decision: ReviewDecision) -> None:
        """Written by the workflow itself, so a decision from the Temporal UI or CLI is audited too."""
        details = {"review_reason": self._state.review_reason or ""}
        if decision.reason:
            details["reason"] = decision.reason
        if decision.amount_minor is not None:
            details["amount_minor"] = str(decision.amount_minor)
        await workflow.execute_activity(ActivityName.RECORD_AUDIT, AuditEntry(
            idempotency_key=f"{workflow.info().workflow_id}:review:{self._review_update_id}",
            actor=decision.reviewer, action=f"payment.review.{decision.decision}",
            subject=f"payment:{self._state.payment_id}", details=details, incident_id=decision.incident_id,
        ), start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE)

