"""PSP calls from activities: connector errors become typed ApplicationErrors the workflows' retry policies
decide on (declines and rejected requests never retry; transient errors do)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TypeVar

from temporalio.exceptions import ApplicationError

from psp.base import PspConnector, PspDeclined, PspError, PspNotFound, PspRequestRejected
from workflows.types import ErrorType

T = TypeVar("T")


async def call_psp(call: Awaitable[T]) -> T:
    try:
        return await call
    except PspError as err:
        raise as_application_error(err) from err


def as_application_error(err: PspError) -> ApplicationError:
    if isinstance(err, PspDeclined):
        return ApplicationError(err.message, err.code, type=ErrorType.PSP_DECLINED, non_retryable=True)
    if isinstance(err, PspRequestRejected):
        return ApplicationError(err.message, err.code, type=ErrorType.PSP_REQUEST_REJECTED, non_retryable=True)
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
