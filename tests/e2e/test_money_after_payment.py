"""Money after the payment, end to end through the public API on SQLite and PostgreSQL: deposit reviews, refunds,
disputes and fees. Every test ends with the ledger invariants (`payloop ledger check`)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import sqlalchemy as sa

from ledger.models import ledger_accounts, psp_fees
from psp.base import CreatePaymentRequest
from psp.registry import build_connectors
from tests.e2e.conftest import Stack, eventually, new_player
from tests.e2e.test_payouts import funded_player, payout, wait_payout
from tests.e2e.test_webhooks import captured_event, post_webhook, stored_events, waiting_payment

REFUND_FINAL = {"succeeded", "failed"}


async def credited_deposit(stack: Stack, amount: str = "50.00", *, method: str = "card",
                           player: str | None = None) -> tuple[str, str]:
    player = player or new_player()
    init = await stack.deposit(method=method, amount=amount, player_id=player)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited", payment
    return player, init["payment_id"]


async def bet(stack: Stack, player: str, amount: str) -> None:
    """The player spends `amount` on a game round (lost): money a refund or dispute can no longer take back."""
    round_id = f"r-{uuid.uuid4().hex[:10]}"
    response = await stack.api.post("/v1/wallet/debit", json={
        "player_id": player, "currency": "EUR", "amount": amount, "round_id": round_id, "game_id": "slots-1",
        "transaction_id": f"bet-{round_id}"})
    assert response.status_code == 200, response.text


async def review(stack: Stack, payment_id: str, decision: str, *, amount: str | None = None,
                 expect: int | tuple[int, ...] = (200, 202)) -> dict[str, Any]:
    body: dict[str, Any] = {"decision": decision, "reviewer": "jane.doe", "reason": "checked with the PSP"}
    if amount is not None:
        body["amount"] = amount
    response = await stack.api.post(f"/v1/ops/payments/{payment_id}/review", json=body)
    expected = expect if isinstance(expect, tuple) else (expect,)
    assert response.status_code in expected, response.text
    return response.json()


async def refund(stack: Stack, payment_id: str, amount: str, *, scenario: str | None = None,
                 allow_shortfall: bool = False, expect: int = 201, key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"amount": amount, "reason": "player asked"}
    if scenario:
        body["meta"] = {"sandbox_scenario": scenario}
    if allow_shortfall:
        body["allow_shortfall"] = True
    response = await stack.api.post(f"/v1/payments/{payment_id}/refunds", json=body,
                                    headers={"Idempotency-Key": key or uuid.uuid4().hex})
    assert response.status_code == expect, response.text
    return response.json()


async def get_refund(stack: Stack, refund_id: str) -> dict[str, Any]:
    response = await stack.api.get(f"/v1/refunds/{refund_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_refund(stack: Stack, refund_id: str, statuses: set[str] = REFUND_FINAL,
                      timeout: float = 30) -> dict[str, Any]:
    return await eventually(lambda: get_refund(stack, refund_id), lambda r: r["status"] in statuses, timeout)


async def in_review(stack: Stack, payment_id: str) -> dict[str, Any]:
    """The deposit in review, once it shows the PSP's own view (looked up as the review opens)."""
    return await eventually(lambda: stack.payment(payment_id),
                            lambda p: p["status"] == "in_review" and p["review_psp_view"] is not None, 30)


async def wait_status(stack: Stack, payment_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    return await eventually(lambda: stack.payment(payment_id), lambda p: p["status"] == status, timeout)


async def account_balance(stack: Stack, account_id: str) -> int:
    async with stack.engine.connect() as conn:
        balance = (await conn.execute(sa.select(ledger_accounts.c.posted_balance).where(
            ledger_accounts.c.id == account_id))).scalar_one_or_none()
    return int(balance or 0)


async def open_dispute(stack: Stack, payment_id: str, amount: str, *, psp: str = "card") -> str:
    response = await stack.sandbox.post(f"/control/{psp}/disputes",
                                        json={"payment_id": payment_id, "amount": amount, "reason_code": "10.4"})
    assert response.status_code == 201, response.text
    return response.json()["dispute_id"]


async def resolve_dispute(stack: Stack, dispute_id: str, outcome: str, *, psp: str = "card") -> None:
    response = await stack.sandbox.post(f"/control/{psp}/disputes/{dispute_id}/resolve", json={"outcome": outcome})
    assert response.status_code == 200, response.text


async def dispute_view(stack: Stack, dispute_id: str) -> dict[str, Any] | None:
    response = await stack.api.get("/v1/ops/disputes", params={"limit": 200})
    assert response.status_code == 200, response.text
    for dispute in response.json()["disputes"]:
        if dispute["dispute_id"] == dispute_id:
            return dispute
    return None


async def wait_dispute(stack: Stack, dispute_id: str, state: str) -> dict[str, Any]:
    return await eventually(lambda: dispute_view(stack, dispute_id), lambda d: d is not None and d["state"] == state,
                            30)


# --- deposit review -------------------------------------------------------------------------------------------


async def test_review_approve_credits_what_the_psp_captured(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="wrong_amount", player_id=player)
    waiting = await in_review(stack, init["payment_id"])
    assert (waiting["status"], waiting["review_reason"]) == ("in_review", "amount_mismatch"), waiting
    assert waiting["credited_amount"] == "0.00" and waiting["credit_transfer_id"] is None
    captured = waiting["review_psp_view"]["amount"]
    done = await review(stack, init["payment_id"], "approve", expect=200)
    assert done["status"] == "credited" and done["credited_amount"] == captured, done
    assert done["credit_transfer_id"] and done["reviewed_by"].endswith("/jane.doe")
    assert await stack.balance(player) == captured
    again = await stack.api.post(f"/v1/ops/payments/{init['payment_id']}/review",
                                 json={"decision": "approve", "reviewer": "jane.doe"})
    assert again.status_code == 409 and again.json()["code"] == "not_in_review", again.text
    await stack.check_invariants()


async def test_review_approve_less_refunds_the_rest_at_the_psp(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="wrong_amount", player_id=player)
    waiting = await in_review(stack, init["payment_id"])
    captured = waiting["review_psp_view"]["amount"]
    too_much = await stack.api.post(f"/v1/ops/payments/{init['payment_id']}/review",
                                    json={"decision": "approve", "reviewer": "jane.doe", "amount": "999.00"})
    assert too_much.status_code == 422 and too_much.json()["code"] == "amount_over_captured", too_much.text
    await review(stack, init["payment_id"], "approve", amount="30.00")
    payment = await eventually(lambda: stack.payment(init["payment_id"]),
                               lambda p: p["status"] == "credited" and p["refund_ids"], 30)
    assert payment["credited_amount"] == "30.00" and await stack.balance(player) == "30.00"
    rest = await wait_refund(stack, payment["refund_ids"][0])
    assert rest["status"] == "succeeded", rest
    remainder = int(captured.replace(".", "")) - 3000
    assert rest["amount"] == f"{remainder // 100}.{remainder % 100:02d}"
    payment = await stack.payment(init["payment_id"])
    assert payment["refunded_amount"] == rest["amount"] and payment["captured_amount"] == captured
    await stack.check_invariants()


async def test_review_reject_refunds_the_capture(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="wrong_amount", player_id=player)
    waiting = await in_review(stack, init["payment_id"])
    await review(stack, init["payment_id"], "reject")
    done = await wait_status(stack, init["payment_id"], "refunded")
    assert done["refunded_amount"] == waiting["review_psp_view"]["amount"] and done["credited_amount"] == "0.00"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_review_reject_with_nothing_captured_cancels_and_closes(stack: Stack) -> None:
    player = new_player()
    payment_id, reference = await waiting_payment(stack, player)
    failed = captured_event(payment_id, "card_someone_elses", status="failed", type="payment.failed")
    assert (await post_webhook(stack, failed)).status_code == 200
    waiting = await in_review(stack, payment_id)
    assert waiting["review_reason"] == "reference_mismatch", waiting
    approve = await stack.api.post(f"/v1/ops/payments/{payment_id}/review",
                                   json={"decision": "approve", "reviewer": "jane.doe"})
    assert approve.status_code == 409 and approve.json()["code"] == "nothing_captured", approve.text
    await review(stack, payment_id, "reject")
    done = await wait_status(stack, payment_id, "rejected")
    assert done["refunded_amount"] == "0.00" and done["credited_amount"] == "0.00"
    at_psp = (await stack.sandbox.get(f"/card/v1/payments/{payment_id}")).json()
    assert at_psp["status"] == "cancelled", at_psp
    await stack.check_invariants()


async def test_ops_list_finds_payments_by_filter(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="wrong_amount", player_id=player)
    await in_review(stack, init["payment_id"])
    _, credited = await credited_deposit(stack, player=player)
    listed = (await stack.api.get("/v1/ops/payments", params={"player_id": player})).json()
    assert [p["payment_id"] for p in listed["payments"]] == [credited, init["payment_id"]]  # newest first
    reviews = (await stack.api.get("/v1/ops/payments", params={
        "player_id": player, "status": "in_review", "review_reason": "amount_mismatch"})).json()
    assert [p["payment_id"] for p in reviews["payments"]] == [init["payment_id"]]
    assert reviews["payments"][0]["temporal_ui_url"].endswith(f"deposit-{init['payment_id']}")
    page = (await stack.api.get("/v1/ops/payments", params={"player_id": player, "limit": 1})).json()
    second = (await stack.api.get("/v1/ops/payments", params={
        "player_id": player, "limit": 1, "before": page["next_before"]})).json()
    assert [p["payment_id"] for p in page["payments"] + second["payments"]] == [credited, init["payment_id"]]
    bad = await stack.api.get("/v1/ops/payments", params={"status": "nonsense"})
    assert bad.status_code == 422, bad.text
    await review(stack, init["payment_id"], "reject")
    await wait_status(stack, init["payment_id"], "refunded")
    await stack.check_invariants()


# --- refunds --------------------------------------------------------------------------------------------------


async def test_partial_and_repeated_refunds_up_to_the_captured_amount(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    first = await refund(stack, payment_id, "20.00")
    assert first["status"] == "pending" and first["refund_id"].startswith("ref_")
    assert await stack.balance(player) == "30.00"  # held at once
    assert (await wait_refund(stack, first["refund_id"]))["status"] == "succeeded"
    second = await refund(stack, payment_id, "30.00")
    assert (await wait_refund(stack, second["refund_id"]))["status"] == "succeeded"
    over = await refund(stack, payment_id, "0.01", expect=409)
    assert over["code"] == "refund_exceeds_refundable", over
    payment = await stack.payment(payment_id)
    assert (payment["refunded_amount"], payment["refundable_amount"], payment["status"]) == ("50.00", "0.00",
                                                                                         "credited")
    assert await stack.balance(player) == "0.00"
    listed = (await stack.api.get(f"/v1/payments/{payment_id}/refunds")).json()
    assert {r["refund_id"] for r in listed["refunds"]} == {first["refund_id"], second["refund_id"]}
    await stack.check_invariants()


async def test_refund_is_idempotent_per_key(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    key = uuid.uuid4().hex
    first = await refund(stack, payment_id, "10.00", key=key)
    again = await refund(stack, payment_id, "10.00", key=key)
    assert again["refund_id"] == first["refund_id"]
    await wait_refund(stack, first["refund_id"])
    assert await stack.balance(player) == "40.00"
    await stack.check_invariants()


async def test_twenty_concurrent_refunds_take_exactly_the_captured_amount(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    answers = await asyncio.gather(*(stack.api.post(
        f"/v1/payments/{payment_id}/refunds", json={"amount": "10.00", "reason": "race"},
        headers={"Idempotency-Key": uuid.uuid4().hex}) for _ in range(20)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(201) == 5 and len([c for c in codes if c in (409, 422)]) == 15, codes
    refused = {r.json()["code"] for r in answers if r.status_code != 201}
    assert refused == {"refund_exceeds_refundable"}, refused
    for answer in answers:
        if answer.status_code == 201:
            assert (await wait_refund(stack, answer.json()["refund_id"]))["status"] == "succeeded"
    assert await stack.balance(player) == "0.00"
    assert (await stack.payment(payment_id))["refunded_amount"] == "50.00"
    await stack.check_invariants()


async def test_refund_the_psp_declines_gives_the_money_back(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    started = await refund(stack, payment_id, "20.00", scenario="decline")
    done = await wait_refund(stack, started["refund_id"])
    assert done["status"] == "failed" and done["failure_code"], done
    assert await stack.balance(player) == "50.00"
    payment = await stack.payment(payment_id)
    assert (payment["refunded_amount"], payment["refundable_amount"]) == ("0.00", "50.00")
    await stack.check_invariants()


async def test_refund_the_psp_never_answers_stays_held_in_review(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    started = await refund(stack, payment_id, "20.00", scenario="lost")
    waiting = await wait_refund(stack, started["refund_id"], {"in_review"}, timeout=60)
    assert waiting["review_reason"] == "psp_status_unknown", waiting
    assert await stack.balance(player) == "30.00"  # still held: never released on an unknown outcome
    payment = await stack.payment(payment_id)
    assert (payment["refund_pending_amount"], payment["refundable_amount"]) == ("20.00", "30.00")
    await stack.check_invariants()


async def test_refund_without_a_webhook_is_learned_by_polling(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    started = await refund(stack, payment_id, "15.00", scenario="no_webhook")
    assert (await wait_refund(stack, started["refund_id"], timeout=60))["status"] == "succeeded"
    assert await stack.balance(player) == "35.00"
    await stack.check_invariants()


async def test_refund_of_money_the_player_spent_is_refused_unless_ops_allow_a_shortfall(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    await bet(stack, player, "45.00")
    refused = await refund(stack, payment_id, "20.00", expect=402)
    assert refused["code"] == "insufficient_funds", refused
    assert (await stack.payment(payment_id))["refundable_amount"] == "50.00"  # the refusal changed nothing
    started = await refund(stack, payment_id, "20.00", allow_shortfall=True)
    assert (await wait_refund(stack, started["refund_id"]))["status"] == "succeeded"
    assert await stack.balance(player) == "0.00"
    assert await account_balance(stack, "house:player_receivables:EUR") <= -1500  # the player owes the house
    await stack.check_invariants()


async def test_refund_input_is_checked(stack: Stack) -> None:
    _, payment_id = await credited_deposit(stack)
    for body, status in (({"amount": "1.001", "reason": "x"}, 422), ({"amount": "-1.00", "reason": "x"}, 422),
                         ({"amount": "1.00", "reason": "x", "allow_shortfall": "yes"}, 422)):
        response = await stack.api.post(f"/v1/payments/{payment_id}/refunds", json=body,
                                        headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == status, response.text
    unknown = await stack.api.post(f"/v1/payments/pay_{'0' * 24}/refunds", json={"amount": "1.00", "reason": "x"},
                                   headers={"Idempotency-Key": uuid.uuid4().hex})
    assert unknown.status_code == 404, unknown.text
    assert (await stack.api.get("/v1/refunds/ref_nonsense")).status_code == 404
    await stack.check_invariants()


# --- disputes -------------------------------------------------------------------------------------------------


async def test_dispute_lost_goes_to_chargebacks_with_the_fee(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    fees_before = await account_balance(stack, "house:fees:card:EUR")
    dispute_id = await open_dispute(stack, payment_id, "50.00")
    opened = await wait_dispute(stack, dispute_id, "opened")
    assert (opened["held"], opened["shortfall"]) == ("50.00", "0.00"), opened
    assert await stack.balance(player) == "0.00"
    payment = await stack.payment(payment_id)
    assert (payment["disputed_amount"], payment["refundable_amount"]) == ("50.00", "0.00")
    await resolve_dispute(stack, dispute_id, "lost")
    lost = await wait_dispute(stack, dispute_id, "lost")
    assert lost["fee"] and lost["fee"] != "0.00", lost
    assert await stack.balance(player) == "0.00"
    assert (await stack.payment(payment_id))["charged_back_amount"] == "50.00"
    assert await account_balance(stack, "house:fees:card:EUR") < fees_before  # the chargeback fee is an expense
    await stack.check_invariants()


async def test_dispute_won_releases_the_money(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    dispute_id = await open_dispute(stack, payment_id, "30.00")
    await wait_dispute(stack, dispute_id, "opened")
    assert await stack.balance(player) == "20.00"
    await resolve_dispute(stack, dispute_id, "won")
    await wait_dispute(stack, dispute_id, "won")
    assert await stack.balance(player) == "50.00"
    payment = await stack.payment(payment_id)
    assert (payment["disputed_amount"], payment["charged_back_amount"]) == ("0.00", "0.00")
    await stack.check_invariants()


async def test_dispute_on_a_player_with_nothing_left_is_a_house_receivable(stack: Stack) -> None:
    player, payment_id = await credited_deposit(stack)
    await bet(stack, player, "50.00")
    dispute_id = await open_dispute(stack, payment_id, "50.00")
    opened = await wait_dispute(stack, dispute_id, "opened")
    assert (opened["held"], opened["shortfall"]) == ("0.00", "50.00"), opened
    assert await stack.balance(player) == "0.00"  # never below zero
    await resolve_dispute(stack, dispute_id, "lost")
    await wait_dispute(stack, dispute_id, "lost")
    await stack.check_invariants()


# --- fees and the margin report -------------------------------------------------------------------------------


async def test_fees_are_booked_on_every_path_and_the_margin_reports_them(stack: Stack) -> None:
    started_at = datetime.now(timezone.utc) - timedelta(seconds=1)
    player, payment_id = await credited_deposit(stack, "80.00", method="ewallet")
    # The receivable is the net the PSP will settle: gross less its fee.
    assert await account_balance(stack, "house:fees:ewallet:EUR") < 0
    started = await refund(stack, payment_id, "10.00")
    await wait_refund(stack, started["refund_id"])
    response = await stack.api.get("/v1/ops/margin", params={
        "from": started_at.isoformat(), "to": (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()})
    assert response.status_code == 200, response.text
    rows = [r for r in response.json()["rows"] if (r["method"], r["psp"], r["currency"]) == ("ewallet", "ewallet",
                                                                                             "EUR")]
    assert len(rows) == 1, response.json()
    row = rows[0]
    assert row["deposits_count"] >= 1 and row["refunds_count"] >= 1 and row["fees"] != "0.00", row
    bad = await stack.api.get("/v1/ops/margin", params={"from": "yesterday", "to": "today"})
    assert bad.status_code == 422, bad.text
    await stack.check_invariants()


async def test_a_stray_capture_is_refunded_at_the_psp_that_took_it(stack: Stack) -> None:
    """card is down, so the deposit fails over to card_b and waits on its 3DS challenge; then card, back up,
    processes the first request after all and captures it. The deposit is credited once (card_b) and in review
    about card's capture, which the view says is not credited; rejecting it refunds at card."""
    player = new_player()
    await stack.psp_mode("card", "down")
    try:
        init = await stack.deposit(method="card", scenario="challenge", player_id=player)
    finally:
        await stack.psp_mode("card", "up")
    assert init["psp"] == "card_b", init
    async with httpx.AsyncClient(timeout=10) as http:
        card = build_connectors(stack.settings, http)["card"]
        await card.create_payment(CreatePaymentRequest(
            payment_id=init["payment_id"], amount_minor=5000, currency="EUR", method="card", player_id=player,
            return_url="https://casino.example/return"))
    # card's capture reaches the deposit while it still waits on card_b's challenge.
    await eventually(lambda: stored_events(stack, init["payment_id"]),
                     lambda rows: any(r.psp == "card" and r.state == "signalled" for r in rows), 30)
    await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
    waiting = await eventually(lambda: stack.payment(init["payment_id"]),
                               lambda p: p["review_reason"] == "captured_at_left_psp", 30)
    assert waiting["status"] == "in_review" and waiting["credited_amount"] == "50.00", waiting
    assert waiting["credit_transfer_id"] and await stack.balance(player) == "50.00"
    approve = await stack.api.post(f"/v1/ops/payments/{init['payment_id']}/review",
                                   json={"decision": "approve", "reviewer": "jane.doe"})
    assert approve.status_code == 409 and approve.json()["code"] == "decision_not_allowed", approve.text
    await review(stack, init["payment_id"], "reject")
    done = await wait_status(stack, init["payment_id"], "credited")
    assert done["review_reason"] is None and done["psp"] == "card_b", done
    [refund_id] = done["refund_ids"]
    stray_refund = await wait_refund(stack, refund_id)
    assert (stray_refund["status"], stray_refund["psp"], stray_refund["amount"]) == ("succeeded", "card", "50.00")
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_a_cancel_from_temporal_never_leaves_a_refund_half_done(stack: Stack) -> None:
    """A refund's money is held and the PSP may have it: a cancel sent straight to Temporal is ignored, and the
    refund still ends on the PSP's word."""
    player, payment_id = await credited_deposit(stack)
    started = await refund(stack, payment_id, "20.00", scenario="no_webhook")
    await stack.client.get_workflow_handle(f"refund-{started['refund_id']}").cancel()
    done = await wait_refund(stack, started["refund_id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert await stack.balance(player) == "30.00"
    await stack.check_invariants()


async def test_a_paid_payout_books_its_fee(stack: Stack) -> None:
    player = await funded_player(stack)
    started = await payout(stack, player, "40.00")
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "paid", done
    fees = await eventually(lambda: fee_rows(stack, started["payout_id"]), bool, 20)
    assert [(f.operation, f.psp, f.currency) for f in fees] == [("payout", done["psp"], "EUR")], fees
    assert fees[0].fee_minor > 0  # the e-wallet reports 1 % of a payout
    await stack.check_invariants()


async def fee_rows(stack: Stack, reference: str) -> list[Any]:
    async with stack.engine.connect() as conn:
        return list(await conn.execute(sa.select(psp_fees).where(psp_fees.c.reference == reference)))


async def test_a_refund_in_review_is_decided_by_a_person(stack: Stack) -> None:
    """The PSP never answers: the money stays held in review until ops, having checked the PSP's report, decide."""
    player, payment_id = await credited_deposit(stack)
    started = await refund(stack, payment_id, "20.00", scenario="lost")
    await wait_refund(stack, started["refund_id"], {"in_review"}, timeout=60)
    wrong = await stack.api.post(f"/v1/ops/refunds/{started['refund_id']}/review",
                                 json={"decision": "maybe", "reviewer": "jane.doe"})
    assert wrong.status_code == 422, wrong.text
    response = await stack.api.post(f"/v1/ops/refunds/{started['refund_id']}/review",
                                    json={"decision": "reject", "reviewer": "jane.doe", "reason": "PSP has no trace"})
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["failure_code"]) == ("failed", "review_rejected")
    assert await stack.balance(player) == "50.00"
    again = await stack.api.post(f"/v1/ops/refunds/{started['refund_id']}/review",
                                 json={"decision": "approve", "reviewer": "jane.doe"})
    assert again.status_code == 409 and again.json()["code"] == "not_in_review", again.text
    await stack.check_invariants()
