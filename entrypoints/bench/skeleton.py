"""The bare skeleton a payment workflow is compared with: the same shape, doing nothing.

Shape of a deposit: Update-with-Start, answered after the steps *before* the PSP's answer (screen, route, create),
then one signal (the webhook), then the steps *after* it (credit). The skeleton runs the same number of no-op
activities (regular or local, as the deposit's history shows them) around the same update and signal, on its own
task queue with its own in-process worker, so what it measures is Temporal's own cost for that shape on this
server: the floor our workflows can be compared with.

A shape is written `"aal|a"`: before the bar the steps until the update is answered, after it the steps after
the signal; `a` is an activity, `l` a local activity. Without a bar (`"aaa"`) the workflow has no update and no
signal: it just runs the steps (the latency probe uses that).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # the sandbox re-imports this module for every run
    from workers.bytecode import cache_workflow_bytecode

NOOP_ACTIVITY = "bench_noop"
_STEP_TIMEOUT = timedelta(seconds=30)


@activity.defn(name=NOOP_ACTIVITY)
async def noop() -> None:
    """Does nothing: whatever a step costs in the skeleton is Temporal's (and the SDK's) share."""


@dataclass
class SkeletonInput:
    before: str  # e.g. "aaa": steps until the update is answered
    after: str = ""  # steps after the signal
    signal: bool = True  # False: no update and no signal, just the steps


@dataclass(frozen=True)
class Shape:
    before: str
    after: str
    signal: bool = True

    @classmethod
    def parse(cls, text: str) -> Shape:
        text = text.strip().lower()
        before, bar, after = text.partition("|")
        if set(before + after) - {"a", "l"}:
            raise ValueError(f"a shape is made of 'a' (activity) and 'l' (local activity), e.g. 'aaa|a': {text!r}")
        return cls(before, after, signal=bool(bar))

    def __str__(self) -> str:
        return f"{self.before}|{self.after}" if self.signal else self.before

    def input(self) -> SkeletonInput:
        return SkeletonInput(self.before, self.after, self.signal)


@workflow.defn(name="BenchSkeleton")
class SkeletonWorkflow:
    @workflow.init
    def __init__(self, input: SkeletonInput) -> None:
        self._answered = False
        self._signalled = False

    @workflow.update
    async def answer(self) -> str:
        await workflow.wait_condition(lambda: self._answered)
        return "answered"

    @workflow.signal
    def event(self) -> None:
        self._signalled = True

    @workflow.run
    async def run(self, input: SkeletonInput) -> str:
        for kind in input.before:
            await _step(kind)
        self._answered = True
        if input.signal:
            await workflow.wait_condition(lambda: self._signalled)
            for kind in input.after:
                await _step(kind)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return "done"


async def _step(kind: str) -> None:
    if kind == "l":
        await workflow.execute_local_activity(NOOP_ACTIVITY, start_to_close_timeout=_STEP_TIMEOUT)
    else:
        await workflow.execute_activity(NOOP_ACTIVITY, start_to_close_timeout=_STEP_TIMEOUT)


@contextlib.asynccontextmanager
async def skeleton_worker(client: Client, task_queue: str, **worker_options: Any) -> AsyncIterator[Worker]:
    """The skeleton's own worker, in this process, on its own task queue (options as for temporalio's Worker)."""
    cache_workflow_bytecode([SkeletonWorkflow])  # as the payments worker does
    worker = Worker(client, task_queue=task_queue, workflows=[SkeletonWorkflow], activities=[noop],
                    **worker_options)
    async with worker:
        yield worker


@dataclass
class SkeletonSample:
    """One skeleton run, timed on this process's clock (seconds since the epoch)."""

    workflow_id: str
    started: float  # request sent
    answered: float  # update answered (the skeleton's "init")
    signalled: float  # signal sent (the skeleton's "webhook")
    completed: float  # result received

    @property
    def init_latency(self) -> float:
        return self.answered - self.started

    @property
    def signal_to_done(self) -> float:
        return self.completed - self.signalled

    @property
    def total(self) -> float:
        return self.completed - self.started


async def run_one(client: Client, task_queue: str, shape: Shape, *, signal_delay: float = 0.0,
                  eager_start: bool = False, id_prefix: str = "bench-skeleton") -> SkeletonSample:
    """One skeleton workflow: Update-with-Start (as the API does), wait `signal_delay`, signal, wait the result.
    A shape without a signal is just started and awaited."""
    workflow_id = f"{id_prefix}-{uuid.uuid4().hex[:16]}"
    started = time.time()
    if shape.signal:
        start = WithStartWorkflowOperation(
            SkeletonWorkflow.run, shape.input(), id=workflow_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await client.execute_update_with_start_workflow(SkeletonWorkflow.answer, start_workflow_operation=start)
        answered = time.time()
        handle = await start.workflow_handle()
        if signal_delay:
            await asyncio.sleep(signal_delay)
        signalled = time.time()
        await handle.signal(SkeletonWorkflow.event)
    else:
        handle = await client.start_workflow(SkeletonWorkflow.run, shape.input(), id=workflow_id,
                                             task_queue=task_queue, request_eager_start=eager_start)
        answered = signalled = started
    await handle.result()
    return SkeletonSample(workflow_id, started, answered, signalled, time.time())


@dataclass
class SkeletonRun:
    samples: list[SkeletonSample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def throughput(self) -> float:
        elapsed = self.finished - self.started
        return len(self.samples) / elapsed if elapsed > 0 else 0.0


async def drive(client: Client, task_queue: str, shape: Shape, count: int, concurrency: int, *,
                signal_delay: float = 0.0, eager_start: bool = False,
                progress: Callable[[], None] | None = None) -> SkeletonRun:
    """`count` skeleton workflows, at most `concurrency` at a time (closed loop)."""
    run = SkeletonRun(started=time.time())
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            try:
                run.samples.append(await run_one(client, task_queue, shape, signal_delay=signal_delay,
                                                 eager_start=eager_start))
            except Exception as err:  # noqa: BLE001 - a failed run is counted, not fatal: the report says how many
                run.errors.append(f"{type(err).__name__}: {err}")
            if progress:
                progress()

    await asyncio.gather(*(one() for _ in range(count)))
    run.finished = time.time()
    return run
