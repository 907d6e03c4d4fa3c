"""Rate limits over real HTTP, on API instances of their own with low limits (the session stack keeps the
defaults, which no other test trips): 429 problem+json with Retry-After per API client and per webhook source,
counts shared by two API instances through a real Redis, the bounded log of rejected webhooks and the pruning of
the delivery log, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.models import webhook_deliveries
from entrypoints.server import api_server_options
from payloop.settings import Settings
from tests.conftest import BACKENDS, FreshDatabase, redis_url
from tests.e2e.conftest import API_KEY, OTHER_CLIENT_KEY, free_port, metric_value, stack_settings
from tests.e2e.test_webhooks import captured_event, signed_headers

PROBLEM_JSON = "application/problem+json"


@contextlib.asynccontextmanager
async def serving(app: FastAPI, settings: Settings, **uvicorn_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """`app` served as `payloop api` serves it (entrypoints/server.py), and a client for it."""
    config = uvicorn.Config(app, **(api_server_options(settings) | {"log_level": "warning"} | uvicorn_options))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=settings.api_url, timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def database(backend: str, workdir: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    async with FreshDatabase(backend, workdir) as db:
        engine = db.engine()
        try:
            yield db.url, engine
        finally:
            await engine.dispose()


def api_settings(database_url: str, **overrides: Any) -> Settings:
    # A key prefix of its own, so that runs sharing the Redis never share a count.
    return stack_settings(database_url, "unused", **({"redis_key_prefix": f"t-{uuid.uuid4().hex[:12]}"} | overrides))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_rate_limited(response: httpx.Response, window_seconds: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["code"], body["status"], body["retryable"], body["errors"]) == ("rate_limited", 429, True, [])
    assert body["trace_id"] == response.headers["x-trace-id"]
    assert 1 <= int(response.headers["retry-after"]) <= window_seconds


async def test_a_client_over_its_limit_gets_429_with_retry_after_and_other_clients_do_not(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with database("sqlite", tmp_path) as (url, engine):
        settings = api_settings(url, api_port=free_port(), rate_limit_payments="3/minute")
        app = create_app(settings, engine=engine, temporal=temporal_env.client)
        async with serving(app, settings) as api:
            for _ in range(3):
                assert (await api.get("/v1/payments/nope", headers=auth(API_KEY))).status_code == 404
            assert_rate_limited(await api.get("/v1/payments/nope", headers=auth(API_KEY)), 60)
            # Counted before the body is read: a flood of broken bodies is refused like any other request.
            broken = await api.post("/v1/payments/init", content=b"{not json", headers=auth(API_KEY) | {
                "Content-Type": "application/json", "Idempotency-Key": "k1"})
            assert_rate_limited(broken, 60)
            assert (await api.get("/v1/payments/nope", headers=auth(OTHER_CLIENT_KEY))).status_code == 404
            # An invalid key is not a client: its 401 comes from the route, as before.
            assert (await api.get("/v1/payments/nope", headers=auth("not-a-key"))).status_code == 401
            assert (await api.get("/healthz")).status_code == 200  # no key, no client limit
            metrics = (await api.get("/metrics")).text
        assert metric_value(metrics, "payloop_rate_limited_total", limit="payments") == 2


async def test_webhooks_are_limited_per_psp_endpoint_and_source_and_forwarded_for_is_not_believed(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with database("sqlite", tmp_path) as (url, engine):
        settings = api_settings(url, api_port=free_port(), rate_limit_webhooks="2/minute")
        app = create_app(settings, engine=engine, temporal=temporal_env.client)
        # The only trusted proxy is an address that is not ours: X-Forwarded-For from us is the client's word.
        async with serving(app, settings, forwarded_allow_ips="192.0.2.1") as api:
            body = captured_event(f"pay_{uuid.uuid4().hex[:24]}", "ref")

            async def forged(psp: str, forwarded_for: str) -> httpx.Response:
                headers = signed_headers("whsec_attacker", 0, body) | {"X-Forwarded-For": forwarded_for}
                return await api.post(f"/v1/webhooks/{psp}", content=body, headers=headers)

            assert [(await forged("card", f"198.51.100.{i}")).status_code for i in range(2)] == [401, 401]
            assert_rate_limited(await forged("card", "198.51.100.77"), 60)
            assert (await forged("ewallet", "198.51.100.1")).status_code == 401  # its own count per endpoint
            assert (await api.post("/v1/webhooks/nobody", content=body)).status_code == 404


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_source(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """uvicorn believes X-Forwarded-For only from FORWARDED_ALLOW_IPS (default: loopback), and the limiter counts
    by the address uvicorn settled on: a deployment behind a load balancer sets it to the balancer's address."""
    async with database("sqlite", tmp_path) as (url, engine):
        settings = api_settings(url, api_port=free_port(), rate_limit_webhooks="1/minute")
        app = create_app(settings, engine=engine, temporal=temporal_env.client)
        async with serving(app, settings, forwarded_allow_ips="127.0.0.1") as api:
            body = b"{}"
            first = await api.post("/v1/webhooks/card", content=body, headers={"X-Forwarded-For": "198.51.100.1"})
            again = await api.post("/v1/webhooks/card", content=body, headers={"X-Forwarded-For": "198.51.100.1"})
            other = await api.post("/v1/webhooks/card", content=body, headers={"X-Forwarded-For": "198.51.100.2"})
            assert (first.status_code, again.status_code, other.status_code) == (401, 429, 401)


async def test_two_api_instances_on_one_redis_share_each_client_s_count(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    url = redis_url()
    async with database("sqlite", tmp_path) as (db_url, engine):
        first = api_settings(db_url, api_port=free_port(), redis_url=url, rate_limit_payments="4/minute")
        second = first.model_copy(update={"api_port": free_port()})
        async with (
            serving(create_app(first, engine=engine, temporal=temporal_env.client), first) as api_a,
            serving(create_app(second, engine=engine, temporal=temporal_env.client), second) as api_b,
        ):
            for api in (api_a, api_b, api_a, api_b):
                assert (await api.get("/v1/payments/nope", headers=auth(API_KEY))).status_code == 404
            assert_rate_limited(await api_a.get("/v1/payments/nope", headers=auth(API_KEY)), 60)
            assert_rate_limited(await api_b.get("/v1/payments/nope", headers=auth(API_KEY)), 60)
            assert (await api_b.get("/v1/payments/nope", headers=auth(OTHER_CLIENT_KEY))).status_code == 404
            metrics = (await api_a.get("/metrics")).text
        assert metric_value(metrics, "payloop_rate_limit_storage_errors_total") == 0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_rejected_webhooks_are_logged_at_a_bounded_rate_and_the_rest_counted(
    backend: str, temporal_env: WorkflowEnvironment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="payloop.webhooks")
    async with database(backend, tmp_path) as (url, engine):
        settings = api_settings(url, api_port=free_port(), rate_limit_webhooks="1000/second",
                                rate_limit_webhook_rejection_log="3/minute")
        app = create_app(settings, engine=engine, temporal=temporal_env.client)
        async with serving(app, settings) as api:
            body = captured_event("not-one-of-ours", "ref")
            answers = [(await api.post("/v1/webhooks/card", content=body,
                                       headers=signed_headers("whsec_attacker", 0, body))).status_code
                       for _ in range(40)]
            assert answers == [401] * 40  # every one refused, only the first three written down
            metrics = (await api.get("/metrics")).text
        async with engine.connect() as conn:
            rejected = (await conn.execute(sa.select(sa.func.count()).select_from(webhook_deliveries).where(
                webhook_deliveries.c.outcome == "rejected"))).scalar_one()
    assert rejected == 3
    assert metric_value(metrics, "payloop_webhook_deliveries_total", psp="card", outcome="rejected") == 3
    assert metric_value(metrics, "payloop_webhook_rejections_not_logged_total", psp="card") == 37
    lines = [r for r in caplog.records if r.name == "payloop.webhooks" and "rejected card webhook" in r.getMessage()]
    assert len(lines) == 3


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_running_api_prunes_delivery_log_rows_older_than_the_retention(
    backend: str, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    now = datetime.now(timezone.utc)
    async with database(backend, tmp_path) as (url, engine):
        async with engine.begin() as conn:
            await conn.execute(webhook_deliveries.insert(), [
                {"psp": "card", "event_id": f"evt_old_{i}", "outcome": "signalled", "at": now - timedelta(days=40 - i)}
                for i in range(5)  # 40 … 36 days old
            ] + [{"psp": "card", "event_id": "evt_recent", "outcome": "signalled", "at": now - timedelta(days=29)}])
        settings = api_settings(url, api_port=free_port(), webhook_delivery_retention_days=30)
        app = create_app(settings, engine=engine, temporal=temporal_env.client)
        async with serving(app, settings) as api:
            for _ in range(200):  # the lifespan's first pass runs at start-up
                if metric_value((await api.get("/metrics")).text, "payloop_webhook_deliveries_pruned_total") == 5:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the API did not prune the delivery log")
        async with engine.connect() as conn:
            left = (await conn.execute(sa.select(webhook_deliveries.c.event_id))).scalars().all()
    assert left == ["evt_recent"]
