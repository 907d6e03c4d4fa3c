"""Small deterministic helpers shared by the payment workflows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import metrics
from workflows import search_attributes as sa
from workflows.retry_policies import DATABASE_STEP_TIMEOUT, UNTIL_DONE
from workflows.types import ActivityName, Alert

T = TypeVar("T")


class PspRecord(Protocol):
    """A PSP's word on a payment or payout: its answer to a call, or a webhook."""

    psp_reference: str
    currency: str
    amount_minor: int
    status: str


class Finish(Exception):
    """Ends a workflow before its PSP outcome, with a final status (the workflow's `run` turns it into one)."""

    def __init__(self, status: str, failure_code: str | None = None, *, review_reason: str | None = None) -> None:
        super().__init__(status)
        self.status, self.failure_code, self.review_reason = status, failure_code, review_reason


class PaymentState(Protocol):
    """What deposits' and payouts' states share: what the Temporal UI filters them by."""

    status: str
    updated_at: str
    player_id: str
    amount_minor: int
    currency: str
    psp: str | None
    method: str | None


# The review queue a state's record waits in (a metric's label).
_REVIEW_KINDS = {"DepositState": "deposit", "WithdrawalState": "payout", "RefundState": "refund"}


def set_status(state: PaymentState, status: str) -> None:
    if status == "in_review" and state.status != status:
        metrics.review_opened(_REVIEW_KINDS.get(type(state).__name__, "other"), getattr(state, "review_reason", None))
    state.status = status
    state.updated_at = workflow.now().isoformat()
    publish_search_attributes(state)


def publish_search_attributes(state: PaymentState) -> None:
    """What the Temporal UI filters payments by, kept current on every status change."""
    updates = [
        sa.PAYMENT_STATUS.value_set(state.status),
        sa.PLAYER_ID.value_set(state.player_id),
        sa.PAYMENT_AMOUNT_MINOR.value_set(state.amount_minor),
        sa.PAYMENT_CURRENCY.value_set(state.currency),
    ]
    if state.psp:
        updates.append(sa.PAYMENT_PSP.value_set(state.psp))
    if state.method:
        updates.append(sa.PAYMENT_METHOD.value_set(state.method))
    workflow.upsert_search_attributes(updates)


async def run_through_cancels(work: Coroutine[Any, Any, T], what: str) -> T:
    """Runs `work` to its end even when the workflow is asked to cancel (logged, ignored): for workflows whose every
    ending must settle money (a hold, a reservation), where stopping half-way would leave it unresolved."""
    task = asyncio.ensure_future(work)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            workflow.logger.warning("%s: cancel ignored; it settles money and runs to its end", what)


async def wait_until(condition: Callable[[], bool], timeout_seconds: float) -> bool:
    """True when `condition` became true, False when the (durable) timer ran out first."""
    try:
        await workflow.wait_condition(condition, timeout=timedelta(seconds=timeout_seconds))
        return True
    except TimeoutError:
        return False


def mismatch(outcome: PspRecord, *, psp_reference: str | None, currency: str, amount_minor: int) -> str | None:
    """Why a PSP's final answer does not match what was asked; None when it does."""
    if outcome.psp_reference != psp_reference:
        return "reference_mismatch"
    if outcome.currency != currency:
        return "currency_mismatch"
    if outcome.amount_minor != amount_minor:
        return "amount_mismatch"
    return None


async def raise_alert(kind: str, reference: str, details: dict[str, str]) -> None:
    """Records an alert for people (counted on the worker's metrics); retried until stored."""
    await workflow.execute_activity(
        ActivityName.RAISE_ALERT, Alert(kind, reference, details), start_to_close_timeout=DATABASE_STEP_TIMEOUT,
        retry_policy=UNTIL_DONE,
    )
    metrics.alert_raised(kind)


def psp_details(record: PspRecord) -> dict[str, str]:
    """What an alert about a PSP's word carries (ids and money, nothing personal)."""
    return {"psp_reference": record.psp_reference, "currency": record.currency,
            "amount_minor": str(record.amount_minor), "status": record.status}


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
