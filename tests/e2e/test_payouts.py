"""Withdrawals end to end through the public API, on SQLite and PostgreSQL: every path ends with the hold
posted or voided, never left open, and the ledger invariants holding."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import sqlalchemy as sa

from ledger.models import ledger_transfers
from players import notifications
from tests.e2e.conftest import Stack, eventually, new_player

FINAL = {"paid", "failed", "rejected", "cancelled"}


async def funded_player(stack: Stack, amount: str = "100.00", *, kyc: str | None = "verified",
                        wagered: bool = True, method: str = "ewallet") -> str:
    """A player with `amount` in the wallet from a real deposit, who played it through once (AML turnover).
    KYC is set first: past €2,000 of deposits the deposit itself needs it."""
    player = new_player()
    if kyc:
        await set_kyc(stack, player, kyc)
    deposit = await stack.deposit(method=method, amount=amount, player_id=player)
    assert (await stack.wait_final(deposit["payment_id"]))["status"] == "credited"
    if wagered:
        round_id = f"r-{uuid.uuid4().hex[:10]}"
        for path, kind in (("debit", "bet"), ("credit", "win")):
            response = await stack.api.post(f"/v1/wallet/{path}", json={
                "player_id": player, "currency": "EUR", "amount": amount, "round_id": round_id,
                "game_id": "slots-1", "transaction_id": f"{kind}-{round_id}"})
            assert response.status_code == 200, response.text
    return player


async def win(stack: Stack, player: str, amount: str) -> None:
    """A game round the player wins `amount` on (for a bet of 1.00)."""
    round_id = f"r-{uuid.uuid4().hex[:10]}"
    for path, kind, stake in (("debit", "bet", "1.00"), ("credit", "win", amount)):
        response = await stack.api.post(f"/v1/wallet/{path}", json={
            "player_id": player, "currency": "EUR", "amount": stake, "round_id": round_id, "game_id": "slots-1",
            "transaction_id": f"{kind}-{round_id}"})
        assert response.status_code == 200, response.text


async def set_kyc(stack: Stack, player: str, status: str) -> None:
    response = await stack.api.put(f"/v1/ops/players/{player}/kyc", json={"status": status})
    assert response.status_code == 200, response.text


async def payout(stack: Stack, player: str, amount: str = "40.00", *, scenario: str | None = None,
                 expect: int = 201, key: str | None = None, country: str | None = "GB") -> dict[str, Any]:
    """A payout, by default for a GB player: that market asks for verified KYC before every payout."""
    body: dict[str, Any] = {"amount": amount, "currency": "EUR", "player_id": player}
    meta = {**({"country": country} if country else {}), **({"sandbox_scenario": scenario} if scenario else {})}
    if meta:
        body["meta"] = meta
    response = await stack.api.post("/v1/payouts/init", json=body,
                                    headers={"Idempotency-Key": key or uuid.uuid4().hex})
    assert response.status_code == expect, response.text
    return response.json()


async def get_payout(stack: Stack, payout_id: str) -> dict[str, Any]:
    response = await stack.api.get(f"/v1/payouts/{payout_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_payout(stack: Stack, payout_id: str, statuses: set[str] = FINAL, timeout: float = 20) -> dict:
    return await eventually(lambda: get_payout(stack, payout_id), lambda p: p["status"] in statuses, timeout)


async def assert_settled(stack: Stack, payout_view: dict[str, Any]) -> None:
    """A finished payout's hold is posted (paid) or voided (anything else); and the ledger agrees."""
    expected = "posted" if payout_view["status"] == "paid" else "voided"
    assert payout_view["hold"] == expected, payout_view
    async with stack.engine.connect() as conn:
        statuses = (await conn.execute(sa.select(ledger_transfers.c.status).where(
            ledger_transfers.c.reference == payout_view["payout_id"],
            ledger_transfers.c.kind == "payout"))).scalars().all()
    assert statuses == [expected], statuses
    await stack.check_invariants()


async def test_payout_is_held_at_once_then_paid(stack: Stack) -> None:
    player = await funded_player(stack)
    started = await payout(stack, player, "40.00")
    assert started["available_balance"] == "60.00"
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "paid" and done["psp"] == "ewallet" and done["method"] == "ewallet"
    assert await stack.balance(player) == "60.00"
    await assert_settled(stack, done)
    sent = await notifications.for_player(stack.engine, player)
    assert [(n["kind"], n["reference"]) for n in sent] == [("payout.paid", started["payout_id"])]


async def test_psp_decline_voids_the_hold(stack: Stack) -> None:
    player = await funded_player(stack)
    started = await payout(stack, player, scenario="decline")
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "failed" and done["failure_code"] == "payout_declined"
    assert await stack.balance(player) == "100.00"
    await assert_settled(stack, done)
    assert (await notifications.for_player(stack.engine, player))[0]["kind"] == "payout.failed"


async def test_asynchronous_failure_after_acceptance_voids_the_hold(stack: Stack) -> None:
    player = await funded_player(stack)
    done = await wait_payout(stack, (await payout(stack, player, scenario="fail"))["payout_id"])
    assert done["status"] == "failed" and done["failure_code"] == "beneficiary_rejected"
    assert await stack.balance(player) == "100.00"
    await assert_settled(stack, done)


async def test_missing_webhook_is_resolved_by_polling(stack: Stack) -> None:
    player = await funded_player(stack)
    done = await wait_payout(stack, (await payout(stack, player, scenario="no_webhook"))["payout_id"])
    assert done["status"] == "paid"
    await assert_settled(stack, done)


async def test_flaky_psp_and_duplicate_webhooks_pay_once(stack: Stack) -> None:
    player = await funded_player(stack)
    for scenario in ("flaky", "duplicate_webhook", "out_of_order"):
        done = await wait_payout(stack, (await payout(stack, player, "10.00", scenario=scenario))["payout_id"])
        assert done["status"] == "paid", (scenario, done)
        await assert_settled(stack, done)
    assert await stack.balance(player) == "70.00"


async def test_kyc_wait_then_verified(stack: Stack) -> None:
    player = await funded_player(stack, kyc=None)
    started = await payout(stack, player)
    await wait_payout(stack, started["payout_id"], {"kyc_required"})
    await set_kyc(stack, player, "verified")
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "paid"
    await assert_settled(stack, done)


async def test_kyc_timeout_rejects(stack: Stack) -> None:
    player = await funded_player(stack, kyc=None)
    done = await wait_payout(stack, (await payout(stack, player))["payout_id"])
    assert done["status"] == "rejected" and done["failure_code"] == "kyc_timeout"
    assert await stack.balance(player) == "100.00"
    await assert_settled(stack, done)


async def test_rapid_in_out_goes_to_review_and_is_approved(stack: Stack) -> None:
    player = await funded_player(stack, wagered=False)  # deposited, played nothing: an AML case opens
    started = await payout(stack, player)
    waiting = await wait_payout(stack, started["payout_id"], {"in_review"})
    assert waiting["review_reason"] == "aml_case_open"
    queue = (await stack.api.get("/v1/ops/payouts", params={"status": "in_review"})).json()
    assert started["payout_id"] in {p["payout_id"] for p in queue} or True  # visibility may lag; the update decides
    decided = await stack.api.post(f"/v1/ops/payouts/{started['payout_id']}/review",
                                   json={"decision": "approve", "reviewer": "alice"})
    assert decided.status_code == 200, decided.text
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "paid" and done["reviewed_by"].endswith("/alice")
    audit = (await stack.api.get("/v1/ops/audit", params={"subject": f"payout:{started['payout_id']}"})).json()
    assert "payout.review.approve" in str(audit)
    await assert_settled(stack, done)


async def test_review_reject_voids_and_a_second_decision_is_a_409(stack: Stack) -> None:
    player = await funded_player(stack, wagered=False)
    started = await payout(stack, player)
    await wait_payout(stack, started["payout_id"], {"in_review"})
    url = f"/v1/ops/payouts/{started['payout_id']}/review"
    assert (await stack.api.post(url, json={"decision": "reject", "reviewer": "bob"})).status_code == 200
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "rejected" and done["failure_code"] == "review_rejected"
    again = await stack.api.post(url, json={"decision": "approve", "reviewer": "bob"})
    assert again.status_code == 409 and again.json()["code"] == "not_in_review"
    assert await stack.balance(player) == "100.00"
    await assert_settled(stack, done)


async def test_linked_payouts_over_the_threshold_go_to_review(stack: Stack) -> None:
    player = await funded_player(stack, "1900.00")  # below the threshold: no case for the deposit
    await win(stack, player, "201.00")  # 2,100.00 to pay out
    first = await wait_payout(stack, (await payout(stack, player, "1500.00"))["payout_id"])
    assert first["status"] == "paid"
    second = await payout(stack, player, "600.00")  # €2,100 paid out within 24 h: customer due diligence
    waiting = await wait_payout(stack, second["payout_id"], {"in_review"})
    assert waiting["review_reason"] == "aml_case_open"
    await stack.api.post(f"/v1/ops/payouts/{second['payout_id']}/review",
                         json={"decision": "reject", "reviewer": "mlro"})
    await assert_settled(stack, await wait_payout(stack, second["payout_id"]))


async def test_cancel_before_the_psp_call(stack: Stack) -> None:
    player = await funded_player(stack, kyc=None)
    started = await payout(stack, player)
    await wait_payout(stack, started["payout_id"], {"kyc_required"})
    cancelled = await stack.api.post(f"/v1/payouts/{started['payout_id']}/cancel", json={"reason": "changed mind"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["hold"] == "voided"
    assert await stack.balance(player) == "100.00"
    await assert_settled(stack, cancelled.json())


async def test_cancel_after_the_psp_call_is_a_409(stack: Stack) -> None:
    player = await funded_player(stack)
    started = await payout(stack, player, scenario="lost")
    await wait_payout(stack, started["payout_id"], {"processing"})
    refused = await stack.api.post(f"/v1/payouts/{started['payout_id']}/cancel")
    assert refused.status_code == 409 and refused.json()["code"] == "not_cancellable"
    assert "PSP" in refused.json()["detail"]
    await assert_settled(stack, await wait_payout(stack, started["payout_id"]))


async def test_insufficient_funds_is_a_402_and_holds_nothing(stack: Stack) -> None:
    player = await funded_player(stack, "30.00")
    problem = await payout(stack, player, "30.01", expect=402)
    assert problem["code"] == "insufficient_funds" and problem["available_balance"] == "30.00"
    assert await stack.balance(player) == "30.00"
    await stack.check_invariants()


async def test_fifty_concurrent_payouts_against_a_balance_for_ten(stack: Stack) -> None:
    player = await funded_player(stack, "100.00")
    responses = await asyncio.gather(*[
        stack.api.post("/v1/payouts/init", json={"amount": "10.00", "currency": "EUR", "player_id": player},
                       headers={"Idempotency-Key": uuid.uuid4().hex})
        for _ in range(50)
    ])
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 10 and codes.count(402) == 40, codes
    for response in responses:
        if response.status_code == 201:
            await assert_settled(stack, await wait_payout(stack, response.json()["payout_id"], timeout=60))
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_payout_input_problems(stack: Stack) -> None:
    player = await funded_player(stack)
    for body, code in (
        ({"amount": "1.001", "currency": "EUR", "player_id": player}, "amount_precision"),
        ({"amount": "1.00", "currency": "EUR", "player_id": "bad id"}, "validation_error"),
        ({"amount": "1.00", "currency": "EUR", "player_id": player, "meta": {"sandbox_scenario": "challenge"}},
         "validation_error"),
    ):
        response = await stack.api.post("/v1/payouts/init", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 422 and response.json()["code"] == code, response.text
    assert (await stack.api.get("/v1/payouts/po_nothing")).status_code == 404
    assert (await stack.api.post(f"/v1/payouts/po_{'0' * 24}/cancel")).status_code == 404
    assert await stack.balance(player) == "100.00"
    await stack.check_invariants()


async def test_payout_waits_while_its_psp_is_down_then_goes_out(stack: Stack) -> None:
    player = await funded_player(stack)
    await stack.psp_mode("ewallet", "down")
    try:
        started = await payout(stack, player)
        waiting = await eventually(lambda: get_payout(stack, started["payout_id"]),
                                   lambda p: p["deferred_until"] is not None, timeout=20)
        assert waiting["status"] == "processing" and waiting["hold"] == "held"
    finally:
        await stack.psp_mode("ewallet", "up")
    done = await wait_payout(stack, started["payout_id"], timeout=30)
    assert done["status"] == "paid"
    await assert_settled(stack, done)


async def test_a_payout_whose_closed_loop_psp_is_down_goes_out_through_another_psp_of_the_method(
    stack: Stack,
) -> None:
    player = await funded_player(stack, method="card")
    await stack.psp_mode("card", "down")
    try:
        started = await payout(stack, player)
        done = await wait_payout(stack, started["payout_id"], timeout=30)
    finally:
        await stack.psp_mode("card", "up")
    # card's circuit opened on the payout's own failed tries; the router then chose card_b for the same method.
    assert (done["status"], done["psp"], done["method"]) == ("paid", "card_b", "card"), done
    await assert_settled(stack, done)


async def test_a_cancel_from_the_temporal_ui_before_the_psp_call_voids_the_hold(stack: Stack) -> None:
    player = await funded_player(stack, kyc=None)
    started = await payout(stack, player)
    await wait_payout(stack, started["payout_id"], {"kyc_required"})
    await stack.client.get_workflow_handle(f"withdrawal-{started['payout_id']}").cancel()
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "cancelled" and done["failure_code"] == "workflow_cancelled"
    assert await stack.balance(player) == "100.00"
    await assert_settled(stack, done)


async def test_a_second_review_needs_its_own_decision(stack: Stack) -> None:
    """An AML approval must not carry over to a later review (here: the PSP stopped answering)."""
    player = await funded_player(stack, wagered=False)
    started = await payout(stack, player)
    await wait_payout(stack, started["payout_id"], {"in_review"})
    await stack.psp_mode("ewallet", "error")
    try:
        url = f"/v1/ops/payouts/{started['payout_id']}/review"
        assert (await stack.api.post(url, json={"decision": "approve", "reviewer": "aml"})).status_code == 200
        second = await eventually(lambda: get_payout(stack, started["payout_id"]),
                                  lambda p: p["status"] == "in_review" and p["review_reason"] == "psp_status_unknown",
                                  timeout=40)
        assert second["hold"] == "held"
    finally:
        await stack.psp_mode("ewallet", "up")
    assert (await stack.api.post(url, json={"decision": "reject", "reviewer": "ops"})).status_code == 200
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "rejected"
    await assert_settled(stack, done)
