"""The API with its database out of reach answers 503 problem+json with Retry-After on every route that needs the
database, never 500 (fast: no Temporal, no worker; the PostgreSQL-restart drill does it for real)."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from api.app import create_app
from api.outages import database_unavailable
from payloop.db import create_engine
from psp.sandbox.formats import FORMATS, Snapshot
from tests.e2e.conftest import API_KEY, WEBHOOK_SECRET, free_port, serve, stack_settings


@pytest.fixture(scope="module")
async def api_without_database() -> AsyncIterator[httpx.AsyncClient]:
    """The API on a PostgreSQL URL where nothing listens (a stopped server), and a client for it."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone"
    settings = stack_settings(url, "unused")
    engine = create_engine(url)
    # Temporal is never reached: each route below needs the database first.
    app = create_app(settings, engine=engine, temporal=object())  # type: ignore[arg-type]
    async with (
        serve(app, settings.api_port),
        httpx.AsyncClient(base_url=settings.api_url, headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=30) as api,
    ):
        yield api
    await engine.dispose()


def signed_card_webhook() -> tuple[bytes, dict[str, str]]:
    snap = Snapshot(kind="payment", reference="card_0123456789abcdef", merchant_reference=f"pay_{'0' * 24}",
                    status="captured", amount_minor=5000, requested_minor=5000, currency="EUR")
    event_id = f"evt_{secrets.token_hex(8)}"
    body = json.dumps(FORMATS["card"].event(event_id, snap, "2026-01-01T00:00:00Z")).encode()
    return body, FORMATS["card"].scheme.headers(WEBHOOK_SECRET, int(time.time()), body, event_id)


ROUND = {"player_id": "p-outage", "currency": "EUR", "amount": "1.00", "round_id": "r-1", "game_id": "slots-1"}
REQUESTS = [
    ("GET", "/v1/wallet/p-outage/balance", None),
    ("GET", "/v1/wallet/p-outage/transactions", None),
    ("POST", "/v1/payments/init", {"amount": "50.00", "currency": "EUR", "method": "card", "player_id": "p-outage",
                                   "return_url": "https://casino.example/return", "meta": {"country": "DE"}}),
    ("POST", "/v1/payouts/init", {"amount": "10.00", "currency": "EUR", "player_id": "p-outage"}),
    ("POST", "/v1/wallet/debit", {**ROUND, "transaction_id": "bet-1"}),
    ("POST", "/v1/wallet/credit", {**ROUND, "transaction_id": "win-1"}),
    ("POST", "/v1/wallet/rollback", {**ROUND, "transaction_id": "rb-1", "reference_transaction_id": "bet-1"}),
    ("GET", "/v1/players/p-outage", None),
    ("PUT", "/v1/ops/players/p-outage/kyc", {"status": "verified"}),
    ("GET", "/v1/ops/webhooks", None),
    ("GET", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
async def test_routes_answer_503_with_retry_after(
    api_without_database: httpx.AsyncClient, method: str, path: str, body: dict | None
) -> None:
    response = await api_without_database.request(method, path, json=body,
                                                   headers={"Idempotency-Key": uuid.uuid4().hex})
    assert_database_unavailable(response)


async def test_a_signed_webhook_is_refused_with_503_so_the_psp_redelivers(
    api_without_database: httpx.AsyncClient,
) -> None:
    body, headers = signed_card_webhook()
    response = await api_without_database.post("/v1/webhooks/card", content=body, headers=headers)
    assert_database_unavailable(response)


async def test_readiness_says_which_dependency_is_down(api_without_database: httpx.AsyncClient) -> None:
    response = await api_without_database.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["checks"]["database"] == "unavailable"


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["x-trace-id"]
    problem = response.json()
    assert problem["code"] == "database_unavailable" and problem["retryable"] is True, problem


async def test_only_outages_count_as_unavailable() -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - whatever the driver raises for a refused connection
        refused = err
    await engine.dispose()
    assert database_unavailable(refused)
    assert not database_unavailable(ConnectionRefusedError("not from the database driver"))
    assert not database_unavailable(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not database_unavailable(ValueError("a bug"))
