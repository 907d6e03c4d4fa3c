"""Small deterministic helpers shared by the payment workflows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.types import ActivityName, Alert


class PspOutcome(Protocol):
    psp_reference: str
    currency: str
    amount_minor: int


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


def error_type(err: ActivityError) -> str | None:
    return err.cause.type if isinstance(err.cause, ApplicationError) else None


def error_code(err: ActivityError) -> str | None:
    """The stable code an activity put in its ApplicationError's details (e.g. a PSP's decline code)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], str):
        return cause.details[0]
    return None
