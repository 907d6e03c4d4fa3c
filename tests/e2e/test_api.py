"""The API's contract: auth, problem+json for every client mistake, tenancy, screening outcomes, health."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from payloop.money import parse_rates
from players import LimitPeriod, PlayerStore
from tests.e2e.conftest import OTHER_CLIENT_KEY, WALLET_ONLY_KEY, Stack, new_player

VALID = {"amount": "50.00", "currency": "EUR", "method": "card", "player_id": "p-valid",
         "return_url": "https://casino.example/return"}


def _players(stack: Stack) -> PlayerStore:
    return PlayerStore(stack.engine, parse_rates(stack.settings.fx_rates_to_eur))


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "code", "trace_id", "retryable", "errors"} <= body.keys()
    assert body["status"] == status and body["trace_id"] == response.headers["x-trace-id"]
    if code:
        assert body["code"] == code, body
    return body


async def init(stack: Stack, body: Any, key: str | None = "k", **kwargs: Any) -> httpx.Response:
    headers = {"Idempotency-Key": f"{key}-{uuid.uuid4().hex}"} if key else {}
    return await stack.api.post("/v1/payments/init", json=body, headers=headers, **kwargs)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"amount": "50.001"}, "amount_precision", "amount"),
        ({"amount": "-5.00"}, "invalid_amount", "amount"),
        ({"amount": 50.0}, "validation_error", "amount"),
        ({"amount": "abc"}, "invalid_amount", "amount"),
        ({"currency": "XXX"}, "unsupported_currency", "currency"),
        ({"currency": "eur"}, "validation_error", "currency"),
        ({"method": "cheque"}, "unsupported_method", "method"),
        ({"player_id": "a:b"}, "validation_error", "player_id"),
        ({"return_url": "javascript:alert(1)"}, "validation_error", "return_url"),
        ({"unexpected": "field"}, "validation_error", "unexpected"),
        ({"meta": {"sandbox_scenario": "explode"}}, "validation_error", "meta.sandbox_scenario"),
        ({"meta": {"country": "Germany"}}, "validation_error", "meta.country"),
    ],
)
async def test_invalid_init_is_a_422_problem(stack: Stack, change: dict, code: str, field: str) -> None:
    body = assert_problem(await init(stack, {**VALID, **change}), 422, code)
    assert any(e["field"] == field for e in body["errors"]), body["errors"]


async def test_missing_fields_malformed_json_and_wrong_types(stack: Stack) -> None:
    assert_problem(await init(stack, {}), 422, "validation_error")
    assert_problem(await init(stack, [1, 2]), 422, "validation_error")
    malformed = await stack.api.post("/v1/payments/init", content=b"{oops", headers={
        "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"})
    assert_problem(malformed, 422, "validation_error")


async def test_idempotency_key_is_required_and_must_agree_with_the_body(stack: Stack) -> None:
    assert_problem(await init(stack, VALID, key=None), 422, "idempotency_key_required")
    mismatch = await stack.api.post("/v1/payments/init", json={**VALID, "idempotency_key": "a"},
                                    headers={"Idempotency-Key": "b"})
    assert_problem(mismatch, 422, "idempotency_key_mismatch")


async def test_authentication_and_scopes(stack: Stack) -> None:
    base = stack.settings.api_url
    async with httpx.AsyncClient(base_url=base) as anonymous:
        assert_problem(await anonymous.get("/v1/wallet/p1/balance"), 401, "unauthorized")
        bad = await anonymous.get("/v1/wallet/p1/balance", headers={"Authorization": "Bearer nope"})
        assert_problem(bad, 401, "unauthorized")
        basic = await anonymous.get("/v1/wallet/p1/balance", headers={"Authorization": "Basic abc"})
        assert_problem(basic, 401, "unauthorized")
        wallet_only = {"Authorization": f"Bearer {WALLET_ONLY_KEY}", "Idempotency-Key": "scope-test"}
        assert_problem(await anonymous.post("/v1/payments/init", json=VALID, headers=wallet_only), 403,
                       "insufficient_scope")
        assert (await anonymous.get("/v1/wallet/p1/balance", headers=wallet_only)).status_code == 200


async def test_another_clients_payment_is_forbidden(stack: Stack) -> None:
    init_body = await stack.deposit(method="ewallet")
    async with httpx.AsyncClient(base_url=stack.settings.api_url,
                                 headers={"Authorization": f"Bearer {OTHER_CLIENT_KEY}"}) as other:
        assert_problem(await other.get(f"/v1/payments/{init_body['payment_id']}"), 403, "forbidden")
    await stack.wait_final(init_body["payment_id"])
    await stack.check_invariants()


async def test_unknown_payment_and_route_are_404_problems(stack: Stack) -> None:
    assert_problem(await stack.api.get(f"/v1/payments/pay_{'0' * 24}"), 404, "payment_not_found")
    assert_problem(await stack.api.get("/v1/payments/not-an-id"), 404, "payment_not_found")
    assert_problem(await stack.api.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(await stack.api.delete("/v1/payments/init"), 405, "method_not_allowed")
    assert_problem(await stack.api.get("/v1/wallet/bad:id/balance"), 422, "validation_error")


async def test_self_excluded_player_is_rejected_without_reaching_a_psp(stack: Stack) -> None:
    player = new_player()
    now = datetime.now(timezone.utc)
    await _players(stack).upsert(player, now=now, self_excluded_until=now + timedelta(days=30))
    problem = assert_problem(await init(stack, {**VALID, "player_id": player}), 422, "self_excluded")
    payment = await stack.payment(problem["payment_id"])
    assert payment["status"] == "rejected" and payment["psp"] is None
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_deposit_limit_counts_credited_deposits(stack: Stack) -> None:
    player = new_player()
    await _players(stack).set_deposit_limit(player, "EUR", LimitPeriod.DAY, 8_000, now=datetime.now(timezone.utc))
    first = await stack.deposit(method="ewallet", amount="50.00", player_id=player)
    assert (await stack.wait_final(first["payment_id"]))["status"] == "credited"
    assert_problem(await init(stack, {**VALID, "player_id": player, "amount": "30.01"}), 422,
                   "deposit_limit_exceeded")
    ok = await stack.deposit(method="ewallet", amount="30.00", player_id=player)
    assert (await stack.wait_final(ok["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "80.00"
    await stack.check_invariants()


async def test_health_and_docs(stack: Stack) -> None:
    assert (await stack.api.get("/healthz")).json() == {"status": "ok"}
    ready = await stack.api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["temporal"] == "ok"
    schema = (await stack.api.get("/openapi.json")).json()
    assert "/v1/payments/init" in schema["paths"] and "/v1/webhooks/{psp}" in schema["paths"]
    assert (await stack.api.get("/docs")).status_code == 200
