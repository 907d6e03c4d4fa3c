"""PSP calls from activities: connector errors become typed ApplicationErrors the workflows' retry policies
decide on (declines and rejected requests never retry; transient errors do).

An expected transport failure (the PSP unavailable, unreachable, timing out, a broken connection, its circuit
open) is one WARNING line per attempt here, without a traceback: its ApplicationError is BENIGN, which Temporal's
worker logs at DEBUG (its "Completing activity as failed" WARNING with the traceback is for the rest), and counts
in no failure metric (the PSP's health table counts it). The PSP's own "no" (a decline, a step-up, a failover, not
found) is BENIGN too, without a line: the payment's ending logs its code. Anything else keeps the SDK's line and
traceback."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from payloop.psp_decision import PspDecision
from psp.base import (
    PspConnector,
    PspDeclined,
    PspError,
    PspFailover,
    PspNotFound,
    PspRequestRejected,
    PspStepUpRequired,
    PspTransientError,
)
from psp.routing import CircuitState, RoutingConfig
from psp.routing.health import HealthStore
from workflows.types import StatusPollPlan

T = TypeVar("T")
log = logging.getLogger("payloop.psp")


async def call_psp(psp: str, operation: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except PspError as err:
        raise psp_failure(err, psp, operation) from err


async def call_and_record(health: HealthStore, psp: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
    """Calls the PSP and feeds its circuit breaker: an answer (even a decline) is a success; a timeout, a 5xx or
    an unusable answer is a failure. A half-open PSP whose probe slots are taken is not called at all."""
    if not await _bookkeeping(health.try_probe(psp), default=True):
        _log_expected_failure(psp, operation, "circuit_open")
        raise ApplicationError(f"{psp} is being probed; not called", "circuit_open", type=PspDecision.RETRY.value,
                               non_retryable=True, category=ApplicationErrorCategory.BENIGN)
    started = time.monotonic()
    try:
        result = await call()
    except PspError as err:
        answered = isinstance(err, (PspDeclined, PspRequestRejected, PspNotFound, PspStepUpRequired))
        _measure(psp, operation, "refused" if answered else "unavailable", started)
        state = await _bookkeeping(health.record(psp, operation, answered, _elapsed_ms(started), err.code))
        # This failure opened (or kept open) the PSP's circuit: stop retrying it, let the workflow move on.
        opened = not answered and state == CircuitState.OPEN
        raise psp_failure(err, psp, operation, circuit_opened=opened) from err
    _measure(psp, operation, "ok", started)
    await _bookkeeping(health.record(psp, operation, True, _elapsed_ms(started)))
    return result


def _measure(psp: str, operation: str, outcome: str, started: float) -> None:
    """The call on the worker's metrics: ok, refused (the PSP answered no: a decline, a 4xx) or unavailable (a
    timeout, a 5xx, an unusable answer)."""
    if not activity.in_activity():
        return
    meter = activity.metric_meter()
    where = {"psp": psp, "operation": operation}
    meter.create_counter("payloop_psp_calls", "PSP calls by PSP, operation and outcome.").add(
        1, where | {"outcome": outcome})
    meter.create_histogram_float("payloop_psp_call_seconds", "PSP call latency by PSP and operation.", "s").record(
        time.monotonic() - started, where)


async def _bookkeeping(step: Awaitable[T], default: T | None = None) -> T | None:
    """Health bookkeeping is best effort: its database out of reach must not fail (or fail over) a PSP call
    that itself went fine; the circuit only misses a sample."""
    try:
        return await step
    except (SQLAlchemyError, OSError) as err:
        log.warning("PSP health not recorded: %s", err)
        return default


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def cancel_or_look_up(psp: str, operation: str, cancel: Awaitable[T], look_up: Callable[[], Awaitable[T]]) -> T:
    """Cancels at the PSP; when the PSP refuses (the record settled, or it will not cancel), returns the record
    as the PSP sees it, so the workflow decides on the PSP's own word."""
    try:
        return await cancel
    except PspRequestRejected:
        return await call_psp(psp, operation, look_up())
    except PspError as err:
        raise psp_failure(err, psp, operation) from err


# A connector's error class → what it means; the ApplicationError's type carries the decision to the workflow.
_DECISIONS: dict[type[PspError], PspDecision] = {
    PspDeclined: PspDecision.HARD_DECLINE,
    PspRequestRejected: PspDecision.REJECTED,
    PspFailover: PspDecision.FAILOVER,
    PspStepUpRequired: PspDecision.STEP_UP,
    PspNotFound: PspDecision.NOT_FOUND,
}


# The PSP's own answer (a decline, a step-up, "try another PSP", "no such record"): a business outcome, not a fault.
# BENIGN, so the SDK logs no traceback for it; the payment's final line carries the code (workflows' endings).
_ANSWERS = frozenset({PspDecision.HARD_DECLINE, PspDecision.FAILOVER, PspDecision.STEP_UP, PspDecision.NOT_FOUND})


def psp_failure(err: PspError, psp: str, operation: str, *, circuit_opened: bool = False) -> ApplicationError:
    """The ApplicationError the workflow decides on: its type is the decision, its first detail the code.
    Transient errors and malformed answers retry (unless the circuit just opened); the workflow decides what
    follows (fail over, look up). A transport failure is expected: logged here, BENIGN for the SDK. A refused
    request (a 4xx: ours was wrong) and a malformed answer keep the SDK's line and traceback."""
    decision = _DECISIONS.get(type(err), PspDecision.RETRY)
    non_retryable = decision is not PspDecision.RETRY or circuit_opened
    if decision in _ANSWERS:
        return ApplicationError(err.message, err.code, type=decision.value, non_retryable=non_retryable,
                                category=ApplicationErrorCategory.BENIGN)
    if not isinstance(err, PspTransientError):
        return ApplicationError(err.message, err.code, type=decision.value, non_retryable=non_retryable)
    _log_expected_failure(psp, operation, err.code)
    return ApplicationError(err.message, err.code, type=decision.value, non_retryable=non_retryable,
                            category=ApplicationErrorCategory.BENIGN)


def _log_expected_failure(psp: str, operation: str, code: str) -> None:
    # activity.logger adds the workflow, the activity and its attempt (fields in JSON logs, payloop/logs.py).
    attempt = activity.info().attempt if activity.in_activity() else None
    activity.logger.warning("%s %s failed: %s (attempt %s)", psp, operation, code, attempt,
                            extra={"psp": psp, "operation": operation, "error_code": code, "attempt": attempt})


def status_poll_plan(routing: RoutingConfig, psp: str) -> StatusPollPlan:
    """The PSP's `status_poll` schedule from the routing file (the workflow's settings where it has none)."""
    config = routing.psp(psp)
    if config is None:
        return StatusPollPlan()
    poll = config.status_poll
    return StatusPollPlan(poll.attempts, float(poll.backoff), float(poll.max_interval_seconds))


def connector_for(connectors: Mapping[str, PspConnector], psp: str) -> PspConnector:
    try:
        return connectors[psp]
    except KeyError:
        raise ApplicationError(
            f"unknown PSP {psp!r}", "unknown_psp", type=PspDecision.REJECTED.value, non_retryable=True
        ) from None
