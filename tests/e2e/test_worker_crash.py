"""A payments worker killed for real (SIGKILL on its process, not a mock) in the middle of a payout: after a new
worker process starts, the payout finishes and its hold is posted or voided exactly once, on SQLite and PostgreSQL.

The API and the sandbox PSP run in this process as in the other end-to-end tests; the worker is a child process
(`python -m entrypoints.cli worker`) configured only by `PAYLOOP_*` variables, so it can be killed mid-flight.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from workflows.withdrawal import WithdrawalWorkflow
from payloop.db import create_engine
from psp.base import PspNotFound, PspPayout
from psp.registry import build_connectors
from tests.conftest import BACKENDS
from tests.e2e.conftest import Stack, api_and_sandbox, new_player, stack_settings
from tests.e2e.test_payouts import FINAL, assert_settled, funded_player, payout, set_kyc
from tests.processes import WorkerProcess, database_for_processes
from workflows.types import ActivityName

SLOW_SECONDS = 3.0  # the sandbox's `slow` scenario holds the payout create this long
PSP_CALL_TIMEOUT = 15.0  # workflows/withdrawal.py _PSP_CALL_TIMEOUT: a killed create is retried only after it


@dataclass
class CrashStack:
    stack: Stack
    worker: WorkerProcess


@pytest.fixture(scope="module", params=BACKENDS)
async def crash_stack(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CrashStack]:
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"crash-{backend}")
    async with database_for_processes(backend, workdir) as url:
        settings = stack_settings(
            url,
            f"payloop-crash-{backend}-{uuid.uuid4().hex[:6]}",
            data_dir=workdir,
            temporal_address=temporal_env.client.service_client.config.target_host,
            # Long enough to kill the worker while the payout waits for the PSP's webhook (the `lost` test).
            payout_webhook_timeout_seconds=4.0,
            # Far beyond a kill and a restart: the KYC wait must end by the signal, not by its timer.
            kyc_wait_timeout_seconds=300.0,
            review_wait_timeout_seconds=300.0,
        )
        worker = WorkerProcess(settings, workdir)
        engine = create_engine(url)
        client = temporal_env.client
        try:
            async with api_and_sandbox(settings, engine, client, slow_seconds=SLOW_SECONDS) as (api, sandbox):
                await worker.start()
                yield CrashStack(Stack(backend, settings, engine, client, api, sandbox), worker)
        finally:
            worker.stop()
            await engine.dispose()


@pytest.fixture
async def crash(crash_stack: CrashStack) -> CrashStack:
    """The module's stack with a worker running, even when an earlier test failed between a kill and a start."""
    if not crash_stack.worker.running:
        await crash_stack.worker.start()
    return crash_stack


# --- helpers -------------------------------------------------------------------------------------------------


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float, crash: CrashStack) -> Any:
    """Polls `check` until it returns something truthy; fails with the worker's log after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n--- worker log ---\n{crash.worker.log()[-4000:]}")
        await asyncio.sleep(0.1)


async def payout_view(stack: Stack, payout_id: str) -> dict[str, Any] | None:
    """The payout as the API shows it; None while its status is briefly unavailable (503, retryable) because
    the workflow is being rebuilt on the new worker."""
    response = await stack.api.get(f"/v1/payouts/{payout_id}")
    if response.status_code == 503 and response.json().get("retryable"):
        return None
    assert response.status_code == 200, response.text
    return response.json()


async def _closed(handle: Any) -> bool:
    return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING


async def wait_status(crash: CrashStack, payout_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        view = await payout_view(crash.stack, payout_id)
        return view if view is not None and view["status"] in statuses else None

    return await until(f"payout {payout_id} in {sorted(statuses)}", check, timeout, crash)


async def create_call_in_flight(stack: Stack, payout_id: str) -> bool:
    """True while an attempt of the PSP create activity has started (a worker runs it) and not completed."""
    description = await stack.client.get_workflow_handle(WithdrawalWorkflow.workflow_id(payout_id)).describe()
    return any(a.activity_type.name == ActivityName.CREATE_PSP_PAYOUT
               and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
               for a in description.raw_description.pending_activities)


async def create_attempts(stack: Stack, payout_id: str) -> list[int]:
    """The attempt number of each PSP create activity that finished, from the workflow's history."""
    handle = stack.client.get_workflow_handle(WithdrawalWorkflow.workflow_id(payout_id))
    scheduled: set[int] = set()
    attempts: list[int] = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == ActivityName.CREATE_PSP_PAYOUT:
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                attempts.append(started.attempt)
    return attempts


async def timers(stack: Stack, payout_id: str) -> tuple[int, int]:
    """(started, fired) timer events in the payout workflow's history."""
    handle = stack.client.get_workflow_handle(WithdrawalWorkflow.workflow_id(payout_id))
    types = [e.event_type async for e in handle.fetch_history_events()]
    return types.count(EventType.EVENT_TYPE_TIMER_STARTED), types.count(EventType.EVENT_TYPE_TIMER_FIRED)


async def pending_timer(stack: Stack, payout_id: str) -> tuple[int, int] | None:
    started, fired = await timers(stack, payout_id)
    return (started, fired) if started > fired else None


async def fired_more(stack: Stack, payout_id: str, *, than: int) -> bool:
    return (await timers(stack, payout_id))[1] > than


async def psp_payout(stack: Stack, psp: str, payout_id: str) -> PspPayout | None:
    """The payout as the PSP knows it, read through its connector (each PSP has its own wire format)."""
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            return await build_connectors(stack.settings, http)[psp].get_payout(payout_id)
        except PspNotFound:
            return None


async def deliveries(stack: Stack, payout_id: str) -> list[dict[str, Any]]:
    response = await stack.sandbox.get("/_sandbox/deliveries", params={"merchant_reference": payout_id})
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


# --- the crashes ---------------------------------------------------------------------------------------------


async def test_killed_between_hold_and_psp_call_pays_once_after_restart(crash: CrashStack) -> None:
    stack = crash.stack
    player = await funded_player(stack, kyc=None)
    started = await payout(stack, player, "40.00")
    assert started["available_balance"] == "60.00"
    waiting = await wait_status(crash, started["payout_id"], {"kyc_required"}, 20)
    assert waiting["hold"] == "held" and waiting["psp"] is None  # held, the PSP not called

    crash.worker.kill()
    # The KYC nudge is a signal: Temporal keeps it for the workflow while no worker runs.
    await set_kyc(stack, player, "verified")
    await crash.worker.start()  # a new process

    done = await wait_status(crash, started["payout_id"], FINAL, 45)
    assert done["status"] == "paid", done
    assert await psp_payout(stack, done["psp"], started["payout_id"]) is not None
    assert await stack.balance(player) == "60.00"
    await assert_settled(stack, done)  # one ledger transfer for the payout, posted; invariants hold


async def test_killed_during_the_psp_create_call_pays_out_once(crash: CrashStack) -> None:
    stack = crash.stack
    player = await funded_player(stack)
    started = await payout(stack, player, "40.00", scenario="slow")
    payout_id = started["payout_id"]
    await wait_status(crash, payout_id, {"processing"}, 20)
    await until("the PSP create call in flight", lambda: create_call_in_flight(stack, payout_id), 10, crash)

    crash.worker.kill()
    psp = "ewallet"  # the funding deposit was an e-wallet one: closed loop
    assert await psp_payout(stack, psp, payout_id) is None, "the kill came too late: the PSP had answered"
    await crash.worker.start()  # a new process

    # The killed attempt is retried only when its start-to-close timeout (15 s) expires.
    done = await wait_status(crash, payout_id, FINAL, PSP_CALL_TIMEOUT + SLOW_SECONDS + 25)
    assert done["status"] == "paid" and done["psp"] == psp, done
    # The killed try timed out; the workflow's next try (same Idempotency-Key: the same payout) finished it.
    assert await create_attempts(stack, payout_id) == [1, 1], "two create tries, one payout"
    at_psp = await psp_payout(stack, psp, payout_id)
    assert at_psp is not None and at_psp.status == "paid" and at_psp.psp_reference == done["psp_reference"]
    delivered = [d for d in await deliveries(stack, payout_id) if d["outcome"] == "delivered"]
    assert [d["type"] for d in delivered] == ["payout.paid"], delivered  # one payout, one final event
    assert await stack.balance(player) == "60.00"
    await assert_settled(stack, done)


async def test_killed_while_waiting_for_the_webhook_cancels_at_the_psp_and_voids_once(crash: CrashStack) -> None:
    stack = crash.stack
    player = await funded_player(stack)
    started = await payout(stack, player, "40.00", scenario="lost")  # accepted, then never a word from the PSP
    payout_id = started["payout_id"]
    await wait_status(crash, payout_id, {"processing"}, 20)
    await until("the PSP holding the payout", lambda: psp_payout(stack, "ewallet", payout_id), 10, crash)
    # The workflow has the PSP's answer and waits for the webhook on a durable timer.
    _started, fired = await until("the webhook wait's timer started", lambda: pending_timer(stack, payout_id),
                                  10, crash)

    crash.worker.kill()
    # That timer fires at the server while no worker runs.
    await until("the timer fired with the worker dead",
                lambda: fired_more(stack, payout_id, than=fired), 20, crash)
    await crash.worker.start()  # a new process

    done = await wait_status(crash, payout_id, FINAL, 45)
    # No word from the PSP: cancelled there (the PSP confirmed), and only then the hold voided.
    assert done["status"] == "cancelled" and done["failure_code"] == "psp_timeout", done
    assert await stack.balance(player) == "100.00"
    await assert_settled(stack, done)  # one ledger transfer for the payout, voided; invariants hold



async def test_finished_payments_are_read_while_no_worker_runs(crash: CrashStack) -> None:
    """A finished workflow's state is its result, read from the history: no worker has to replay it."""
    stack = crash.stack
    deposit = await stack.deposit(method="card", amount="5.00", player_id=new_player())
    credited = await stack.wait_final(deposit["payment_id"])
    started = await payout(stack, await funded_player(stack), "40.00")
    paid = await wait_status(crash, started["payout_id"], FINAL, 20)
    assert (credited["status"], paid["status"]) == ("credited", "paid")
    # "paid" shows while the workflow still settles (the player's notification): wait until it has closed.
    handle = stack.client.get_workflow_handle(WithdrawalWorkflow.workflow_id(started["payout_id"]))
    await until("the payout's workflow closed", lambda: _closed(handle), 20, crash)

    crash.worker.kill()
    try:
        assert await stack.payment(deposit["payment_id"]) == credited
        assert await payout_view(stack, started["payout_id"]) == paid
    finally:
        await crash.worker.start()
    await assert_settled(stack, paid)
