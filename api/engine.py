"""How the API talks to the payment workflows: Update-with-Start, updates and queries, with Temporal's
failures turned into problem+json answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn
from urllib.parse import quote

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import Problem
from payloop.settings import Settings

ALREADY_FINISHED = object()
STILL_RUNNING = object()


def unavailable(detail: str) -> Problem:
    return Problem(503, "temporal_unavailable", "Service unavailable", detail, retryable=True,
                   headers={"Retry-After": "2"})


async def start_and_wait(
    client: Client, settings: Settings, run: Callable, arg: Any, update: Callable, *, workflow_id: str,
    resource: dict[str, str],
) -> Any:
    """Starts the workflow (or reaches the running one) and returns its first answer.

    Returns ALREADY_FINISHED when the workflow id belongs to a finished workflow: ids are never reused.
    """
    start = WithStartWorkflowOperation(
        run, arg, id=workflow_id, task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    try:
        return await asyncio.wait_for(
            client.execute_update_with_start_workflow(update, start_workflow_operation=start),
            timeout=settings.init_update_timeout_seconds,
        )
    except WorkflowAlreadyStartedError:
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()  # consumes the start operation's copy of the error
        return ALREADY_FINISHED
    except (asyncio.TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise Problem(504, "engine_timeout", "No answer in time",
                      "the request was started; read its status with GET", retryable=True, **resource) from None
    except (RPCError, WorkflowUpdateFailedError) as err:
        raise unavailable("the payment engine is unavailable") from err


async def start(client: Client, settings: Settings, run: Callable, arg: Any, *, workflow_id: str,
                resource: dict[str, str],
                id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.REJECT_DUPLICATE) -> bool:
    """Starts the workflow, or finds it running; False when the id belongs to a finished one (by default ids are
    never reused). A start that timed out may have happened: the 504 asks for the retry, which reaches the same
    one."""
    try:
        await asyncio.wait_for(client.start_workflow(
            run, arg, id=workflow_id, task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=id_reuse_policy,
        ), timeout=settings.init_update_timeout_seconds)
    except WorkflowAlreadyStartedError:
        return False
    except asyncio.TimeoutError:
        raise Problem(504, "engine_timeout", "No answer in time",
                      "the request may have started; retry it with the same Idempotency-Key", retryable=True,
                      **resource) from None
    except RPCError as err:
        raise unavailable("the payment engine is unavailable") from err
    return True


async def update(client: Client, workflow_id: str, handler: Callable, arg: Any, *, not_found: Problem,
                 rejected: Callable[[ApplicationError], Problem], timeout: float = 30) -> Any:
    """Sends an update; a validator's refusal becomes the `rejected` problem (usually a 409)."""
    handle = client.get_workflow_handle(workflow_id)
    async with _update_problems(handle, not_found, rejected):
        return await asyncio.wait_for(handle.execute_update(handler, arg), timeout)


async def update_briefly(client: Client, workflow_id: str, handler: Callable, arg: Any, *, wait_seconds: float,
                         not_found: Problem, rejected: Callable[[ApplicationError], Problem],
                         timeout: float = 30) -> Any:
    """Sends an update that may take long to carry out (e.g. a refund at a PSP): its result when it comes within
    `wait_seconds`, else STILL_RUNNING once the workflow has accepted it. Refusals as in `update`."""
    handle = client.get_workflow_handle(workflow_id)
    async with _update_problems(handle, not_found, rejected):
        accepted = await asyncio.wait_for(
            handle.start_update(handler, arg, wait_for_stage=WorkflowUpdateStage.ACCEPTED), timeout)
    try:
        return await asyncio.wait_for(accepted.result(), wait_seconds)
    except (asyncio.TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError):
        # Accepted, so it is being carried out: the caller reads the current state instead.
        return STILL_RUNNING
    except WorkflowUpdateFailedError as err:
        # A validator's refusal comes back here, not from start_update: the update was never accepted.
        if isinstance(err.cause, ApplicationError):
            raise rejected(err.cause) from None
        raise unavailable("the update could not be carried out") from err


@contextlib.asynccontextmanager
async def _update_problems(handle: WorkflowHandle, not_found: Problem,
                           rejected: Callable[[ApplicationError], Problem]) -> AsyncIterator[None]:
    """Turns an update's failures into problems: a validator's refusal into `rejected`, an unknown workflow into
    `not_found`, a finished one into `rejected` too (the change comes too late)."""
    try:
        yield
    except (asyncio.TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise Problem(504, "engine_timeout", "No answer in time",
                      "the request was recorded and goes on; read the status with GET", retryable=True) from None
    except WorkflowUpdateFailedError as err:
        if isinstance(err.cause, ApplicationError):
            raise rejected(err.cause) from None
        raise unavailable("the update could not be applied") from err
    except RPCError as err:
        # Not found: no such workflow, or one that has finished (then the change comes too late).
        await _gone(handle, err, not_found, rejected(ApplicationError("it has already finished", type="Finished")))


async def signal(client: Client, workflow_id: str, handler: Callable, *, not_found: Problem,
                 finished: Problem) -> None:
    """Sends a signal (without arguments) to a running workflow: `not_found` when there is no such workflow,
    `finished` when it has ended (a signal then reaches nothing)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        await handle.signal(handler)
    except RPCError as err:
        await _gone(handle, err, not_found, finished)


async def _gone(handle: WorkflowHandle, err: RPCError, not_found: Problem, finished: Problem) -> NoReturn:
    """An update's or signal's RPC failure as a problem: NOT_FOUND is `not_found` when there is no such workflow
    (describe says so too), `finished` when it has ended; anything else, the engine unavailable."""
    if err.status != RPCStatusCode.NOT_FOUND:
        raise unavailable("the payment engine is unavailable") from err
    try:
        await handle.describe()
    except RPCError as described:
        if described.status == RPCStatusCode.NOT_FOUND:
            raise not_found from None
        raise unavailable("the payment engine is unavailable") from described
    raise finished from None


async def exists(client: Client, workflow_id: str) -> bool:
    """Whether a workflow of this id was ever started (running or not)."""
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise unavailable("the payment engine is unavailable") from err
    return True


async def state(client: Client, workflow_id: str, handler: Callable, result_type: type, *, not_found: Problem) -> Any:
    """A payment's state. A finished workflow returned it: read from its close event, so no worker replays the
    whole history to answer (clients poll finished payments most) and no worker needs to be up. A running one
    answers the `handler` query from its worker's cache."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
            async for event in handle.fetch_history_events(event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT):
                payloads = event.workflow_execution_completed_event_attributes.result.payloads
                # A result an older version wrote that today's type cannot read: the workflow answers instead.
                with contextlib.suppress(TypeError, ValueError, RuntimeError):
                    return (await client.data_converter.decode(payloads, [result_type]))[0]
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise not_found from None
        raise unavailable("status is unavailable") from err
    # Running, or ended without a result (terminated, failed): the workflow answers.
    return await query(client, workflow_id, handler, not_found=not_found)


async def query(client: Client, workflow_id: str, handler: Callable, *, not_found: Problem) -> Any:
    try:
        return await client.get_workflow_handle(workflow_id).query(handler)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise not_found from None
        raise unavailable("status is unavailable") from err
    except WorkflowQueryFailedError as err:
        raise unavailable("status is unavailable") from err


def ui_url(settings: Settings, workflow_id: str) -> str:
    return f"{settings.temporal_ui_url}/namespaces/{quote(settings.temporal_namespace)}/workflows/{workflow_id}"
