"""`POST /ops/login` is limited per source address through RateLimits (PAYLOOP_RATE_LIMIT_CONSOLE_LOGIN): every
attempt counts, right key or not; over the limit a 429 page with Retry-After, before the key is looked at; refused
sign-ins are counted on /metrics and logged as WARNING lines without anything of the key. In process, on SQLite and
PostgreSQL (the sessions are stored)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from payloop.settings import Settings

OPS_KEY = "ops-key-secret-1234"
PAYMENTS_KEY = "payments-key-secret-5678"
ORIGIN = "http://console"


@pytest.fixture
async def console(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_keys=f"{OPS_KEY}:back-office:ops;{PAYMENTS_KEY}:casino:payments",
                        rate_limit_console_login="3/minute", console_cookie_secure=False)
    app = create_app(settings, engine=engine, temporal=object())  # type: ignore[arg-type]
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 5000)), base_url=ORIGIN,
        headers={"Origin": ORIGIN}
    ) as http:
        yield http


async def test_sign_ins_are_limited_per_address_counted_and_logged_without_the_key(
    console: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="payloop.api.console")
    for key in (PAYMENTS_KEY, "guess-0001"):
        wrong = await console.post("/ops/login", data={"api_key": key})
        assert wrong.status_code == 401
    signed_in = await console.post("/ops/login", data={"api_key": OPS_KEY})  # a right key counts too
    assert signed_in.status_code == 303

    limited = await console.post("/ops/login", data={"api_key": OPS_KEY})
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert "Too many sign-in attempts" in limited.text and "set-cookie" not in limited.headers

    metrics = (await console.get("/metrics")).text
    assert 'payloop_console_sign_ins_refused_total{reason="key"} 2.0' in metrics
    assert 'payloop_console_sign_ins_refused_total{reason="rate_limited"} 1.0' in metrics
    assert 'payloop_rate_limited_total{limit="console_login"} 1.0' in metrics
    lines = [r.getMessage() for r in caplog.records if r.name == "payloop.api.console"]
    assert len(lines) == 3 and all(r.levelno == logging.WARNING for r in caplog.records if r.name ==
                                   "payloop.api.console")
    assert not any(secret in line for line in lines for secret in (OPS_KEY, PAYMENTS_KEY, "guess-0001",
                                                                   "back-office", "casino"))
