"""Determinism guard: every workflow history of this session, and the recorded ones in tests/histories, replay
against today's workflow code. Runs last (see conftest) so it sees the histories of all scenario tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from payloop.codec import ENCODING, data_converter
from tests.e2e.conftest import CODEC_KEYS, stack_settings
from workers.payments import SHARED_WORKFLOW_MODULES, WORKFLOWS

HISTORIES = Path(__file__).parent.parent / "histories"
pytestmark = pytest.mark.replay


async def session_histories(env: WorkflowEnvironment) -> list[WorkflowHistory]:
    names = ", ".join(f"'{workflow.__name__}'" for workflow in WORKFLOWS)
    query = f"WorkflowType IN ({names}) AND ExecutionStatus != 'Running'"
    return [await env.client.get_workflow_handle(w.id, run_id=w.run_id).fetch_history()
            async for w in env.client.list_workflows(query)]


def one_per_path(histories: list[WorkflowHistory]) -> list[WorkflowHistory]:
    """One history for each distinct sequence of events and activities: every path, none twice."""
    paths: dict[tuple, WorkflowHistory] = {}
    for history in histories:
        path = tuple((event.event_type, event.activity_task_scheduled_event_attributes.activity_type.name)
                     for event in history.events)
        paths.setdefault(path, history)
    return list(paths.values())


async def replay_failures(histories: list[WorkflowHistory]) -> dict[str, str]:
    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    # The workers' codec: this session's histories are encrypted; recorded ones from before it pass through.
    # debug_mode: no deadlock detector — this checks determinism, not time, and a garbage collection under the full
    # suite's load once held an activation past its 2 s (the sandbox and the non-determinism checks stay).
    # The workers' sandbox too (workers/payments.py): the workflows' helper modules imported once, not once per
    # history — that re-import was most of the replay's time.
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*SHARED_WORKFLOW_MODULES))
    replayer = Replayer(workflows=WORKFLOWS, workflow_runner=runner, data_converter=data_converter(CODEC_KEYS),
                        debug_mode=True)
    result = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    return {run_id: repr(failure) for run_id, failure in result.replay_failures.items()}


async def test_this_sessions_histories_replay(temporal_env: WorkflowEnvironment) -> None:
    histories = await session_histories(temporal_env)
    assert len(histories) >= 20, "the scenario tests should have left their histories"
    started = [h.events[0].workflow_execution_started_event_attributes.input.payloads[0] for h in histories]
    assert {p.metadata["encoding"] for p in started} == {ENCODING}, "the session's histories are encrypted"
    assert await replay_failures(histories) == {}
    if target := os.environ.get("PAYLOOP_RECORD_HISTORIES"):
        for history in one_per_path(histories):
            (Path(target) / f"{history.workflow_id}.json").write_text(history.to_json())


async def test_recorded_histories_replay() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, f"no recorded histories in {HISTORIES}"
    histories = [WorkflowHistory.from_json(file.stem, file.read_text()) for file in files]
    assert await replay_failures(histories) == {}


def deferrals(history: WorkflowHistory, deferral_seconds: float) -> int:
    """A payout's deferral while its PSP is down: create_psp_payout failed, routing named no other PSP, then the
    deferral's one timer (`WithdrawalWorkflow`'s wait for `deferred_until`, which `send_now` ends early)."""
    steps: list[tuple[str, str]] = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            steps.append(("scheduled", event.activity_task_scheduled_event_attributes.activity_type.name))
        elif event.HasField("activity_task_failed_event_attributes"):
            steps.append(("failed", ""))
        elif event.HasField("timer_started_event_attributes"):
            timeout = event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
            steps.append(("timer", str(timeout)))
    pattern = [("scheduled", "create_psp_payout"), ("failed", ""), ("scheduled", "route_payout"),
               ("timer", str(deferral_seconds))]
    return sum(steps[i:i + len(pattern)] == pattern for i in range(len(steps)))


def test_the_recordings_hold_payout_deferrals_from_before_send_now() -> None:
    """The deferral became a wait that `send_now` can end (workflows/withdrawal.py), kept to the one timer the
    sleep was: recordings from before that change must keep exercising it (a deliberately added timer there fails
    their replay), so a re-recording that loses them fails here."""
    first_retry = stack_settings("sqlite://", "q").payout_psp_down_first_retry_seconds
    found = [file.stem for file in sorted(HISTORIES.glob("withdrawal-*.json"))
             if deferrals(WorkflowHistory.from_json(file.stem, file.read_text()), first_retry)]
    assert len(found) >= 2, found
