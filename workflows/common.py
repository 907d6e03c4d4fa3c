"""Small deterministic helpers shared by the payment workflows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import search_attributes as sa
from workflows.types import ActivityName, Alert, PspEventSignal


class PspOutcome(Protocol):
    psp_reference: str
    currency: str
    amount_minor: int
    status: str


V = TypeVar("V", bound=PspOutcome)


class PspEvents:
    """A payment's PSP events as signalled, deduplicated by event id (PSPs redeliver; a replayed dead letter may
    arrive again), and the nudges (unverified webhooks) that ask the workflow to look the payment up itself."""

    def __init__(self, final_statuses: frozenset[str]) -> None:
        self.final_statuses = final_statuses
        self.seen_ids: set[str] = set()
        self.events: list[PspEventSignal] = []
        self.recheck_requested = False

    def add(self, event: PspEventSignal) -> bool:
        """False for an event already seen."""
        if event.event_id in self.seen_ids:
            return False
        self.seen_ids.add(event.event_id)
        self.events.append(event)
        return True

    def final(self, psp: str | None) -> PspEventSignal | None:
        """The first final event from `psp` (pure: used as a wait condition)."""
        for event in self.events:
            if event.psp == psp and event.status in self.final_statuses:
                return event
        return None

    async def wait_for_final(
        self, psp: Callable[[], str | None], seconds: float, lookup: Callable[[], Awaitable[V | None]]
    ) -> V | PspEventSignal | None:
        """The final webhook within `seconds`; a nudge makes us ask the PSP (`lookup`) meanwhile."""
        deadline = workflow.now() + timedelta(seconds=seconds)
        while (remaining := (deadline - workflow.now()).total_seconds()) > 0:
            await wait_until(lambda: self.final(psp()) is not None or self.recheck_requested, remaining)
            if (event := self.final(psp())) is not None:
                return event
            if not self.recheck_requested:
                return None
            self.recheck_requested = False
            view = await lookup()
            if view is not None and view.status in self.final_statuses:
                return view
        return None


# Transient answers that mean the PSP did not take the request at all (refused, or never reached).
NOT_TAKEN_CODES = frozenset({"psp_unavailable", "psp_unreachable", "circuit_open"})


def publish_search_attributes(
    *, status: str, player_id: str, amount_minor: int, currency: str, psp: str | None, method: str | None
) -> None:
    """What the Temporal UI filters payments by, kept current on every status change."""
    updates = [
        sa.PAYMENT_STATUS.value_set(status),
        sa.PLAYER_ID.value_set(player_id),
        sa.PAYMENT_AMOUNT_MINOR.value_set(amount_minor),
        sa.PAYMENT_CURRENCY.value_set(currency),
    ]
    if psp:
        updates.append(sa.PAYMENT_PSP.value_set(psp))
    if method:
        updates.append(sa.PAYMENT_METHOD.value_set(method))
    workflow.upsert_search_attributes(updates)


async def wait_until(condition: Callable[[], bool], timeout_seconds: float) -> bool:
    """True when `condition` became true, False when the (durable) timer ran out first."""
    try:
        await workflow.wait_condition(condition, timeout=timedelta(seconds=timeout_seconds))
        return True
    except TimeoutError:
        return False


def mismatch(outcome: PspOutcome, *, psp_reference: str | None, currency: str, amount_minor: int) -> str | None:
    """Why a PSP's final answer does not match what was asked; None when it does."""
    if outcome.psp_reference != psp_reference:
        return "reference_mismatch"
    if outcome.currency != currency:
        return "currency_mismatch"
    if outcome.amount_minor != amount_minor:
        return "amount_mismatch"
    return None


async def raise_alert(kind: str, reference: str, outcome: PspOutcome) -> None:
    """Records an alert for people (counted on /metrics); retried until stored."""
    details = {"psp_reference": outcome.psp_reference, "currency": outcome.currency,
               "amount_minor": str(outcome.amount_minor)}
    await workflow.execute_activity(
        ActivityName.RAISE_ALERT, Alert(kind, reference, details), start_to_close_timeout=timedelta(seconds=10),
        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=30)),
    )


def activity_cause(err: BaseException) -> BaseException | None:
    """The activity's own error: an ActivityError's cause, or (a local activity's failure may arrive so) the
    ApplicationError itself."""
    return err.cause if isinstance(err, ActivityError) else err


def error_type(err: BaseException) -> str | None:
    cause = activity_cause(err)
    return cause.type if isinstance(cause, ApplicationError) else None


def error_code(err: BaseException) -> str | None:
    """The stable code an activity put in its ApplicationError's details (e.g. a PSP's decline code)."""
    cause = activity_cause(err)
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], str):
        return cause.details[0]
    return None
