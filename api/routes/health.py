"""Liveness and readiness (database and Temporal both answer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from sqlalchemy import text

from api.errors import Problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
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
