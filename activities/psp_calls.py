"""PSP calls from activities: connector errors become typed ApplicationErrors the workflows' retry policies
decide on (declines and rejected requests never retry; transient errors do)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from temporalio.exceptions import ApplicationError

from psp.base import (
    PspConnector,
    PspDeclined,
    PspError,
    PspFailover,
    PspNotFound,
    PspRequestRejected,
    PspStepUpRequired,
)
from psp.routing import CircuitState
from psp.routing.health import HealthStore
from workflows.types import ErrorType

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
        raise ApplicationError(f"{psp} is being probed; not called", "circuit_open", type=ErrorType.PSP_TRANSIENT,
                               non_retryable=True)
    started = time.monotonic()
    try:
        result = await call()
    except PspError as err:
        answered = isinstance(err, (PspDeclined, PspRequestRejected, PspNotFound, PspStepUpRequired))
        state = await _bookkeeping(health.record(psp, operation, answered, _elapsed_ms(started), err.code))
        failure = as_application_error(err)
        if not answered and state == CircuitState.OPEN:
            # This failure opened (or kept open) the PSP's circuit: stop retrying it, let the workflow move on.
            failure = ApplicationError(failure.message, *failure.details, type=failure.type, non_retryable=True)
        raise failure from err
    await _bookkeeping(health.record(psp, operation, True, _elapsed_ms(started)))
    return result


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


def as_application_error(err: PspError) -> ApplicationError:
    if isinstance(err, PspDeclined):
        return ApplicationError(err.message, err.code, type=ErrorType.PSP_DECLINED, non_retryable=True)
    if isinstance(err, PspRequestRejected):
        return ApplicationError(err.message, err.code, type=ErrorType.PSP_REQUEST_REJECTED, non_retryable=True)
    if isinstance(err, PspFailover):
        return ApplicationError(err.message, err.code, type=ErrorType.PSP_FAILOVER, non_retryable=True)
    if isinstance(err, PspStepUpRequired):
        return ApplicationError(err.message, err.code, type=ErrorType.PSP_STEP_UP, non_retryable=True)
    if isinstance(err, PspNotFound):
        return ApplicationError(err.message, err.code, type=ErrorType.PSP_NOT_FOUND, non_retryable=True)
    # Transient errors and malformed answers: retry, then let the workflow decide (fail over, look up).
    return ApplicationError(err.message, err.code, type=ErrorType.PSP_TRANSIENT)


def connector_for(connectors: Mapping[str, PspConnector], psp: str) -> PspConnector:
    try:
        return connectors[psp]
    except KeyError:
        raise ApplicationError(
            f"unknown PSP {psp!r}", "unknown_psp", type=ErrorType.PSP_REQUEST_REJECTED, non_retryable=True
        ) from None
