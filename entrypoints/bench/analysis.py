"""After the traffic: what the workflow histories, the API's webhook inbox and the ledger say about it.

Webhook → credited is measured per credited deposit as

    (WorkflowExecutionCompleted event time)  −  (the API's `received_at` of the PSP's final webhook)

The end is the moment the workflow task that set `credited` was completed at the Temporal server: from then on
every read of the payment says `credited` (the workflow ends in the same task). The start is when our API took
the PSP's delivery (`received_at`, stored by the webhook inbox before verification succeeds and before the
signal, read back through `GET /v1/ops/webhooks/{id}`). Both are wall clocks of one machine on the embedded
stack; for a stack given by URL they are two machines' clocks, so the report also gives the part that uses the
Temporal server's clock only (signal event → completed), and the split in between:

    api_inbox      received_at → WorkflowExecutionSignaled    (verify, store, log, signal RPC)
    task_dispatch  signal → the next workflow task started    (the server hands the worker a task)
    task_to_close  that task started → workflow completed     (everything after: with a local credit activity,
                                                               the ledger write happens inside this part)

and, when the credit is a regular activity, that last part split further:

    to_schedule    task started → credit activity scheduled   (the workflow task completes)
    queue_wait     credit activity scheduled → started        (dispatch to a worker)
    credit         credit activity started → completed        (the ledger write)
    to_close       credit completed → workflow completed      (another workflow task)

Without the ops scope (no inbox access) the signal event's time is the start, and the report says so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from workflows.types import ActivityName

LOCAL_ACTIVITY_MARKER = "core_local_activity"
E = EventType


@dataclass
class HistoryFacts:
    workflow_id: str
    events: int
    started: float | None = None
    update_completed: float | None = None  # the init update answered (server side)
    # The last signal of any name: a payment's webhook (DepositWorkflow.psp_event / WithdrawalWorkflow.psp_event),
    # the skeleton's SkeletonWorkflow.event.
    last_signal: float | None = None
    credit_scheduled: float | None = None
    credit_started: float | None = None
    credit_completed: float | None = None
    closed: float | None = None
    task_after_signal: float | None = None  # the first workflow task started after the last signal
    first_task: float | None = None  # the first workflow task started
    # The last regular activity before the update was answered (a deposit's PSP create call):
    init_activity: tuple[float | None, float | None, float | None] = (None, None, None)  # scheduled, started, done
    shape: str = ""  # "aaa|a": steps until the update was answered | steps after the last signal
    activities: int = 0
    local_activities: int = 0
    signals: int = 0


def _t(event: HistoryEvent) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


def history_facts(workflow_id: str, events: list[HistoryEvent], credit_activity: str | None = None) -> HistoryFacts:
    """Times and shape of one workflow history; `credit_activity` names the step whose timings are split out."""
    facts = HistoryFacts(workflow_id, len(events))
    before: list[str] = []
    after: list[str] = []
    credit_event_id = None
    init_event_id = None
    answered = False
    for event in events:
        kind = event.event_type
        if kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            facts.started = _t(event)
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED and facts.update_completed is None:
            facts.update_completed = _t(event)
            answered = True
        elif kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            facts.signals += 1
            if facts.credit_scheduled is None:
                facts.last_signal = _t(event)
                after = []
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            facts.activities += 1
            if not answered:
                init_event_id = event.event_id
                facts.init_activity = (_t(event), None, None)
            (after if facts.last_signal else before if not answered else []).append("a")
            if credit_activity and event.activity_task_scheduled_event_attributes.activity_type.name == credit_activity:
                credit_event_id = event.event_id
                facts.credit_scheduled = _t(event)
        elif kind == E.EVENT_TYPE_MARKER_RECORDED:
            if event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER:
                facts.local_activities += 1
                (after if facts.last_signal else before if not answered else []).append("l")
        elif kind == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            if facts.first_task is None:
                facts.first_task = _t(event)
            if facts.last_signal and facts.credit_scheduled is None and (
                facts.task_after_signal is None or facts.task_after_signal < facts.last_signal
            ):
                facts.task_after_signal = _t(event)
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            scheduled_id = event.activity_task_started_event_attributes.scheduled_event_id
            if credit_event_id is not None and scheduled_id == credit_event_id:
                facts.credit_started = _t(event)
            if not answered and scheduled_id == init_event_id:
                facts.init_activity = (facts.init_activity[0], _t(event), None)
        elif kind == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled_id = event.activity_task_completed_event_attributes.scheduled_event_id
            if credit_event_id is not None and scheduled_id == credit_event_id:
                facts.credit_completed = _t(event)
            if not answered and scheduled_id == init_event_id:
                facts.init_activity = (facts.init_activity[0], facts.init_activity[1], _t(event))
        elif kind in (E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
                      E.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, E.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT):
            facts.closed = _t(event)
    facts.shape = f"{''.join(before)}|{''.join(after)}"
    return facts


async def read_histories(client: Client, workflow_ids: list[str], *, credit_activity: str | None = None,
                         concurrency: int = 16) -> dict[str, HistoryFacts]:
    gate = asyncio.Semaphore(concurrency)
    out: dict[str, HistoryFacts] = {}

    async def one(workflow_id: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            out[workflow_id] = history_facts(workflow_id, list(history.events), credit_activity)

    await asyncio.gather(*(one(w) for w in workflow_ids), return_exceptions=True)
    return out


def deposit_credit_activity() -> str:
    return ActivityName.CREDIT_DEPOSIT


# ---- the API's webhook inbox ------------------------------------------------------------------------------------


@dataclass
class InboxCursor:
    """The newest inbox row before the run; everything after it is the run's (the ids are a sequence)."""

    last_id: int | None  # None: the API key cannot read the inbox (no ops scope)
    note: str | None = None


async def inbox_cursor(api: httpx.AsyncClient) -> InboxCursor:
    newest = 0
    for state in ("received", "signalled", "dead_letter"):
        response = await api.get("/v1/ops/webhooks", params={"state": state, "limit": 1})
        if response.status_code in (401, 403):
            return InboxCursor(None, "the API key lacks the ops scope: webhook times come from the signal events")
        response.raise_for_status()
        for row in response.json():
            newest = max(newest, int(row["id"]))
    return InboxCursor(newest)


async def final_webhooks(api: httpx.AsyncClient, since: InboxCursor, final_status: str = "captured",
                         concurrency: int = 16) -> dict[str, float]:
    """payment id → `received_at` (epoch seconds) of its final (`captured`) webhook, for rows after `since`."""
    if since.last_id is None:
        return {}
    newest = since.last_id
    for state in ("received", "signalled", "dead_letter"):
        response = await api.get("/v1/ops/webhooks", params={"state": state, "limit": 1})
        for row in response.json():
            newest = max(newest, int(row["id"]))
    gate = asyncio.Semaphore(concurrency)
    out: dict[str, float] = {}

    async def one(row_id: int) -> None:
        async with gate:
            response = await api.get(f"/v1/ops/webhooks/{row_id}")
        if response.status_code != 200:
            return
        row = response.json()
        if row.get("status") == final_status:
            out[row["payment_id"]] = parse_time(row["received_at"])

    await asyncio.gather(*(one(i) for i in range(since.last_id + 1, newest + 1)))
    return out


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


# ---- the ledger, through the wallet API ------------------------------------------------------------------------


@dataclass
class LedgerActivity:
    transfer_times: list[float] = field(default_factory=list)
    players_read: int = 0
    truncated_players: int = 0


async def ledger_activity(api: httpx.AsyncClient, players: list[str], concurrency: int = 16) -> LedgerActivity:
    """When every transfer touching the run's players was created (each of the run's transfers moves one of
    their money: deposit credits, bets, wins, payout holds)."""
    gate = asyncio.Semaphore(concurrency)
    result = LedgerActivity()

    async def one(player: str) -> None:
        async with gate:
            response = await api.get(f"/v1/wallet/{player}/transactions", params={"limit": 200})
        if response.status_code != 200:
            return
        rows = response.json()["transactions"]
        result.players_read += 1
        if len(rows) == 200:
            result.truncated_players += 1
        result.transfer_times.extend(parse_time(r["created_at"]) for r in rows)

    await asyncio.gather(*(one(p) for p in dict.fromkeys(players)))
    return result


def transfers_per_second(times: list[float], start: float, end: float) -> dict[str, Any]:
    inside = [t for t in times if start <= t <= end]
    elapsed = max(end - start, 1e-9)
    return {"transfers": len(inside), "per_second": round(len(inside) / elapsed, 1)}
