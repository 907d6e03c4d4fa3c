"""A signal is not evidence: whoever reaches Temporal's frontend can signal a workflow, so money moves only on an
event the workflow reads back from the webhook inbox (where only verified deliveries are stored); and an ops
decision sent straight to a workflow is audited by the workflow itself. On SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from temporalio.api.enums.v1 import EventType

from payloop.alerts import alerts
from players import audit
from psp.inbox import webhook_events
from psp.signatures import signed_headers
from tests.e2e.conftest import Stack, eventually, new_player
from tests.e2e.test_payouts import assert_settled, funded_player, payout, wait_payout
from tests.e2e.test_webhooks import captured_event
from workflows.deposit import DepositWorkflow
from workflows.types import ReviewDecision
from workflows.withdrawal import WithdrawalWorkflow


async def alert_kinds(stack: Stack, reference: str) -> set[str]:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(sa.select(alerts.c.kind).where(alerts.c.reference == reference))
        return set(rows.scalars())


async def challenged_deposit(stack: Stack, player: str) -> dict:
    """A card deposit waiting at its 3DS challenge: the PSP says requires_action."""
    init = await stack.deposit(method="card", scenario="challenge", player_id=player, amount="75.00")
    assert init["status"] == "requires_action", init
    return init


async def complete_challenge(stack: Stack, redirect_url: str) -> None:
    path = "/" + redirect_url.split("/", 3)[3]
    response = await stack.sandbox.post(path, data={"outcome": "success"})
    assert response.status_code == 303, response.text


async def test_a_forged_capture_signal_credits_nothing_and_raises_an_alert(stack: Stack) -> None:
    player = new_player()
    init = await challenged_deposit(stack, player)
    payment = await stack.payment(init["payment_id"])
    handle = stack.client.get_workflow_handle(DepositWorkflow.workflow_id(init["payment_id"]))
    # What `temporal workflow signal --name psp_event --input '{…}'` sends: a capture that matches the payment.
    await handle.signal("psp_event", {"event_id": "evt_forged", "psp": payment["psp"],
                                      "psp_reference": payment["psp_reference"], "status": "captured",
                                      "amount_minor": 7500, "currency": "EUR"})
    await handle.signal("psp_event", "captured")  # and one the workflow cannot even decode
    await eventually(lambda: alert_kinds(stack, init["payment_id"]), lambda k: "deposit.unverified_signal" in k)
    assert (await stack.payment(init["payment_id"]))["status"] == "requires_action"
    assert await stack.balance(player) == "0.00"
    # The genuine way still works: the player passes 3DS, the PSP's signed webhook is stored, then credited once.
    await complete_challenge(stack, init["redirect_url"])
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "75.00"
    await stack.check_invariants()


async def test_a_real_event_of_another_payment_is_no_evidence_for_this_one(stack: Stack) -> None:
    other = await stack.deposit(method="ewallet", amount="75.00")
    assert (await stack.wait_final(other["payment_id"]))["status"] == "credited"
    async with stack.engine.connect() as conn:
        stored = (await conn.execute(sa.select(webhook_events).where(
            webhook_events.c.payment_id == other["payment_id"], webhook_events.c.status == "captured"))).first()
    assert stored is not None
    player = new_player()
    init = await challenged_deposit(stack, player)
    handle = stack.client.get_workflow_handle(DepositWorkflow.workflow_id(init["payment_id"]))
    await handle.signal(DepositWorkflow.psp_event, {"psp": stored.psp, "event_id": stored.event_id})
    await eventually(lambda: alert_kinds(stack, init["payment_id"]), lambda k: "deposit.unverified_signal" in k)
    assert (await stack.payment(init["payment_id"]))["status"] == "requires_action"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_events_are_told_apart_by_psp_and_event_id(stack: Stack) -> None:
    """Two PSPs may use one event id: a claim naming (card, E) that the inbox does not hold must not hide the
    genuine (card_b, E) — the workflow dedupes on PSP + event id, like the inbox."""
    player = new_player()
    init = await challenged_deposit(stack, player)
    payment = await stack.payment(init["payment_id"])
    event_id = f"evt_{uuid.uuid4().hex[:12]}"
    handle = stack.client.get_workflow_handle(DepositWorkflow.workflow_id(init["payment_id"]))
    await handle.signal(DepositWorkflow.psp_event, {"psp": "card_b", "event_id": event_id})  # not stored: no evidence
    await eventually(lambda: alert_kinds(stack, init["payment_id"]), lambda k: "deposit.unverified_signal" in k)
    now = datetime.now(timezone.utc)
    async with stack.engine.begin() as conn:  # the inbox stores a verified capture at the deposit's own PSP, same id
        await conn.execute(webhook_events.insert().values(
            psp=payment["psp"], event_id=event_id, payment_id=init["payment_id"],
            psp_reference=payment["psp_reference"], status="captured", amount_minor=7500, currency="EUR",
            state="received", received_at=now, updated_at=now))
    await handle.signal(DepositWorkflow.psp_event, {"psp": payment["psp"], "event_id": event_id})
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "75.00"
    await stack.check_invariants()


async def test_a_review_sent_straight_to_temporal_is_audited_by_the_workflow(stack: Stack) -> None:
    player = await funded_player(stack, wagered=False)  # low turnover: the payout waits for review
    started = await payout(stack, player)
    await wait_payout(stack, started["payout_id"], {"in_review"})
    handle = stack.client.get_workflow_handle(WithdrawalWorkflow.workflow_id(started["payout_id"]))
    # What `temporal workflow update execute --name review` does, bypassing the API and its auth.
    await handle.execute_update(WithdrawalWorkflow.review, ReviewDecision("approve", "cli-user", "looked fine"))
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "paid"
    entries = await audit.entries(stack.engine, f"payout:{started['payout_id']}")
    reviews = [e for e in entries if e["action"] == "payout.review.approve"]
    assert [(e["actor"], e["details"]["reason"]) for e in reviews] == [("cli-user", "looked fine")], entries
    await assert_settled(stack, done)


async def test_unsigned_webhooks_naming_a_payout_waiting_for_kyc_add_nothing_to_its_history(stack: Stack) -> None:
    """A payout waiting (days) for KYC has no use for a PSP re-check: nudges for it must not become signals, or a
    long wait would collect one history event per interval."""
    player = await funded_player(stack, kyc=None)
    started = await payout(stack, player)
    await wait_payout(stack, started["payout_id"], {"kyc_required"})
    body = captured_event(started["payout_id"], "card_forged")
    for _ in range(20):
        response = await stack.api.post("/v1/webhooks/card", content=body,
                                        headers=signed_headers("whsec_attacker", 0, body))
        assert response.status_code == 401, response.text
    handle = stack.client.get_workflow_handle(WithdrawalWorkflow.workflow_id(started["payout_id"]))
    history = await handle.fetch_history()
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events
               if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert signals == [], signals
    await handle.cancel()
    await assert_settled(stack, await wait_payout(stack, started["payout_id"]))
