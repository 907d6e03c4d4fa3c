"""The game-round wallet's HTTP contract, end to end: a real deposit funds the player, a provider bets and wins."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from payloop.db import utcnow
from payloop.money import parse_rates
from players import PlayerStore
from tests.e2e.conftest import Stack, new_player

PROBLEM_JSON = "application/problem+json"


def _players(stack: Stack) -> PlayerStore:
    return PlayerStore(stack.engine, parse_rates(stack.settings.fx_rates_to_eur))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def funded_player(stack: Stack, amount: str = "100.00") -> str:
    player = new_player()
    payment = await stack.deposit(method="ewallet", amount=amount, player_id=player)
    assert (await stack.wait_final(payment["payment_id"]))["status"] == "credited"
    return player


def body(player: str, amount: str | None = "10.00", **fields: Any) -> dict[str, Any]:
    base = {"player_id": player, "currency": "EUR", "transaction_id": new_id("tx"), "round_id": new_id("round"),
            "game_id": "book-of-tests"}
    if amount is not None:
        base["amount"] = amount
    return {**base, **fields}


async def post(stack: Stack, action: str, payload: dict[str, Any], expect: int = 200) -> httpx.Response:
    response = await stack.api.post(f"/v1/wallet/{action}", json=payload)
    assert response.status_code == expect, response.text
    expected_type = "application/json" if expect == 200 else PROBLEM_JSON
    assert response.headers["content-type"] == expected_type
    return response


def problem(response: httpx.Response, code: str) -> dict[str, Any]:
    data = response.json()
    assert data["code"] == code and data["status"] == response.status_code and data["trace_id"], data
    assert data["type"].endswith(code)
    return data


async def test_bet_and_win_answer_with_the_balance_and_replay_byte_for_byte(stack: Stack) -> None:
    player = await funded_player(stack)
    bet = body(player, "10.00")
    placed = await post(stack, "debit", bet)
    assert placed.json() == {"transaction_id": bet["transaction_id"], "player_id": player, "currency": "EUR",
                             "balance": "90.00", "status": "ok"}
    won = await post(stack, "credit", body(player, "25.50", round_id=bet["round_id"],
                                           reference_transaction_id=bet["transaction_id"]))
    assert won.json()["balance"] == "115.50"
    replay = await post(stack, "debit", bet)
    assert replay.content == placed.content  # the first answer, balance at that time included
    assert await stack.balance(player) == "115.50"
    await stack.check_invariants()


async def test_same_transaction_id_with_another_body_is_409(stack: Stack) -> None:
    player = await funded_player(stack)
    bet = body(player, "10.00")
    await post(stack, "debit", bet)
    problem(await post(stack, "debit", {**bet, "amount": "11.00"}, expect=409), "transaction_conflict")
    problem(await post(stack, "credit", bet, expect=409), "transaction_conflict")
    assert await stack.balance(player) == "90.00"
    await stack.check_invariants()


async def test_insufficient_funds_is_402_with_the_balance_and_no_partial_debit(stack: Stack) -> None:
    player = await funded_player(stack, "20.00")
    data = problem(await post(stack, "debit", body(player, "20.01"), expect=402), "insufficient_funds")
    assert data["balance"] == "20.00"
    assert await stack.balance(player) == "20.00"
    assert (await post(stack, "debit", body(player, "20.00"))).json()["balance"] == "0.00"
    await stack.check_invariants()


async def test_self_excluded_player_cannot_bet_but_is_paid_wins(stack: Stack) -> None:
    player = await funded_player(stack)
    bet = body(player, "5.00")
    await post(stack, "debit", bet)
    await _players(stack).upsert(player, now=utcnow(), self_excluded_indefinitely=True)
    problem(await post(stack, "debit", body(player, "5.00"), expect=422), "self_excluded")
    assert (await post(stack, "credit", body(player, "7.00", round_id=bet["round_id"]))).json()["balance"] == "102.00"
    await stack.check_invariants()


async def test_a_closed_account_cannot_bet(stack: Stack) -> None:
    player = await funded_player(stack)
    assert (await stack.api.post(f"/v1/ops/players/{player}/close")).status_code == 200
    problem(await post(stack, "debit", body(player, "5.00"), expect=422), "account_closed")
    assert await stack.balance(player) == "100.00"
    await stack.check_invariants()


async def test_rollback_returns_the_stake_once(stack: Stack) -> None:
    player = await funded_player(stack)
    bet = body(player, "10.00")
    await post(stack, "debit", bet)
    undo = body(player, "10.00", round_id=bet["round_id"], reference_transaction_id=bet["transaction_id"])
    first = await post(stack, "rollback", undo)
    assert first.json()["balance"] == "100.00"
    assert (await post(stack, "rollback", undo)).content == first.content
    problem(await post(stack, "rollback", {**undo, "amount": "9.00"}, expect=409), "transaction_conflict")
    assert await stack.balance(player) == "100.00"
    await stack.check_invariants()


async def test_rollback_of_an_unknown_bet_answers_ok_and_refuses_the_late_bet(stack: Stack) -> None:
    player = await funded_player(stack)
    late = body(player, "10.00")
    undo = body(player, None, round_id=late["round_id"], reference_transaction_id=late["transaction_id"])
    assert (await post(stack, "rollback", undo)).json()["balance"] == "100.00"
    problem(await post(stack, "debit", late, expect=409), "transaction_rolled_back")
    assert await stack.balance(player) == "100.00"
    await stack.check_invariants()


async def test_rollback_is_refused_for_wins_settled_rounds_and_other_players(stack: Stack) -> None:
    player = await funded_player(stack)
    bet = body(player, "10.00")
    await post(stack, "debit", bet)
    win = body(player, "0.00", round_id=bet["round_id"])  # a lost round's close: settles it, moves nothing
    assert (await post(stack, "credit", win)).json()["balance"] == "90.00"
    undo_win = body(player, None, round_id=bet["round_id"], reference_transaction_id=win["transaction_id"])
    problem(await post(stack, "rollback", undo_win, expect=409), "not_a_bet")
    undo_bet = {**undo_win, "transaction_id": new_id("rb"), "reference_transaction_id": bet["transaction_id"]}
    problem(await post(stack, "rollback", undo_bet, expect=409), "round_settled")
    stranger = {**undo_bet, "transaction_id": new_id("rb"), "player_id": new_player()}
    problem(await post(stack, "rollback", stranger, expect=409), "reference_mismatch")
    assert await stack.balance(player) == "90.00"
    await stack.check_invariants()


async def test_round_lists_its_transactions_in_order(stack: Stack) -> None:
    player = await funded_player(stack)
    bet = body(player, "4.00")
    await post(stack, "debit", bet)
    win = body(player, "6.00", round_id=bet["round_id"], reference_transaction_id=bet["transaction_id"])
    await post(stack, "credit", win)
    response = await stack.api.get(f"/v1/wallet/rounds/{bet['round_id']}")
    assert response.status_code == 200, response.text
    rows = response.json()["transactions"]
    assert [(r["transaction_id"], r["kind"], r["amount"], r["moved_money"]) for r in rows] == [
        (bet["transaction_id"], "bet", "4.00", True),
        (win["transaction_id"], "win", "6.00", True),
    ]
    assert rows[1]["reference_transaction_id"] == bet["transaction_id"]
    missing = await stack.api.get(f"/v1/wallet/rounds/{new_id('round')}")
    assert missing.status_code == 404 and missing.json()["code"] == "round_not_found"
    await stack.check_invariants()


async def test_player_transactions_list_games_and_payments_newest_first(stack: Stack) -> None:
    player = await funded_player(stack)
    bet = body(player, "4.00")
    await post(stack, "debit", bet)
    win = body(player, "1.50", round_id=bet["round_id"])
    await post(stack, "credit", win)
    response = await stack.api.get(f"/v1/wallet/{player}/transactions")
    assert response.status_code == 200, response.text
    entries = response.json()["transactions"]
    assert [(e["kind"], e["amount"]) for e in entries] == [("win", "1.50"), ("bet", "-4.00"), ("deposit", "100.00")]
    assert entries[0]["reference"] == win["transaction_id"] and entries[0]["transfer_id"].startswith("game:")
    limited = await stack.api.get(f"/v1/wallet/{player}/transactions", params={"limit": 1})
    assert [e["kind"] for e in limited.json()["transactions"]] == ["win"]
    await stack.check_invariants()


@pytest.mark.parametrize(
    ("action", "change", "code"),
    [
        ("debit", {"amount": "1.001"}, "amount_precision"),
        ("debit", {"amount": "0.00"}, "invalid_amount"),
        ("debit", {"amount": "-1.00"}, "invalid_amount"),
        ("debit", {"amount": 10}, "validation_error"),
        ("debit", {"currency": "XXX"}, "unsupported_currency"),
        ("debit", {"currency": "eur"}, "validation_error"),
        ("debit", {"transaction_id": ""}, "validation_error"),
        ("debit", {"transaction_id": "x" * 101}, "validation_error"),
        ("debit", {"round_id": "round 1"}, "validation_error"),
        ("debit", {"game_id": "game/1"}, "validation_error"),
        ("debit", {"player_id": "p:1"}, "validation_error"),
        ("debit", {"amount": None}, "validation_error"),
        ("debit", {"surprise": "field"}, "validation_error"),
        ("credit", {"amount": "0.001"}, "amount_precision"),
        ("credit", {"amount": "1e3"}, "invalid_amount"),
        ("rollback", {}, "validation_error"),  # no reference_transaction_id
        ("rollback", {"reference_transaction_id": "same-id", "transaction_id": "same-id"}, "validation_error"),
    ],
)
async def test_bad_input_is_a_4xx_problem(stack: Stack, action: str, change: dict[str, Any], code: str) -> None:
    payload = {k: v for k, v in {**body("p-anyone", "1.00"), **change}.items() if v is not None}
    response = await post(stack, action, payload, expect=422)
    problem(response, code)
    await stack.check_invariants()


async def test_malformed_requests_are_4xx(stack: Stack) -> None:
    not_json = await stack.api.post("/v1/wallet/debit", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and not_json.headers["content-type"] == PROBLEM_JSON
    assert (await stack.api.get("/v1/wallet/rounds/bad%20round")).status_code == 422
    assert (await stack.api.get("/v1/wallet/p-anyone/transactions", params={"limit": 0})).status_code == 422
    unauthenticated = await stack.api.post("/v1/wallet/debit", json=body("p-anyone"), headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    await stack.check_invariants()
