"""Failover between two card acquirers: card goes down mid-run → deposits go through card_b; card's circuit opens
within a bounded number of failures; card recovers → a half-open probe → traffic returns to card.

The figures printed (run with -s) are measurements for the docs, never assertions on time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.testing import WorkflowEnvironment

from workflows.deposit import DepositWorkflow
from payloop.alerts import alerts
from psp.base import PspNotFound
from psp.registry import build_connectors
from psp.routing import load_routing
from psp.routing.health import HealthStore
from tests.conftest import BACKENDS
from tests.e2e.conftest import WEBHOOK_SECRETS, Stack, eventually, new_player, running_stack
from tests.e2e.test_webhooks import captured_event, post_webhook, stored_events
from workflows.types import ActivityName


async def card_deposit(stack: Stack) -> tuple[dict, float]:
    started = time.monotonic()
    init = await stack.deposit(method="card", amount="20.00", player_id=new_player())
    payment = await stack.wait_final(init["payment_id"])
    return payment, time.monotonic() - started


async def test_card_down_fails_over_to_card_b_then_returns(stack: Stack) -> None:
    health = HealthStore(stack.engine, load_routing(stack.settings))
    thresholds = health.config.thresholds("card")
    await stack.psp_mode("card", "up")
    await stack.psp_mode("card_b", "up")
    before, before_s = await card_deposit(stack)
    assert before["psp"] == "card" and before["status"] == "credited"

    await stack.sandbox.post("/control/card", json={"mode": "down"})
    down_at = time.monotonic()
    try:
        first, first_s = await card_deposit(stack)
        assert first["status"] == "credited" and first["psp"] == "card_b"
        failover_s = time.monotonic() - down_at
        # Opened within that one deposit's retries (and maybe already half-open: open_seconds is short here).
        assert (await health.states())["card"] in ("open", "half_open")
        failures = (await health.snapshot(registered={"card"}))["card"]
        assert failures.samples <= thresholds.min_samples + 4  # bounded: the threshold plus one deposit's retries
        after_open, after_open_s = await card_deposit(stack)
        assert after_open["psp"] == "card_b"
    finally:
        await stack.sandbox.post("/control/card", json={"mode": "up"})  # recovers, its health kept
    # After open_seconds the circuit lets a probe through; the probe succeeds and traffic returns to card.
    returned = await eventually(lambda: card_deposit(stack), lambda result: result[0]["psp"] == "card",
                                timeout=thresholds.open_seconds + 30, interval=0.5)
    assert (await health.states())["card"] == "closed"
    print(f"\nfailover: card down → first deposit credited via card_b in {failover_s:.2f} s "
          f"(that deposit {first_s:.2f} s; before {before_s:.2f} s; with the circuit open {after_open_s:.2f} s); "
          f"circuit: min_samples={thresholds.min_samples}, failure_rate={thresholds.failure_rate}, "
          f"open_seconds={thresholds.open_seconds}; back on card after recovery in "
          f"{returned[1]:.2f} s for the probing deposit")
    await stack.psp_mode("card", "up")
    await stack.check_invariants()


async def test_a_capture_at_the_psp_a_deposit_left_sends_it_to_review(stack: Stack) -> None:
    """card is down, so the deposit fails over to card_b and waits on its 3DS challenge; then card reports it
    captured the payment after all. The player may have paid twice: credited once (card_b), in review, alert."""
    player = new_player()
    await stack.psp_mode("card", "down")
    try:
        init = await stack.deposit(method="card", scenario="challenge", player_id=player)
    finally:
        await stack.psp_mode("card", "up")
    assert init["psp"] == "card_b" and init["status"] == "requires_action", init
    late = await post_webhook(stack, captured_event(init["payment_id"], "card_late"), psp="card")
    assert late.json()["status"] == "accepted"
    await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "in_review" and payment["review_reason"] == "captured_at_left_psp", payment
    # Each attempt is an event in the history: the `psp_attempts` memo as it grew.
    history = await stack.client.get_workflow_handle(f"deposit-{init['payment_id']}").fetch_history()
    memos = [e.workflow_properties_modified_event_attributes.upserted_memo.fields["psp_attempts"]
             for e in history.events if e.HasField("workflow_properties_modified_event_attributes")]
    decoded = [await stack.client.data_converter.decode([memo], [list[str]]) for memo in memos]
    assert decoded == [[["card: failover (psp_unavailable)"]],
                       [["card: failover (psp_unavailable)", "card_b: accepted"]]], decoded
    assert await stack.balance(player) == "50.00"  # card_b's capture, credited once
    await eventually(lambda: stack.worker_metric("payloop_alerts_total", kind="deposit.captured_at_left_psp"),
                     lambda count: count >= 1, timeout=10)
    await stack.check_invariants()


async def test_a_capture_reported_after_a_deposit_finished_elsewhere_raises_an_alert(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", player_id=player)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited" and payment["psp"] == "card"
    # The same PSP repeating its capture under a new event id is expected noise: kept, no alert.
    same = await post_webhook(stack, captured_event(init["payment_id"], payment["psp_reference"]), psp="card")
    assert same.json()["status"] == "dead_letter"
    assert init["payment_id"] not in await alerted(stack, "deposit.psp_settled_after_close")
    other = await post_webhook(stack, captured_event(init["payment_id"], "card_b_late"), psp="card_b",
                               secret=WEBHOOK_SECRETS["card_b"])  # card_b's own signature: card_b's word
    assert other.json()["status"] == "dead_letter"
    [row] = [r for r in await stored_events(stack, init["payment_id"]) if r.psp == "card_b"]
    assert (row.state, row.dead_letter_reason) == ("dead_letter", "payment_finished")
    assert init["payment_id"] in await alerted(stack, "deposit.psp_settled_after_close")
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def alerted(stack: Stack, kind: str) -> set[str]:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(sa.select(alerts.c.reference).where(alerts.c.kind == kind))
        return {row.reference for row in rows}


# --- a PSP that may have the payment is never left --------------------------------------------------------------

SLOW_SECONDS = 1.0  # the sandbox's `slow` mode holds a request this long before it handles it


@pytest.fixture(scope="module", params=BACKENDS)
async def short_timeout_stack(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A stack whose PSP calls give up after 0.3 s, so a `slow` PSP times them out."""
    backend = request.param
    async with running_stack(backend, temporal_env.client, tmp_path_factory.mktemp(f"failover-{backend}"),
                             f"payloop-failover-{backend}-{uuid.uuid4().hex[:6]}", slow_seconds=SLOW_SECONDS,
                             psp_http_timeout_seconds=0.3) as stack:
        yield stack


async def create_try_started(stack: Stack, payment_id: str) -> bool:
    description = await stack.client.get_workflow_handle(DepositWorkflow.workflow_id(payment_id)).describe()
    return any(a.activity_type.name == ActivityName.CREATE_PSP_PAYMENT
               and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
               for a in description.raw_description.pending_activities)


async def psp_has(stack: Stack, psp: str, payment_id: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            await build_connectors(stack.settings, http)[psp].get_payment(payment_id)
        except PspNotFound:
            return False
    return True


async def test_a_try_that_may_have_reached_the_psp_keeps_the_deposit_from_failing_over(
    short_timeout_stack: Stack,
) -> None:
    """Try 1 at card times out (card may have created the payment); card then goes down, so tries 2-4 are refused.
    The last error alone says "not taken", but try 1 may have been taken: the deposit asks card, cannot learn the
    answer, and goes to review instead of sending the player to card_b (maybe a second payment)."""
    stack = short_timeout_stack
    await stack.psp_mode("card", "slow")
    player = new_player()
    init = asyncio.create_task(stack.deposit(method="card", amount="30.00", player_id=player))
    payment_id = None
    while payment_id is None:  # the payment id is ours: read it from the workflow list as soon as it exists
        async for execution in stack.client.list_workflows(f"PlayerId = '{player}'"):
            payment_id = execution.id.removeprefix("deposit-")
        await asyncio.sleep(0.02)
    await eventually(lambda: create_try_started(stack, payment_id), bool, 10)
    await asyncio.sleep(0.1)  # try 1 is inside card's slow request now
    await stack.sandbox.post("/control/card", json={"mode": "down"})
    try:
        answer = await init
        assert answer["status"] == "in_review", answer
        final = await stack.wait_final(payment_id)
        assert (final["status"], final["review_reason"], final["psp"]) == ("in_review", "psp_status_unknown", "card")
        assert not await psp_has(stack, "card_b", payment_id)
    finally:
        await stack.psp_mode("card", "up")
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()
