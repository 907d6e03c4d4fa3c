"""Routing over HTTP: PSP health for ops, the payment-methods listing, and a method hidden while its PSPs are down."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from payloop.db import utcnow
from psp.routing import load_routing
from psp.routing.health import HealthStore, psp_attempts, psp_circuits
from tests.e2e.conftest import OTHER_CLIENT_KEY, WALLET_ONLY_KEY, Stack
from tests.e2e.test_api import assert_problem

HEALTH_KEYS = {"psp", "samples", "success_rate", "error_rate", "p95_latency_ms", "circuit", "forced", "opened_at",
               "window_seconds", "window_start", "available"}


async def methods(stack: Stack, **params: str) -> dict:
    response = await stack.api.get("/v1/payment-methods", params=params)
    assert response.status_code == 200, response.text
    return response.json()


@contextlib.asynccontextmanager
async def psp_down(stack: Stack, psp: str) -> AsyncIterator[HealthStore]:
    """Opens `psp`'s circuit by recording failures, as the PSP-call activities would; restores it afterwards
    (the stack, and so its database, is shared by the whole session)."""
    store = HealthStore(stack.engine, load_routing(stack.settings))
    thresholds = store.config.thresholds(psp)
    await stack.psp_mode(psp, "up")  # start from a clean record: earlier tests' real calls count too
    try:
        for _ in range(thresholds.min_samples):
            await store.record(psp, "create_payment", False, 2500, "http_503")
        assert (await store.states())[psp] == "open"
        yield store
    finally:
        async with stack.engine.begin() as conn:
            await conn.execute(psp_circuits.delete().where(psp_circuits.c.psp == psp))
            await conn.execute(psp_attempts.delete().where(psp_attempts.c.psp == psp))


async def test_psp_health_lists_every_psp_with_its_circuit(stack: Stack) -> None:
    response = await stack.api.get("/v1/ops/psp-health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.keys() == {"psps"}
    by_name = {entry["psp"]: entry for entry in body["psps"]}
    assert {"card", "ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto", "crypto_b"} <= by_name.keys()
    for entry in body["psps"]:
        assert entry.keys() == HEALTH_KEYS
        assert entry["circuit"] in {"closed", "open", "half_open"}
    assert by_name["card"]["available"] is True
    assert by_name["card"]["window_seconds"] == load_routing(stack.settings).thresholds("card").window_seconds


async def test_psp_health_reports_failures_and_the_open_circuit(stack: Stack) -> None:
    async with psp_down(stack, "ewallet"):
        body = (await stack.api.get("/v1/ops/psp-health")).json()
        ewallet = next(entry for entry in body["psps"] if entry["psp"] == "ewallet")
        assert ewallet["circuit"] == "open" and ewallet["opened_at"] is not None and ewallet["available"] is False
        # The breaker's window starts again when the circuit changes state: the failure that opened it is in it.
        assert ewallet["window_start"] == ewallet["opened_at"]
        assert ewallet["samples"] >= 1 and ewallet["error_rate"] == "1.0000" and ewallet["success_rate"] == "0.0000"
        assert ewallet["p95_latency_ms"] == 2500


async def test_psp_health_needs_the_ops_scope(stack: Stack) -> None:
    for key in (OTHER_CLIENT_KEY, WALLET_ONLY_KEY):
        response = await stack.api.get("/v1/ops/psp-health", headers={"Authorization": f"Bearer {key}"})
        assert_problem(response, 403, "insufficient_scope")
    async with httpx.AsyncClient(base_url=stack.settings.api_url) as anonymous:
        assert_problem(await anonymous.get("/v1/ops/psp-health"), 401, "unauthorized")


async def test_payment_methods_show_fee_and_eta(stack: Stack) -> None:
    body = await methods(stack, currency="EUR", amount="50.00", country="DE")
    assert body["currency"] == "EUR" and body["amount"] == "50.00" and body["country"] == "DE"
    listed = {entry["method"]: entry for entry in body["methods"]}
    assert listed["card"] == {"method": "card", "fee": "0.95", "eta": "instant"}  # 0.25 + 1.4 % of 50.00
    assert listed["ewallet"] == {"method": "ewallet", "fee": "1.25", "eta": "instant"}  # 2.5 %
    # Amount limits and currencies count: card takes EUR from 1.00, the e-wallet up to 20,000.00.
    assert [m["method"] for m in (await methods(stack, currency="EUR", amount="0.50"))["methods"]] == []
    big = await methods(stack, currency="EUR", amount="30000.00", country="DE")
    assert "card" in {m["method"] for m in big["methods"]} and "ewallet" not in {m["method"] for m in big["methods"]}
    # JPY: whole yen, and the card PSP's own fixed fee in yen (30 + 1.4 % of 5000 = 100).
    jpy = await methods(stack, currency="JPY", amount="5000")
    assert {"method": "card", "fee": "100", "eta": "instant"} in jpy["methods"]


async def test_a_method_whose_psps_are_all_down_is_hidden(stack: Stack) -> None:
    before = {m["method"] for m in (await methods(stack, currency="EUR", amount="50.00"))["methods"]}
    assert {"card", "ewallet"} <= before
    async with psp_down(stack, "ewallet"):
        # One of its two PSPs down: the method stays, at the other's fee (ewallet_b: 0.10 + 2.6 % of 50.00).
        during = {m["method"]: m for m in (await methods(stack, currency="EUR", amount="50.00"))["methods"]}
        assert during.keys() == before and during["ewallet"]["fee"] == "1.40"
        async with psp_down(stack, "ewallet_b"):
            both = {m["method"] for m in (await methods(stack, currency="EUR", amount="50.00"))["methods"]}
            assert both == before - {"ewallet"}
    after = {m["method"] for m in (await methods(stack, currency="EUR", amount="50.00"))["methods"]}
    assert after == before


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"currency": "EUR", "amount": "50.001"}, "amount_precision", "amount"),
        ({"currency": "EUR", "amount": "-5"}, "invalid_amount", "amount"),
        ({"currency": "EUR", "amount": "0"}, "invalid_amount", "amount"),
        ({"currency": "XXX", "amount": "50.00"}, "unsupported_currency", "currency"),
        ({"currency": "eur", "amount": "50.00"}, "validation_error", "query.currency"),
        ({"currency": "EUR", "amount": "50.00", "country": "Germany"}, "validation_error", "query.country"),
        ({"currency": "EUR"}, "validation_error", "query.amount"),
        ({"amount": "50.00"}, "validation_error", "query.currency"),
    ],
)
async def test_payment_methods_refuse_bad_input(stack: Stack, params: dict, code: str, field: str) -> None:
    body = assert_problem(await stack.api.get("/v1/payment-methods", params=params), 422, code)
    assert any(e["field"] == field for e in body["errors"]), body["errors"]


async def test_payment_methods_need_the_payments_scope(stack: Stack) -> None:
    response = await stack.api.get("/v1/payment-methods", params={"currency": "EUR", "amount": "1.00"},
                                   headers={"Authorization": f"Bearer {WALLET_ONLY_KEY}"})
    assert_problem(response, 403, "insufficient_scope")


async def test_a_circuit_opened_elsewhere_is_seen_at_once(stack: Stack) -> None:
    # The state lives in the database: a worker's HealthStore and the API's agree without any messaging.
    async with psp_down(stack, "card") as store:
        rows = (await stack.api.get("/v1/ops/psp-health")).json()["psps"]
        assert next(r for r in rows if r["psp"] == "card")["circuit"] == "open"
        assert (await store.states(utcnow()))["card"] == "open"
    async with stack.engine.connect() as conn:
        assert (await conn.execute(sa.select(psp_circuits).where(psp_circuits.c.psp == "card"))).first() is None
