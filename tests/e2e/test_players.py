"""The player-profile API over HTTP: profile reads, deposit limits, self-exclusion, KYC, closing, the audit log,
and the deposits those controls refuse."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import OTHER_CLIENT_KEY, WALLET_ONLY_KEY, Stack, new_player


def problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "code", "trace_id", "retryable", "errors"} <= body.keys()
    if code:
        assert body["code"] == code, body
    return body


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


async def set_limit(stack: Stack, player: str, amount: str | None, period: str = "day",
                    currency: str = "EUR") -> httpx.Response:
    return await stack.api.put(f"/v1/players/{player}/deposit-limits",
                               json={"currency": currency, "period": period, "amount": amount},
                               headers={"Idempotency-Key": uuid.uuid4().hex})  # accepted, not needed


async def init(stack: Stack, player: str, amount: str) -> httpx.Response:
    body = {"amount": amount, "currency": "EUR", "method": "ewallet", "player_id": player,
            "return_url": "https://casino.example/return"}
    return await stack.api.post("/v1/payments/init", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})


def near(iso: str, expected: datetime, slack: timedelta = timedelta(minutes=1)) -> bool:
    return abs(datetime.fromisoformat(iso) - expected) < slack


async def test_an_unknown_player_has_the_default_profile(stack: Stack) -> None:
    player = new_player()
    assert ok(await stack.api.get(f"/v1/players/{player}")) == {
        "player_id": player, "kyc_status": "unverified", "self_excluded": False, "self_excluded_until": None,
        "closed": False, "deposit_limits": [], "wallet_currency": None,
    }


async def test_deposit_limits_decrease_at_once_and_increase_after_24_hours(stack: Stack) -> None:
    player = new_player()
    first = ok(await set_limit(stack, player, "100.00"))
    assert first["deposit_limits"] == [{"currency": "EUR", "period": "day", "amount": "100.00",
                                        "pending_amount": None, "pending_effective_at": None}]

    raised = ok(await set_limit(stack, player, "200.00"))["deposit_limits"][0]
    assert raised["amount"] == "100.00" and raised["pending_amount"] == "200.00"
    assert near(raised["pending_effective_at"], datetime.now(timezone.utc) + timedelta(hours=24))
    again = ok(await set_limit(stack, player, "200.00"))["deposit_limits"][0]
    assert again == raised  # a retry does not restart the 24 h

    assert ok(await set_limit(stack, player, "50.00"))["deposit_limits"][0] == {
        "currency": "EUR", "period": "day", "amount": "50.00", "pending_amount": None, "pending_effective_at": None}
    removal = ok(await set_limit(stack, player, None))["deposit_limits"][0]
    assert removal["amount"] == "50.00" and removal["pending_amount"] is None and removal["pending_effective_at"]

    month = ok(await set_limit(stack, player, "1000", period="month", currency="JPY"))["deposit_limits"]
    assert [(lim["currency"], lim["period"], lim["amount"]) for lim in month] == [
        ("EUR", "day", "50.00"), ("JPY", "month", "1000")]
    profile = ok(await stack.api.get(f"/v1/players/{player}"))
    assert profile["deposit_limits"] == month

    entries = ok(await stack.api.get("/v1/ops/audit", params={"subject": f"player:{player}"}))["entries"]
    assert [e["action"] for e in entries] == ["player.deposit_limit.set"] * 6
    assert entries[0]["actor"] == "casino-a" and entries[0]["subject"] == f"player:{player}"
    assert entries[0]["details"]["currency"] == "JPY" and entries[0]["details"]["requested_minor"] == 1000
    assert entries[-1]["details"]["after"] == {"amount_minor": 10_000, "pending_amount_minor": None,
                                               "pending_effective_at": None}


async def test_a_limit_set_through_the_api_refuses_a_deposit_above_it(stack: Stack) -> None:
    player = new_player()
    ok(await set_limit(stack, player, "80.00"))
    credited = await stack.deposit(method="ewallet", amount="50.00", player_id=player)
    assert (await stack.wait_final(credited["payment_id"]))["status"] == "credited"
    refused = problem(await init(stack, player, "30.01"), 422, "deposit_limit_exceeded")
    assert (await stack.payment(refused["payment_id"]))["status"] == "rejected"
    # Raising the limit does not help for 24 h: the old value still applies.
    ok(await set_limit(stack, player, "500.00"))
    problem(await init(stack, player, "30.01"), 422, "deposit_limit_exceeded")
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_self_exclusion_through_the_api(stack: Stack) -> None:
    player = new_player()
    until = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)
    profile = ok(await stack.api.post(f"/v1/players/{player}/self-exclusion", json={"until": until.isoformat()}))
    assert profile["self_excluded"] is True and datetime.fromisoformat(profile["self_excluded_until"]) == until

    shorter = (until - timedelta(days=1)).isoformat()
    problem(await stack.api.post(f"/v1/players/{player}/self-exclusion", json={"until": shorter}), 409,
            "self_exclusion_active")
    longer = until + timedelta(days=30)
    profile = ok(await stack.api.post(f"/v1/players/{player}/self-exclusion", json={"until": longer.isoformat()}))
    assert datetime.fromisoformat(profile["self_excluded_until"]) == longer
    profile = ok(await stack.api.post(f"/v1/players/{player}/self-exclusion", json={"until": None}))
    assert profile["self_excluded"] is True and profile["self_excluded_until"] is None
    problem(await stack.api.post(f"/v1/players/{player}/self-exclusion", json={"until": longer.isoformat()}), 409,
            "self_exclusion_active")

    refused = problem(await init(stack, player, "10.00"), 422, "self_excluded")
    payment = await stack.payment(refused["payment_id"])
    assert payment["status"] == "rejected" and payment["psp"] is None
    entries = ok(await stack.api.get("/v1/ops/audit", params={"subject": f"player:{player}"}))["entries"]
    assert [e["details"]["indefinite"] for e in entries] == [True, False, False]  # refusals change nothing
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_kyc_close_and_reopen_by_ops(stack: Stack) -> None:
    player = new_player()
    kyc = ok(await stack.api.put(f"/v1/ops/players/{player}/kyc", json={"status": "verified", "note": "passport"}))
    assert kyc["kyc_status"] == "verified"
    assert ok(await stack.api.post(f"/v1/ops/players/{player}/close"))["closed"] is True
    problem(await init(stack, player, "10.00"), 422, "account_closed")
    assert ok(await stack.api.post(f"/v1/ops/players/{player}/reopen"))["closed"] is False
    credited = await stack.deposit(method="ewallet", amount="10.00", player_id=player)
    assert (await stack.wait_final(credited["payment_id"]))["status"] == "credited"

    entries = ok(await stack.api.get("/v1/ops/audit", params={"subject": f"player:{player}", "limit": 2}))["entries"]
    assert [e["action"] for e in entries] == ["player.reopen", "player.close"]
    entries = ok(await stack.api.get("/v1/ops/audit", params={"subject": f"player:{player}"}))["entries"]
    assert entries[-1]["action"] == "player.kyc.set"
    assert entries[-1]["details"] == {"status": "verified", "note": "passport"}
    await stack.check_invariants()


async def test_scopes(stack: Stack) -> None:
    player = new_player()
    base = stack.settings.api_url
    async with (
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {OTHER_CLIENT_KEY}"}) as payments,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {WALLET_ONLY_KEY}"}) as wallet,
        httpx.AsyncClient(base_url=base) as anonymous,
    ):
        problem(await anonymous.get(f"/v1/players/{player}"), 401, "unauthorized")
        problem(await wallet.get(f"/v1/players/{player}"), 403, "insufficient_scope")
        limit = {"currency": "EUR", "period": "day", "amount": "10.00"}
        problem(await wallet.put(f"/v1/players/{player}/deposit-limits", json=limit), 403, "insufficient_scope")
        ok(await payments.get(f"/v1/players/{player}"))
        ok(await payments.put(f"/v1/players/{player}/deposit-limits", json=limit))
        for response in (
            await payments.put(f"/v1/ops/players/{player}/kyc", json={"status": "verified"}),
            await payments.post(f"/v1/ops/players/{player}/close"),
            await payments.post(f"/v1/ops/players/{player}/reopen"),
            await payments.get("/v1/ops/audit", params={"subject": f"player:{player}"}),
        ):
            problem(response, 403, "insufficient_scope")
    entries = ok(await stack.api.get("/v1/ops/audit", params={"subject": f"player:{player}"}))["entries"]
    assert [e["actor"] for e in entries] == ["casino-b"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"currency": "XXX", "period": "day", "amount": "10.00"}, "unsupported_currency", "currency"),
        ({"currency": "XXX", "period": "day", "amount": None}, "unsupported_currency", "currency"),
        ({"currency": "eur", "period": "day", "amount": "10.00"}, "validation_error", "currency"),
        ({"currency": "EUR", "period": "year", "amount": "10.00"}, "validation_error", "period"),
        ({"currency": "EUR", "period": "day", "amount": "10.001"}, "amount_precision", "amount"),
        ({"currency": "JPY", "period": "day", "amount": "10.5"}, "amount_precision", "amount"),
        ({"currency": "EUR", "period": "day", "amount": "-1.00"}, "invalid_amount", "amount"),
        ({"currency": "EUR", "period": "day", "amount": "0"}, "invalid_amount", "amount"),
        ({"currency": "EUR", "period": "day", "amount": "1" * 30}, "amount_too_large", "amount"),
        ({"currency": "EUR", "period": "day", "amount": 10}, "validation_error", "amount"),
        ({"currency": "EUR", "period": "day"}, "validation_error", "amount"),
        ({"currency": "EUR", "period": "day", "amount": "1.00", "x": 1}, "validation_error", "x"),
    ],
)
async def test_bad_deposit_limits_are_422_problems(stack: Stack, body: dict, code: str, field: str) -> None:
    player = new_player()
    found = problem(await stack.api.put(f"/v1/players/{player}/deposit-limits", json=body), 422, code)
    assert any(e["field"] == field for e in found["errors"]), found["errors"]
    assert ok(await stack.api.get(f"/v1/players/{player}"))["deposit_limits"] == []


@pytest.mark.parametrize(
    ("until", "code"),
    [
        ("2001-01-01T00:00:00Z", "self_exclusion_in_past"),
        ("2999-01-01T00:00:00", "validation_error"),  # no time zone
        ("next tuesday", "validation_error"),
        (12, "validation_error"),
        ("9999-12-31T23:00:00-05:00", "out_of_range"),
    ],
)
async def test_bad_self_exclusions_are_422_problems(stack: Stack, until: Any, code: str) -> None:
    player = new_player()
    found = problem(await stack.api.post(f"/v1/players/{player}/self-exclusion", json={"until": until}), 422, code)
    assert any(e["field"] == "until" for e in found["errors"]), found["errors"]
    assert ok(await stack.api.get(f"/v1/players/{player}"))["self_excluded"] is False


async def test_other_bad_requests_are_4xx_problems(stack: Stack) -> None:
    player = new_player()
    problem(await stack.api.get("/v1/players/bad:id"), 422, "validation_error")
    problem(await stack.api.get(f"/v1/players/{'a' * 65}"), 422, "validation_error")
    problem(await stack.api.post(f"/v1/players/{player}/self-exclusion", json={}), 422, "validation_error")
    problem(await stack.api.post(f"/v1/players/{player}/self-exclusion", content=b"{oops",
                                 headers={"Content-Type": "application/json"}), 422, "validation_error")
    problem(await stack.api.put(f"/v1/players/{player}/deposit-limits", json=[1]), 422, "validation_error")
    problem(await stack.api.put(f"/v1/ops/players/{player}/kyc", json={"status": "approved"}), 422,
            "validation_error")
    problem(await stack.api.put(f"/v1/ops/players/{player}/kyc", json={"status": "verified", "note": "x" * 1001}),
            422, "validation_error")
    problem(await stack.api.get("/v1/ops/audit"), 422, "validation_error")
    problem(await stack.api.get("/v1/ops/audit", params={"subject": "x" * 121}), 422, "validation_error")
    problem(await stack.api.get("/v1/ops/audit", params={"subject": "player:x", "limit": 0}), 422,
            "validation_error")
    problem(await stack.api.delete(f"/v1/players/{player}"), 405, "method_not_allowed")
    assert ok(await stack.api.get(f"/v1/players/{player}"))["kyc_status"] == "unverified"
    assert ok(await stack.api.get("/v1/ops/audit", params={"subject": f"player:{player}"}))["entries"] == []
