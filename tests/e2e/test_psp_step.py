"""The PSP step's end-of-wait rule, end to end on SQLite and PostgreSQL: a payment or payout whose outcome never
comes is cancelled at the PSP, and money is released only when the PSP confirms; a PSP that cannot confirm (it
refuses the cancel, or stays down) sends it to review with an alert, the money kept where it is."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from payloop.alerts import alerts
from psp.inbox import webhook_events
from tests.conftest import BACKENDS
from tests.e2e.conftest import Stack, eventually, new_player, running_stack
from tests.e2e.test_payouts import (
    assert_settled,
    funded_player,
    get_payout,
    payout,
    wait_payout,
)
from workflows.types import PspEvidence
from workflows.withdrawal import WithdrawalWorkflow

ROUTING_FILE = Path(__file__).resolve().parents[2] / "psp" / "routing.yaml"


async def alert_kinds(stack: Stack, reference: str) -> set[str]:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(sa.select(alerts.c.kind).where(alerts.c.reference == reference))
        return set(rows.scalars())


async def at_psp(stack: Stack, psp: str, kind: str, reference: str) -> dict[str, Any]:
    """The record as the sandbox PSP (card family: our status words) sees it."""
    response = await stack.sandbox.get(f"/{psp}/v1/{kind}/{reference}")
    assert response.status_code == 200, response.text
    return response.json()


async def held_in_review(stack: Stack, payout_id: str) -> dict[str, Any]:
    waiting = await wait_payout(stack, payout_id, {"in_review"}, timeout=40)
    assert (waiting["review_reason"], waiting["hold"]) == ("psp_status_unknown", "held"), waiting
    assert "withdrawal.psp_status_unknown" in await alert_kinds(stack, payout_id)
    return waiting


async def reject(stack: Stack, payout_id: str) -> dict[str, Any]:
    decided = await stack.api.post(f"/v1/ops/payouts/{payout_id}/review",
                                   json={"decision": "reject", "reviewer": "ops"})
    assert decided.status_code == 200, decided.text
    return await wait_payout(stack, payout_id)


# --- payouts ---------------------------------------------------------------------------------------------


async def test_a_lost_payout_is_cancelled_at_the_psp_before_its_hold_is_voided(stack: Stack) -> None:
    player = await funded_player(stack, method="card")
    started = await payout(stack, player, scenario="lost")
    done = await wait_payout(stack, started["payout_id"], timeout=30)
    assert (done["status"], done["failure_code"], done["psp"]) == ("cancelled", "psp_timeout", "card"), done
    assert done["psp_reference"], "the PSP's reference is kept from its first answer"
    assert (await at_psp(stack, "card", "payouts", started["payout_id"]))["status"] == "cancelled"
    assert await stack.balance(player) == "100.00"
    await assert_settled(stack, done)


async def test_a_payout_the_psp_will_not_cancel_goes_to_review_with_its_hold_kept(stack: Stack) -> None:
    player = await funded_player(stack, method="card")
    started = await payout(stack, player, scenario="lost_uncancellable")
    waiting = await held_in_review(stack, started["payout_id"])
    assert waiting["psp_reference"]
    assert (await at_psp(stack, "card", "payouts", started["payout_id"]))["status"] == "pending"
    assert await stack.balance(player) == "60.00"  # still held: no timer releases it
    await stack.check_invariants()
    await assert_settled(stack, await reject(stack, started["payout_id"]))  # a person decided


async def test_a_payout_whose_psp_stays_down_through_the_wait_goes_to_review_with_its_hold_kept(stack: Stack) -> None:
    player = await funded_player(stack, method="card")
    started = await payout(stack, player, scenario="lost")
    await wait_payout(stack, started["payout_id"], {"processing"})
    await stack.psp_mode("card", "error")  # look-ups and the cancel fail from now on
    try:
        await held_in_review(stack, started["payout_id"])
        assert await stack.balance(player) == "60.00"
    finally:
        await stack.psp_mode("card", "up")
    await stack.check_invariants()
    await assert_settled(stack, await reject(stack, started["payout_id"]))


# --- deposits --------------------------------------------------------------------------------------------


async def test_a_lost_deposit_expires_only_once_the_psp_confirms_the_cancel(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="lost", player_id=player)
    final = await stack.wait_final(init["payment_id"], timeout=30)
    assert (final["status"], final["failure_code"]) == ("expired", "psp_timeout"), final
    assert (await at_psp(stack, "card", "payments", init["payment_id"]))["status"] == "cancelled"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_a_deposit_the_psp_will_not_cancel_goes_to_review(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="lost_uncancellable", player_id=player)
    final = await stack.wait_final(init["payment_id"], timeout=30)
    assert (final["status"], final["review_reason"]) == ("in_review", "psp_status_unknown"), final
    assert (await at_psp(stack, "card", "payments", init["payment_id"]))["status"] == "pending"
    assert "deposit.psp_status_unknown" in await alert_kinds(stack, init["payment_id"])
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_a_deposit_whose_psp_stays_down_through_the_wait_goes_to_review(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="lost", player_id=player)
    assert init["status"] == "pending"
    await stack.psp_mode("card", "error")
    try:
        final = await stack.wait_final(init["payment_id"], timeout=30)
    finally:
        await stack.psp_mode("card", "up")
    assert (final["status"], final["review_reason"]) == ("in_review", "psp_status_unknown"), final
    assert "deposit.psp_status_unknown" in await alert_kinds(stack, init["payment_id"])
    assert (await at_psp(stack, "card", "payments", init["payment_id"]))["status"] == "pending"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


# --- payouts poll on their PSP's own schedule ------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
async def quick_polling_stack(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """card polls 3 times, at most 0.2 s apart (routing file), while the settings say 1 poll after 30 s."""
    workdir = tmp_path_factory.mktemp(f"quick-poll-{request.param}")
    routing = ROUTING_FILE.read_text()
    card_poll = "status_poll: {attempts: 3, backoff: 2, max_interval_seconds: 60}"
    assert card_poll in routing
    routing_file = workdir / "routing.yaml"
    routing_file.write_text(routing.replace(card_poll, "status_poll: {attempts: 3, backoff: 1, max_interval_seconds: 1}"))
    async with running_stack(request.param, temporal_env.client, workdir, f"quick-poll-{request.param}",
                             routing_file=routing_file, payout_status_poll_attempts=1,
                             payout_status_poll_interval_seconds=30.0, payout_webhook_timeout_seconds=1.0) as stack:
        yield stack


async def look_ups(client: Client, payout_id: str) -> list[str]:
    history = await client.get_workflow_handle(WithdrawalWorkflow.workflow_id(payout_id)).fetch_history()
    return [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and re.match(r"(get|cancel)_psp_payout", e.activity_task_scheduled_event_attributes.activity_type.name)]


async def test_a_silent_payout_is_resolved_by_polling_on_its_psps_schedule(quick_polling_stack: Stack) -> None:
    stack = quick_polling_stack
    player = await funded_player(stack, method="card")
    done = await wait_payout(stack, (await payout(stack, player, scenario="no_webhook"))["payout_id"])
    assert done["status"] == "paid", done
    assert await look_ups(stack.client, done["payout_id"]) == ["get_psp_payout"]
    await assert_settled(stack, done)


async def test_a_lost_payout_polls_as_often_as_its_psp_says_then_cancels(quick_polling_stack: Stack) -> None:
    """3 look-ups (the routing file's), not 1 (the setting's), each at most 1 s apart (the setting: 30 s)."""
    stack = quick_polling_stack
    player = await funded_player(stack, method="card")
    started = await payout(stack, player, scenario="lost")
    done = await eventually(lambda: get_payout(stack, started["payout_id"]), lambda p: p["status"] == "cancelled",
                            timeout=20)
    assert await look_ups(stack.client, done["payout_id"]) == ["get_psp_payout"] * 3 + ["cancel_psp_payout"]
    await assert_settled(stack, done)


async def test_a_verified_outcome_that_arrives_during_the_review_decides_instead_of_a_person(stack: Stack) -> None:
    """A payout in review because its PSP could not confirm a cancel: when the PSP's signed `paid` webhook then
    arrives, the payout is paid (hold posted) — a reviewer's later reject would otherwise pay the player twice."""
    player = await funded_player(stack, method="card")
    started = await payout(stack, player, scenario="lost_uncancellable")
    waiting = await held_in_review(stack, started["payout_id"])
    event_id = f"evt_{uuid.uuid4().hex[:12]}"
    now = datetime.now(timezone.utc)
    async with stack.engine.begin() as conn:  # what the API stores for a verified delivery
        await conn.execute(webhook_events.insert().values(
            psp="card", event_id=event_id, payment_id=started["payout_id"], psp_reference=waiting["psp_reference"],
            status="paid", amount_minor=4000, currency="EUR", state="received", received_at=now, updated_at=now,
            kind="payout"))
    handle = stack.client.get_workflow_handle(WithdrawalWorkflow.workflow_id(started["payout_id"]))
    await handle.signal(WithdrawalWorkflow.psp_event, PspEvidence("card", event_id))
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "paid" and done["reviewed_by"] is None, done
    assert await stack.balance(player) == "60.00"
    await assert_settled(stack, done)
