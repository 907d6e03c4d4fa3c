"""Payment-method switches: ops turn a method off (hidden from `GET /v1/payment-methods`, refused at
`POST /v1/payments/init`) and on again. One row per method ever switched; a method without a row is on.
Kept in the database, so every API process honours a switch at once."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payloop.db import UtcDateTime, insert_if_missing, metadata

method_switches = sa.Table(
    "method_switches",
    metadata,
    sa.Column("method", sa.String(30), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("updated_by", sa.String(100), nullable=False),  # the API client that switched it
)


# How long an API process may go on using the switches it read (DisabledMethods).
DISABLED_METHODS_TTL_SECONDS = 5.0


@dataclass(frozen=True)
class MethodSwitch:
    method: str
    enabled: bool
    updated_at: datetime | None  # None: never switched
    updated_by: str | None


async def disabled_methods(engine: AsyncEngine) -> frozenset[str]:
    """The methods switched off now (a primary-key-sized table: read whole)."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(method_switches.c.method).where(method_switches.c.enabled.is_(False)))
        return frozenset(row.method for row in rows)


class DisabledMethods:
    """The methods switched off, read from the database at most once per `ttl_seconds` in this process:
    `POST /v1/payments/init` asks on every deposit (the hot path), and switches are rare. A switch made through
    this process takes effect here at once (`forget`); one made through another process within `ttl_seconds`."""

    def __init__(self, engine: AsyncEngine, ttl_seconds: float = DISABLED_METHODS_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        self._read: tuple[float, frozenset[str]] | None = None  # (read at, by the clock; the methods off)

    async def get(self) -> frozenset[str]:
        now = self._clock()
        if self._read is None or now - self._read[0] >= self._ttl_seconds:
            self._read = (now, await disabled_methods(self._engine))
        return self._read[1]

    def forget(self) -> None:
        self._read = None


async def switches(engine: AsyncEngine, methods: frozenset[str]) -> list[MethodSwitch]:
    """Every method of `methods` with its switch, by name; one never switched is on."""
    async with engine.connect() as conn:
        rows = {row.method: row for row in await conn.execute(sa.select(method_switches))}
    return [MethodSwitch(m, rows[m].enabled, rows[m].updated_at, rows[m].updated_by) if m in rows
            else MethodSwitch(m, True, None, None) for m in sorted(methods)]


async def switch(
    engine: AsyncEngine, method: str, enabled: bool, by: str, now: datetime,
    on_switched: Callable[[AsyncConnection], Awaitable[None]],
) -> MethodSwitch:
    """Turns `method` on or off; `on_switched` runs in the same transaction (the audit entry)."""
    async with engine.begin() as conn:
        values = {"enabled": enabled, "updated_at": now, "updated_by": by}
        if not await insert_if_missing(conn, method_switches, {"method": method, **values}):
            await conn.execute(method_switches.update().where(method_switches.c.method == method).values(**values))
        await on_switched(conn)
    return MethodSwitch(method, enabled, now, by)
