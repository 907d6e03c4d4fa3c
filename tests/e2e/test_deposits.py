"""Deposits end to end through the public API, for every sandbox scenario, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from api import engine
from api.errors import Problem
from api.models import idempotency_keys
from psp.inbox import webhook_events
from workflows.deposit import DepositWorkflow
from tests.e2e.conftest import Stack, eventually, new_player
from tests.e2e.test_players import set_limit
from workflows.types import DepositState


async def test_card_frictionless_deposit_is_credited(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", amount="50.00", player_id=player)
    assert init["status"] in ("pending", "authorized") and init["psp"] == "card" and init["redirect_url"] is None
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited"
    assert payment["amount"] == "50.00" and payment["psp_reference"]
    assert payment["temporal_ui_url"].endswith(f"/workflows/deposit-{init['payment_id']}")
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_ewallet_deposit_is_credited(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="ewallet", amount="12.34", player_id=player)
    assert init["psp"] == "ewallet"
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "12.34"
    await stack.check_invariants()


async def test_challenge_returns_redirect_and_completes_after_the_form(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="challenge", player_id=player)
    assert init["status"] == "requires_action"
    assert init["redirect_url"].startswith(stack.settings.sandbox_psp_url)
    page = await stack.sandbox.get(init["redirect_url"])
    assert page.status_code == 200 and "<form" in page.text
    assert (await stack.payment(init["payment_id"]))["status"] == "requires_action"
    completed = await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
    assert completed.status_code == 303 and completed.headers["location"] == "https://casino.example/return"
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_3ds_failure_fails_without_credit(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="3ds_fail", player_id=player)
    assert init["status"] == "requires_action"
    await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "failed" and payment["failure_code"] == "3ds_failed"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


@pytest.mark.parametrize("method", ["card", "ewallet"])
async def test_decline_is_a_402_and_never_retried(stack: Stack, method: str) -> None:
    player = new_player()
    problem = await stack.deposit(method=method, scenario="decline", player_id=player, expect=402)
    assert problem["code"] == "payment_declined" and problem["decline_code"]
    payment = await stack.wait_final(problem["payment_id"])
    assert payment["status"] == "failed"
    history = await stack.client.get_workflow_handle(f"deposit-{problem['payment_id']}").fetch_history()
    attempts = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
    creates = [e for e in attempts if e.activity_task_started_event_attributes.attempt > 1]
    assert creates == [], "a decline must not be retried"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_flaky_psp_is_retried_until_it_answers(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="flaky", player_id=player)
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    await stack.psp_mode("card", "up")  # forget the two 503s, so they cannot tip card's circuit in later tests
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_no_webhook_is_resolved_by_polling(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="ewallet", scenario="no_webhook", player_id=player)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited"
    history = await stack.client.get_workflow_handle(f"deposit-{init['payment_id']}").fetch_history()
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert "get_psp_payment" in scheduled
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_lost_payment_expires_and_is_cancelled_at_the_psp(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="lost", player_id=player)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "expired"
    at_psp = await stack.sandbox.get(f"/card/v1/payments/{init['payment_id']}")
    assert at_psp.json()["status"] == "cancelled"
    # card's status_poll in the routing file: 3 look-ups, each wait twice the one before (from the stack's 0.5 s).
    history = await stack.client.get_workflow_handle(f"deposit-{init['payment_id']}").fetch_history()
    lookups = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
               and e.activity_task_scheduled_event_attributes.activity_type.name == "get_psp_payment"]
    timers = [e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
              for e in history.events if e.HasField("timer_started_event_attributes")]
    assert len(lookups) == 3
    assert timers == [stack.settings.deposit_webhook_timeout_seconds, 0.5, 1.0], timers
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_duplicate_webhook_credits_once(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="ewallet", scenario="duplicate_webhook", player_id=player)
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    await eventually(lambda: _event_rows(stack, init["payment_id"]), lambda rows: len(rows) >= 1)
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_out_of_order_webhooks_never_move_backwards(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="out_of_order", player_id=player)
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    await eventually(lambda: _event_rows(stack, init["payment_id"]), lambda rows: len(rows) == 2)
    assert (await stack.payment(init["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_wrong_amount_is_not_credited_and_goes_to_review(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="wrong_amount", player_id=player)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "in_review" and payment["review_reason"] == "amount_mismatch"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_capture_in_another_currency_is_not_credited_and_goes_to_review(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="wrong_currency", player_id=player)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "in_review" and payment["review_reason"] == "currency_mismatch"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_slow_psp_still_answers_synchronously(stack: Stack) -> None:
    init = await stack.deposit(method="card", scenario="slow")
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    await stack.check_invariants()


async def test_same_idempotency_key_twice_starts_one_workflow(stack: Stack) -> None:
    player = new_player()
    first = await stack.deposit(method="ewallet", player_id=player, key="same-key-" + player)
    second = await stack.deposit(method="ewallet", player_id=player, key="same-key-" + player)
    assert first == second
    await stack.wait_final(first["payment_id"])
    workflows = [w async for w in stack.client.list_workflows(f"PlayerId = '{player}'")]
    assert len(workflows) == 1
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_same_idempotency_key_with_another_body_is_a_422(stack: Stack) -> None:
    player = new_player()
    key = "reused-" + player
    await stack.deposit(method="ewallet", player_id=player, key=key)
    problem = await stack.deposit(method="ewallet", amount="51.00", player_id=player, key=key, expect=422)
    assert problem["code"] == "idempotency_key_reused"
    await stack.check_invariants()


async def test_concurrent_same_idempotency_key_makes_one_payment(stack: Stack) -> None:
    player = new_player()
    key = "race-" + player
    body = {"amount": "10.00", "currency": "EUR", "method": "ewallet", "player_id": player,
            "return_url": "https://casino.example/return"}
    responses = await asyncio.gather(*[
        stack.api.post("/v1/payments/init", json=body, headers={"Idempotency-Key": key}) for _ in range(5)
    ])
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    ids = {r.json()["payment_id"] for r in responses if r.status_code == 201}
    assert len(ids) == 1
    await stack.wait_final(ids.pop())
    assert await stack.balance(player) == "10.00"
    await stack.check_invariants()


async def test_search_attributes_follow_the_payment(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="ewallet", amount="7.00", player_id=player)
    await stack.wait_final(init["payment_id"])
    query = (f"PlayerId = '{player}' AND PaymentStatus = 'credited' AND PaymentPsp = 'ewallet' "
             f"AND PaymentMethod = 'ewallet' AND PaymentAmountMinor = 700 AND PaymentCurrency = 'EUR'")
    found = await eventually(lambda: _list(stack, query), lambda ws: len(ws) == 1, timeout=10)
    assert found[0].id == f"deposit-{init['payment_id']}"
    await stack.check_invariants()


async def _list(stack: Stack, query: str) -> list:
    return [w async for w in stack.client.list_workflows(query)]


async def _event_rows(stack: Stack, payment_id: str) -> list:
    async with stack.engine.connect() as conn:
        return (await conn.execute(sa.select(webhook_events).where(webhook_events.c.payment_id == payment_id))).all()


def test_payment_ids_are_opaque() -> None:
    from api.idempotency import new_resource_id

    assert re.fullmatch(r"pay_[0-9a-f]{24}", new_resource_id("pay"))
    assert new_resource_id("pay") != new_resource_id("pay")


async def test_an_expired_key_is_a_new_request_and_never_reaches_the_old_payment(stack: Stack) -> None:
    player = new_player()
    key = "expired-" + player
    first = await stack.deposit(method="ewallet", player_id=player, key=key)
    assert (await stack.wait_final(first["payment_id"]))["status"] == "credited"
    async with stack.engine.begin() as conn:  # what 24 h do to a key
        await conn.execute(sa.update(idempotency_keys).where(idempotency_keys.c.key == key)
                           .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    second = await stack.deposit(method="ewallet", amount="20.00", player_id=player, key=key)
    assert second["payment_id"] != first["payment_id"]
    assert (await stack.wait_final(second["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "70.00"
    await stack.check_invariants()


@pytest.mark.parametrize("left_as", ["released", "in_flight"])
async def test_a_retry_after_our_failure_reaches_the_same_payment(stack: Stack, left_as: str) -> None:
    """A request that failed on our side (e.g. a 504 while the PSP was slow) frees its key but keeps the
    payment id, so the client's retry reaches the payment the first attempt started; so does a retry of one
    that died before storing its answer (its key still says in flight) — at once, not after a lock-out."""
    player = new_player()
    key = f"{left_as}-{player}"
    first = await stack.deposit(method="ewallet", player_id=player, key=key)
    async with stack.engine.begin() as conn:
        await conn.execute(sa.update(idempotency_keys).where(idempotency_keys.c.key == key)
                           .values(state=left_as, response_status=None, response_body=None))
    again = await stack.deposit(method="ewallet", player_id=player, key=key)
    assert again["payment_id"] == first["payment_id"]
    await stack.wait_final(first["payment_id"])
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_a_psp_that_refuses_everything_is_not_charged_and_the_deposit_fails(stack: Stack) -> None:
    player = new_player()
    await stack.psp_mode("card", "down")
    await stack.psp_mode("card_b", "down")
    try:
        problem = await stack.deposit(method="card", player_id=player, expect=502)
    finally:
        await stack.psp_mode("card", "up")
        await stack.psp_mode("card_b", "up")
    assert problem["code"] in ("psp_unavailable", "method_unavailable") and problem["retryable"] is True
    assert (await stack.payment(problem["payment_id"]))["status"] == "failed"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_deposits_refused_for_want_of_a_psp_stop_counting_against_the_limits(stack: Stack) -> None:
    player = new_player()
    assert (await set_limit(stack, player, "100.00")).status_code == 200
    await stack.psp_mode("card", "down")
    await stack.psp_mode("card_b", "down")
    try:
        # The first opens the circuits on its failed tries; the next is refused at routing (method_unavailable).
        codes = [(await stack.deposit(method="card", amount="80.00", player_id=player, expect=502))["code"]
                 for _ in range(2)]
    finally:
        await stack.psp_mode("card", "up")
        await stack.psp_mode("card_b", "up")
    assert codes[-1] == "method_unavailable", codes
    paid = await stack.deposit(method="card", amount="80.00", player_id=player)
    assert (await stack.wait_final(paid["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "80.00"
    await stack.check_invariants()


async def test_a_psp_whose_answers_are_lost_sends_the_deposit_to_review_not_to_another_psp(stack: Stack) -> None:
    """500s leave it open whether the PSP took the payment; failing over could charge the player twice."""
    player = new_player()
    await stack.psp_mode("card", "error")
    try:
        init = await stack.deposit(method="card", player_id=player)
    finally:
        await stack.psp_mode("card", "up")
    assert init["status"] == "in_review"
    payment = await stack.payment(init["payment_id"])
    assert payment["review_reason"] == "psp_status_unknown" and payment["psp"] == "card"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_a_finished_deposit_whose_result_no_longer_decodes_is_answered_by_the_workflow(stack: Stack) -> None:
    """GET reads a finished deposit from its close event; a result today's type cannot read (an older version
    wrote it) falls back to the workflow's own answer instead of failing."""
    init = await stack.deposit(method="ewallet", amount="3.00")
    await stack.wait_final(init["payment_id"])
    workflow_id = DepositWorkflow.workflow_id(init["payment_id"])
    not_found = Problem(404, "payment_not_found", "Payment not found", "no payment has this id")
    read = await engine.state(stack.client, workflow_id, DepositWorkflow.status, DepositState, not_found=not_found)
    assert isinstance(read, DepositState) and read.status == "credited"
    unreadable = await engine.state(stack.client, workflow_id, DepositWorkflow.status, int, not_found=not_found)
    assert unreadable == read
    await stack.check_invariants()
