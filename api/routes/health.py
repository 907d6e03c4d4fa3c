"""Liveness, readiness (database and Temporal both answer) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select, text

from api.errors import Problem, problem_responses
from api.models import webhook_deliveries
from api.rate_limits import RateLimits
from api.schemas import HealthStatus, Readiness
from payloop import alerts

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
async def metrics(request: Request) -> str:
    """Prometheus text format: alerts by kind and webhook deliveries by PSP and outcome (from the database, so
    every API instance reports the same totals)."""
    engine = request.app.state.engine
    lines = ["# HELP payloop_alerts_total Alerts raised for people, by kind.", "# TYPE payloop_alerts_total counter"]
    for kind, count in sorted((await alerts.counts(engine)).items()):
        lines.append(f'payloop_alerts_total{{kind="{kind}"}} {count}')
    lines += ["# HELP payloop_webhook_deliveries_total Webhook deliveries by PSP and outcome.",
              "# TYPE payloop_webhook_deliveries_total counter"]
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(webhook_deliveries.c.psp, webhook_deliveries.c.outcome, func.count())
            .group_by(webhook_deliveries.c.psp, webhook_deliveries.c.outcome)
            .order_by(webhook_deliveries.c.psp, webhook_deliveries.c.outcome)
        )
        for psp, outcome, count in rows:
            lines.append(f'payloop_webhook_deliveries_total{{psp="{psp}",outcome="{outcome}"}} {count}')
    return "\n".join(lines + _limit_metrics(request.app.state)) + "\n"


def _limit_metrics(state: Any) -> list[str]:
    """Counters of this API process (each process reports its own; Prometheus sums them): rate limiting, the
    rejected webhooks left out of the log, status re-checks, the pruned delivery log."""
    limits: RateLimits = state.rate_limits
    lines = ["# HELP payloop_rate_limited_total Requests refused with 429 by this process, by limit.",
             "# TYPE payloop_rate_limited_total counter"]
    lines += [f'payloop_rate_limited_total{{limit="{kind}"}} {limits.refused[kind]}'
              for kind in ("payments", "webhooks")]
    lines += ["# HELP payloop_rate_limit_storage_errors_total Redis errors of the rate limiter (it then counts in "
              "memory).",
              "# TYPE payloop_rate_limit_storage_errors_total counter",
              f"payloop_rate_limit_storage_errors_total {limits.storage_errors}",
              "# HELP payloop_webhook_rejections_not_logged_total Rejected webhooks counted but not logged (over the "
              "rejection-log limit), by PSP and reason.",
              "# TYPE payloop_webhook_rejections_not_logged_total counter"]
    lines += [f'payloop_webhook_rejections_not_logged_total{{psp="{psp}",reason="{reason}"}} {count}'
              for (psp, reason), count in sorted(limits.rejections_not_logged.items())]
    lines += ["# HELP payloop_status_rechecks_total Re-checks unverified webhooks asked for: allowed (signal sent) or "
              "suppressed (one per payment per interval).",
              "# TYPE payloop_status_rechecks_total counter"]
    lines += [f'payloop_status_rechecks_total{{outcome="{outcome}"}} {limits.rechecks[outcome]}'
              for outcome in ("allowed", "suppressed")]
    pruner = getattr(state, "delivery_log_pruner", None)
    lines += ["# HELP payloop_webhook_deliveries_pruned_total Delivery-log rows this process deleted as too old.",
              "# TYPE payloop_webhook_deliveries_pruned_total counter",
              f"payloop_webhook_deliveries_pruned_total {pruner.pruned_total if pruner else 0}"]
    return lines
