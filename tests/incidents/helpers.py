"""What the incidents tests build on: deposits, webhooks and alerts written straight into their tables, and one
detection pass with the shipped thresholds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from api.models import webhook_deliveries
from incidents import detection
from incidents.config import Thresholds, load_thresholds_file, default_path
from ledger.models import payments
from payloop.alerts import raise_alert
from psp.inbox import webhook_events
from psp.routing.health import PspHealth

NOW = datetime(2026, 12, 8, 12, tzinfo=UTC)
SHIPPED = load_thresholds_file(default_path())


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


async def deposits(engine: AsyncEngine, status: str, count: int, *, method: str = "card", psp: str | None = "card",
                   at: datetime = NOW - seconds(30), failure_code: str | None = None, prefix: str = "") -> list[str]:
    ids = [f"pay_{prefix}{status}_{method}_{psp}_{n}" for n in range(count)]
    async with engine.begin() as conn:
        for payment_id in ids:
            await conn.execute(insert(payments).values(
                payment_id=payment_id, client_id="c1", player_id="p1", method=method, currency="EUR",
                amount_minor=1000, status=status, psp=psp, failure_code=failure_code, created_at=at, updated_at=at))
    return ids


async def deliveries(engine: AsyncEngine, psp: str, outcome: str, count: int, at: datetime = NOW - seconds(30)) -> None:
    async with engine.begin() as conn:
        for _ in range(count):
            await conn.execute(insert(webhook_deliveries).values(psp=psp, outcome=outcome, at=at))


async def dead_letter(engine: AsyncEngine, psp: str, event_id: str, payment_id: str, kind: str = "payment",
                      at: datetime = NOW - seconds(30)) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(webhook_events).values(
            psp=psp, event_id=event_id, payment_id=payment_id, psp_reference="ref", status="captured",
            amount_minor=1000, currency="EUR", kind=kind, state="dead_letter", dead_letter_reason="unknown_payment",
            received_at=at, updated_at=at))


async def alert(engine: AsyncEngine, kind: str, reference: str, at: datetime = NOW - seconds(30)) -> None:
    await raise_alert(engine, kind=kind, reference=reference, details={}, now=at)


async def detect(engine: AsyncEngine, *, now: datetime = NOW, thresholds: Thresholds = SHIPPED,
                 health: Mapping[str, PspHealth] | None = None,
                 running: Iterable[detection.RunningWorkflow] = (),
                 running_deposits: Iterable[detection.RunningWorkflow] = ()) -> list[detection.Condition]:
    return await detection.detect(engine, thresholds, now, health=health or {}, running_deposits=running_deposits,
                                  running_payouts=running)
