"""The PSP step, shared by deposits (money in) and payouts (money out): create the record at a PSP, learn its
outcome, and the one rule for an outcome that never comes.

- **Create** under one Idempotency-Key (our id), one activity per try so every try's error is seen. A try that
  may have reached the PSP (a timeout, a broken connection, a 5xx) is remembered even when later tries are
  refused outright, and the PSP is asked before the caller goes elsewhere: moving on while the PSP may hold the
  record could take or pay the money twice.
- **Outcome**: the PSP's verified webhook, or its status look-up (asked on a re-check nudge, and polled on the
  PSP's `status_poll` schedule once the webhook is late). A `psp_event` signal is a claim, not evidence: it names
  an event of the webhook inbox, which an activity reads back; a claim the inbox does not back (or a signal that
  does not even decode) moves nothing — it makes us ask the PSP, and raises an alert.
- **No outcome**: cancel at the PSP. Money is released (the hold voided, the deposit expired) only when the PSP
  confirms the record is cancelled or never existed; if it cannot confirm (its look-ups and cancels keep failing,
  or it refuses the cancel while the record is still open), the outcome is UNKNOWN and the caller keeps the money
  where it is and sends the case to a person.

Deterministic: activities are called by name; every wait is a durable timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Callable, Optional

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

from payloop.psp_decision import PspDecision
from workflows.common import activity_cause, error_code, raise_alert, wait_until
from workflows.retry_policies import (
    DATABASE_STEP_TIMEOUT, ONE_TRY, PSP_CALL_TIMEOUT, PSP_CREATE_TRIES, PSP_LOOK_UP, RECHECK_MIN_INTERVAL_SECONDS,
    UNTIL_DONE,
)
from workflows.types import (
    ActivityName, PspEvent, PspEvidence, PspPaymentView, PspPayoutView, PspRef, PspRefundView, ReadPspEventInput,
    StatusPollPlan,
)

# Transient answers that mean the PSP did not take the request at all (refused, or never reached).
NOT_TAKEN_CODES = frozenset({"psp_unavailable", "psp_unreachable", "circuit_open"})
_REFUSALS = frozenset({PspDecision.HARD_DECLINE, PspDecision.STEP_UP, PspDecision.REJECTED})


@dataclass(frozen=True)
class PspCalls:
    """What differs between a payment, a payout and a refund at a PSP: the activities and the statuses that end
    it. A refund cannot be cancelled (`cancel` None): the end-of-wait rule then only asks the PSP once more."""

    workflow: str  # "deposit" | "withdrawal" | "refund": the prefix of the alerts the step raises
    kind: str  # the webhook events' kind (psp.base.WebhookEvent.kind) that are evidence for this record
    create: str
    look_up: str
    cancel: str | None
    view_type: type
    final_statuses: frozenset[str]
    create_summary: str  # shown in the Temporal UI next to each create try


PAYMENT_CALLS = PspCalls(
    "deposit", "payment", ActivityName.CREATE_PSP_PAYMENT, ActivityName.GET_PSP_PAYMENT,
    ActivityName.CANCEL_PSP_PAYMENT, PspPaymentView, frozenset({"captured", "failed", "cancelled", "expired"}),
    "create",
)
PAYOUT_CALLS = PspCalls(
    "withdrawal", "payout", ActivityName.CREATE_PSP_PAYOUT, ActivityName.GET_PSP_PAYOUT,
    ActivityName.CANCEL_PSP_PAYOUT, PspPayoutView, frozenset({"paid", "failed", "cancelled"}), "pay out",
)
REFUND_CALLS = PspCalls(
    "refund", "refund", ActivityName.CREATE_PSP_REFUND, ActivityName.GET_PSP_REFUND, None, PspRefundView,
    frozenset({"succeeded", "failed"}), "refund",
)
PspAnswer = PspPaymentView | PspPayoutView | PspRefundView | PspEvent


class Created(Enum):
    TAKEN = "taken"  # the PSP has it: `view` is its answer
    NOT_TAKEN = "not_taken"  # the PSP does not have it: it said so, or no try can have reached it
    REFUSED = "refused"  # a final no: a hard decline, a step-up request, a refused request
    UNKNOWN = "unknown"  # a try may have reached it, and the PSP could not tell us whether it has it


@dataclass(frozen=True)
class CreateResult:
    created: Created
    view: Any = None  # TAKEN: the PSP's answer (PspPaymentView / PspPayoutView)
    decision: PspDecision | None = None  # what the last try's error meant (None: the first try was taken)
    code: str | None = None  # the last try's error code
    maybe_in_flight: bool = False  # NOT_TAKEN after a try that may have reached the PSP: it could still land

    def attempt(self) -> str:
        """For the `psp_attempts` memo: "accepted", "failover (psp_unavailable)", …"""
        word = {
            Created.TAKEN: "accepted after all" if self.decision else "accepted",
            Created.NOT_TAKEN: "failover",
            Created.REFUSED: str(self.decision),
            Created.UNKNOWN: "outcome unknown",
        }[self.created]
        return f"{word} ({self.code})" if self.code else word


class Ending(Enum):
    ANSWERED = "answered"  # the PSP's final word: `answer`
    CANCELLED = "cancelled"  # no word in time; the PSP confirmed our cancel (or that it never had the record)
    UNKNOWN = "unknown"  # no word, and the PSP could not confirm a cancel: nothing may be released


@dataclass(frozen=True)
class PspOutcome:
    ending: Ending
    answer: PspAnswer | None = None


@dataclass(frozen=True)
class LookUp:
    """The PSP's answer to "do you have it?": its view, or that it does not know it; neither when it did not answer."""

    view: Any = None
    absent: bool = False


@dataclass(frozen=True)
class PollSchedule:
    attempts: int
    first_interval_seconds: float
    backoff: float
    max_interval_seconds: float

    @staticmethod
    def of(plan: StatusPollPlan, default_attempts: int, default_interval_seconds: float) -> PollSchedule:
        """The PSP's `status_poll` plan, with the workflow's settings where the plan leaves them open."""
        return PollSchedule(plan.attempts or default_attempts,
                            min(default_interval_seconds, plan.max_interval_seconds),
                            plan.backoff, plan.max_interval_seconds)


class PspEvents:
    """A record's PSP events: the claims signalled (each names an inbox event; None for a signal that did not
    decode), the events verified from the inbox (once per PSP + event id: PSPs redeliver, and two PSPs may use
    the same event id), and the nudges (unverified webhooks) that ask the workflow to look the record up itself.

    `merchant_reference` and `kind`: the record the events must be about (our id, and payment / payout / refund /
    dispute); `alert_prefix` names the alerts (e.g. "deposit.unverified_signal")."""

    def __init__(
        self, merchant_reference: str, kind: str, alert_prefix: str, final_statuses: frozenset[str],
        on_event: Callable[[PspEvent], None] = lambda event: None,
    ) -> None:
        self.merchant_reference, self.kind, self.alert_prefix = merchant_reference, kind, alert_prefix
        self.final_statuses = final_statuses
        self.claims: list[PspEvidence | None] = []
        self.checked: set[tuple[str, str]] = set()
        self.events: list[PspEvent] = []
        self.recheck_requested = False
        self._on_event = on_event
        self._unverified_alerted = False

    async def verify_claims(self) -> None:
        """Reads each claimed event back from the inbox, where only verified deliveries are stored: only those
        join the events. A claim without such evidence moves nothing; it makes us ask the PSP, and is alerted."""
        while self.claims:
            claim = self.claims.pop(0)
            if claim is not None and (claim.psp, claim.event_id) in self.checked:
                continue  # a redelivery, or a replayed dead letter
            event = None if claim is None else await workflow.execute_local_activity(
                ActivityName.READ_PSP_EVENT,
                ReadPspEventInput(claim.psp, claim.event_id, self.merchant_reference, self.kind),
                result_type=Optional[PspEvent], start_to_close_timeout=DATABASE_STEP_TIMEOUT, retry_policy=UNTIL_DONE,
            )
            if claim is not None:
                self.checked.add((claim.psp, claim.event_id))
            if event is not None:
                self.events.append(event)
                self._on_event(event)
                continue
            workflow.logger.warning("%s: a psp_event signal the inbox does not back", self.merchant_reference)
            self.recheck_requested = True
            if not self._unverified_alerted:  # one alert per record is enough for a person to look
                self._unverified_alerted = True
                details = {"psp": claim.psp, "event_id": claim.event_id} if claim else {"signal": "undecodable"}
                await raise_alert(f"{self.alert_prefix}.unverified_signal", self.merchant_reference, details)

    def claim(self, signal: RawValue) -> None:
        """Queues a `psp_event` signal for verification, whatever its shape."""
        try:
            evidence = workflow.payload_converter().from_payload(signal.payload, PspEvidence)
            valid = isinstance(evidence.psp, str) and isinstance(evidence.event_id, str)
        except Exception:  # anything may arrive through Temporal's frontend: it is a claim we cannot read
            evidence, valid = None, False
        self.claims.append(evidence if valid else None)

    def final(self, psp: str) -> PspEvent | None:
        """The first verified final event from `psp` (pure: used as a wait condition)."""
        for event in self.events:
            if event.psp == psp and event.status in self.final_statuses:
                return event
        return None


class PspStep:
    """One record (a payment, a payout or a refund, by our id) at the PSPs: its create tries, look-ups, events and
    cancel."""

    def __init__(
        self, calls: PspCalls, merchant_reference: str, on_event: Callable[[PspEvent], None] = lambda event: None
    ) -> None:
        """`on_event` sees each event once verified (a deposit mirrors `authorized`)."""
        self.calls = calls
        self.merchant_reference = merchant_reference
        self.events = PspEvents(merchant_reference, calls.kind, calls.workflow, calls.final_statuses, on_event)
        self._last_look_up_at: datetime | None = None

    async def verify_claims(self) -> None:
        await self.events.verify_claims()

    async def create(self, psp: str, request: object) -> CreateResult:
        """Creates the record at `psp`: PSP_CREATE_TRIES tries, then a look-up if any try may have reached it."""
        maybe_reached = False
        waits_seconds = PSP_CREATE_TRIES.waits_seconds()
        for try_index in range(PSP_CREATE_TRIES.tries):
            try:
                return CreateResult(Created.TAKEN, await workflow.execute_activity(
                    self.calls.create, request, result_type=self.calls.view_type,
                    start_to_close_timeout=PSP_CALL_TIMEOUT, retry_policy=ONE_TRY,
                    summary=f"{self.calls.create_summary} at {psp}",
                ))
            except ActivityError as err:
                decision, code, retryable = decision_of(err), error_code(err), not _non_retryable(err)
            if decision is not PspDecision.RETRY:
                break
            # A timeout, a broken connection or a 5xx may have left the record at the PSP: that stays so even
            # when a later try is refused outright.
            maybe_reached = maybe_reached or code not in NOT_TAKEN_CODES
            if not retryable or try_index == len(waits_seconds):
                break
            await workflow.sleep(timedelta(seconds=waits_seconds[try_index]))
        if not maybe_reached:  # every answer was the PSP's own, or no try reached it: it does not have the record
            if decision in _REFUSALS:
                return CreateResult(Created.REFUSED, decision=decision, code=code)
            return CreateResult(Created.NOT_TAKEN, decision=decision, code=code)
        # An earlier try may have reached the PSP, and a later answer (a refusal, "go elsewhere", a 5xx) may be about
        # that try still in flight there: ask before the caller ends it or goes elsewhere.
        found = await self.look_up(psp)
        if found.view is not None:
            return CreateResult(Created.TAKEN, found.view, decision, code)
        if not found.absent:
            return CreateResult(Created.UNKNOWN, decision=decision, code=code)
        if decision in _REFUSALS:
            return CreateResult(Created.REFUSED, decision=decision, code=code)
        return CreateResult(Created.NOT_TAKEN, decision=decision, code=code, maybe_in_flight=True)

    async def look_up(self, psp: str) -> LookUp:
        self._last_look_up_at = workflow.now()
        try:
            return LookUp(await workflow.execute_activity(
                self.calls.look_up, PspRef(psp, self.merchant_reference), result_type=self.calls.view_type,
                start_to_close_timeout=PSP_CALL_TIMEOUT, retry_policy=PSP_LOOK_UP,
            ))
        except ActivityError as err:
            if decision_of(err) is PspDecision.NOT_FOUND:
                return LookUp(absent=True)
            workflow.logger.warning("look-up of %s at %s failed: %s", self.merchant_reference, psp, err.cause)
            return LookUp()

    async def outcome(
        self, psp: str, schedule: PollSchedule, *, webhook_timeout_seconds: float,
        on_status: Callable[[str], None] = lambda status: None,
    ) -> PspOutcome:
        """The record's final outcome at `psp`: its webhook, else its polled status, else the cancel rule.
        `on_status` sees every status a look-up reports (a deposit mirrors `authorized`)."""
        if (answer := await self._wait_for_final(psp, webhook_timeout_seconds)) is not None:
            return PspOutcome(Ending.ANSWERED, answer)
        interval_seconds = schedule.first_interval_seconds
        for poll in range(schedule.attempts):
            found = await self.look_up(psp)
            if found.view is not None:
                on_status(found.view.status)
                if found.view.status in self.calls.final_statuses:
                    return PspOutcome(Ending.ANSWERED, found.view)
            # A webhook may still land while we wait between polls.
            if poll + 1 < schedule.attempts and (answer := await self._wait_for_final(psp, interval_seconds)):
                return PspOutcome(Ending.ANSWERED, answer)
            interval_seconds = min(interval_seconds * schedule.backoff, schedule.max_interval_seconds)
        return await self.cancel(psp)

    async def cancel(self, psp: str, *, heed_events: bool = True) -> PspOutcome:
        """The end-of-wait rule: cancel at the PSP; CANCELLED only when the PSP confirms. A PSP that settled
        meanwhile says so in its answer to the cancel (ANSWERED). What cannot be cancelled (a refund) is looked up
        once more, and never CANCELLED: having taken it, a PSP that cannot find it may still make it.
        `heed_events=False`: the PSP's answer to the
        cancel decides even when a final event came (a reviewer closing a payment whose event did not match)."""
        await self.verify_claims()
        if heed_events and (event := self.events.final(psp)) is not None:
            return PspOutcome(Ending.ANSWERED, event)
        if self.calls.cancel is None:
            found = await self.look_up(psp)
            if found.view is not None and found.view.status in self.calls.final_statuses:
                return PspOutcome(Ending.ANSWERED, found.view)
            return PspOutcome(Ending.UNKNOWN)
        try:
            view = await workflow.execute_activity(
                self.calls.cancel, PspRef(psp, self.merchant_reference), result_type=self.calls.view_type,
                start_to_close_timeout=PSP_CALL_TIMEOUT, retry_policy=PSP_LOOK_UP, summary=f"cancel at {psp}",
            )
        except ActivityError as err:
            if decision_of(err) is PspDecision.NOT_FOUND:  # it never reached the PSP: nothing to cancel
                return PspOutcome(Ending.CANCELLED)
            workflow.logger.warning("cancel of %s at %s failed: %s", self.merchant_reference, psp, err.cause)
            return PspOutcome(Ending.UNKNOWN)
        if view.status == "cancelled":
            return PspOutcome(Ending.CANCELLED, view)
        if view.status in self.calls.final_statuses:
            return PspOutcome(Ending.ANSWERED, view)
        # The PSP refused the cancel and the record is still open there: it may yet settle.
        workflow.logger.warning("%s refused to cancel %s (%s)", psp, self.merchant_reference, view.status)
        return PspOutcome(Ending.UNKNOWN)

    async def _wait_for_final(self, psp: str, timeout_seconds: float) -> PspAnswer | None:
        """A verified final event within the timeout. Claims are verified as they come; a re-check nudge makes
        us ask the PSP, unless we asked it less than RECHECK_MIN_INTERVAL_SECONDS ago (nudges cost the history
        nothing more then, however many arrive)."""
        deadline = workflow.now() + timedelta(seconds=timeout_seconds)
        while True:
            await self.verify_claims()
            if (event := self.events.final(psp)) is not None:
                return event
            if self.events.recheck_requested:
                self.events.recheck_requested = False
                if not self._looked_up_recently():
                    found = await self.look_up(psp)
                    if found.view is not None and found.view.status in self.calls.final_statuses:
                        return found.view
                    continue
            remaining_seconds = (deadline - workflow.now()).total_seconds()
            if remaining_seconds <= 0 or not await wait_until(
                lambda: bool(self.events.claims) or self.events.recheck_requested, remaining_seconds
            ):
                return None

    def _looked_up_recently(self) -> bool:
        return self._last_look_up_at is not None and (
            workflow.now() - self._last_look_up_at).total_seconds() < RECHECK_MIN_INTERVAL_SECONDS


class PspSignals:
    """The signals every workflow that hears PSP events (`self._psp_events`) takes, declared once for all."""

    _psp_events: PspEvents

    @workflow.signal
    def psp_event(self, evidence: RawValue) -> None:
        """Names a stored webhook (PspEvidence); the workflow reads the event back before it counts."""
        self._psp_events.claim(evidence)

    @workflow.signal
    def status_recheck(self) -> None:
        """An unverified webhook named this record: ask its PSP (never take the webhook's word)."""
        self._psp_events.recheck_requested = True


def decision_of(err: BaseException) -> PspDecision:
    """What a PSP activity's failure means. A timeout or a crash says nothing about the PSP: retry."""
    cause = activity_cause(err)
    if isinstance(cause, ApplicationError) and cause.type in PspDecision._value2member_map_:
        return PspDecision(cause.type)
    return PspDecision.RETRY


def _non_retryable(err: BaseException) -> bool:
    cause = activity_cause(err)
    return isinstance(cause, ApplicationError) and cause.non_retryable
