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

from payloop.codec import ENCODING, data_converter
from tests.e2e.conftest import CODEC_KEYS
from workers.payments import WORKFLOWS

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
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(CODEC_KEYS))
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
