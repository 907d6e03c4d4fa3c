"""PSP calls from activities: connector errors become typed ApplicationErrors the workflows' retry policies
decide on (declines and rejected requests never retry; transient errors do)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from payloop.psp_decision import PspDecision
from psp.base import (
    PspConnector,
    PspDeclined,
    PspError,
    PspFailover,
    PspNotFound,
    PspRequestRejected,
    PspStepUpRequired,
)
from psp.routing import CircuitState, RoutingConfig
from psp.routing.health import HealthStore
from workflows.types import StatusPollPlan

T = TypeVar("T")
log = logging.getLogger("payloop.psp")


async def call_psp(call: Awaitable[T]) -> T:
    try:
        return await call
    except PspError as err:
        raise as_application_error(err) from err


async def call_and_record(health: HealthStore, psp: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
    """Calls the PSP and feeds its circuit breaker: an answer (even a decline) is a success; a timeout, a 5xx or
    an unusable answer is a failure. A half-open PSP whose probe slots are taken is not called at all."""
    if not await _bookkeeping(health.try_probe(psp), default=True):
        raise ApplicationError(f"{psp} is being probed; not called", "circuit_open", type=PspDecision.RETRY.value,
                               non_retryable=True)
    started = time.monotonic()
    try:
        result = await call()
    except PspError as err:
        answered = isinstance(err, (PspDeclined, PspRequestRejected, PspNotFound, PspStepUpRequired))
        _measure(psp, operation, "refused" if answered else "unavailable", started)
        state = await _bookkeeping(health.record(psp, operation, answered, _elapsed_ms(started), err.code))
        failure = as_application_error(err)
        if not answered and state == CircuitState.OPEN:
            # This failure opened (or kept open) the PSP's circuit: stop retrying it, let the workflow move on.
            failure = ApplicationError(failure.message, *failure.details, type=failure.type, non_retryable=True)
        raise failure from err
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


async def cancel_or_look_up(cancel: Awaitable[T], look_up: Callable[[], Awaitable[T]]) -> T:
    """Cancels at the PSP; when the PSP refuses (the record settled, or it will not cancel), returns the record
    as the PSP sees it, so the workflow decides on the PSP's own word."""
    try:
        return await cancel
    except PspRequestRejected:
        return await call_psp(look_up())
    except PspError as err:
        raise as_application_error(err) from err


# A connector's error class → what it means; the ApplicationError's type carries the decision to the workflow.
_DECISIONS: dict[type[PspError], PspDecision] = {
    PspDeclined: PspDecision.HARD_DECLINE,
    PspRequestRejected: PspDecision.REJECTED,
    PspFailover: PspDecision.FAILOVER,
    PspStepUpRequired: PspDecision.STEP_UP,
    PspNotFound: PspDecision.NOT_FOUND,
}


def as_application_error(err: PspError) -> ApplicationError:
    # Transient errors and malformed answers retry; the workflow decides what follows (fail over, look up).
    decision = _DECISIONS.get(type(err), PspDecision.RETRY)
    return ApplicationError(err.message, err.code, type=decision.value, non_retryable=decision is not PspDecision.RETRY)


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
