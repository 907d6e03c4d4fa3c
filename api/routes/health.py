"""Liveness, readiness (database and Temporal both answer) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.errors import Problem, problem_responses
from api.metrics import ApiMetrics
from api.schemas import HealthStatus, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthStatus)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
async def readyz(request: Request) -> dict[str, str]:
    state = request.app.state
    checks = {"database": "ok", "temporal": "ok"}
    try:
        async with state.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
    except Exception:  # any failure means "not ready"; the body says which dependency
        checks["database"] = "unavailable"
    try:
        await asyncio.wait_for(state.temporal.service_client.check_health(), timeout=2)
    except Exception:
        checks["temporal"] = "unavailable"
    if "unavailable" in checks.values():
        raise Problem(503, "not_ready", "Not ready", ", ".join(f"{k}: {v}" for k, v in checks.items()),
                      retryable=True, headers={"Retry-After": "2"}, checks=checks)
    return {"status": "ready", **checks}


@router.get("/metrics", response_class=PlainTextResponse, responses=problem_responses(503))
async def metrics(request: Request) -> Response:
    """Prometheus text format (api/metrics.py; the README lists every metric)."""
    state = request.app.state
    api_metrics: ApiMetrics = state.metrics
    await api_metrics.refresh_from_database(state.engine, (psp.name for psp in state.routing.psps))
    return Response(generate_latest(api_metrics.registry), media_type=CONTENT_TYPE_LATEST)
