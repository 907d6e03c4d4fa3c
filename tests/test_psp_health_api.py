"""GET /v1/ops/psp-health: `available` means the PSP can take traffic now; each PSP reports its breaker's window."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from payloop.settings import Settings
from psp.routing.health import HealthStore


@pytest.fixture
async def app(engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    app = create_app(Settings(api_keys="k:back-office:ops"), engine=engine, temporal=object())  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        yield app


async def psp_health(app: FastAPI) -> dict[str, dict]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                                 headers={"Authorization": "Bearer k"}) as http:
        response = await http.get("/v1/ops/psp-health")
    assert response.status_code == 200, response.text
    assert response.json().keys() == {"psps"}  # no page-wide window: each PSP has its breaker's own
    return {entry["psp"]: entry for entry in response.json()["psps"]}


async def test_an_open_circuit_and_an_unregistered_psp_are_not_available(app: FastAPI) -> None:
    store = HealthStore(app.state.engine, app.state.routing)
    for _ in range(app.state.routing.thresholds("card").min_samples):
        await store.record("card", "create_payment", False, 2500, "http_503")
    await store.record("ghost", "create_payment", True, 10)  # a circuit, but no connector
    psps = await psp_health(app)
    assert (psps["card"]["circuit"], psps["card"]["available"]) == ("open", False)
    assert psps["card"]["window_seconds"] == app.state.routing.thresholds("card").window_seconds
    assert (psps["ghost"]["circuit"], psps["ghost"]["available"]) == ("closed", False)
    assert (psps["ewallet"]["circuit"], psps["ewallet"]["available"]) == ("closed", True)
