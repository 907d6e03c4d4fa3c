"""PSP health and the circuit breaker, kept in the database so that every worker and the API see one state.

`psp_attempts` holds one row per PSP call (pruned after `retention`); `psp_circuits` one row per PSP.
Transitions are conditional UPDATEs (`… WHERE state = 'closed'`), so concurrent callers on several processes
make each transition at most once and never lose one:

    closed    → open       record(): over the window (the last `window_seconds`, at most `window_size` attempts,
                           and only attempts since the circuit last closed) samples ≥ min_samples and
                           failures / samples ≥ failure_rate
    open      → half_open  on read (states, try_probe, record) once `open_seconds` have passed since opened_at
    half_open → closed     record() of a success (the probe worked)
    half_open → open       record() of a failure (opened_at = now: another open_seconds)

Any result recorded while half-open counts as the probe's (the store does not track which call was the probe).

Ops may force a circuit (`force()`, kept in `forced` so every process honours it): forced `open` keeps it open
(no promotion to half-open) and forced `closed` keeps it closed (failures never open it) — the breaker's
transitions all require `forced IS NULL`; `auto` hands it back to the breaker, closed, with a fresh window.
`state` always holds the effective state, so the router, the metrics gauge and the ops page read one column.

`snapshot()` (the ops page) shows each PSP's rates over the same attempts the breaker judges (`_window_attempts`),
so a rate it shows is the one the breaker acts on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payloop.db import UtcDateTime, insert_if_missing, metadata, utcnow
from psp.routing.config import HealthThresholds, RoutingConfig
from psp.routing.router import CircuitState

psp_attempts = sa.Table(
    "psp_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("psp", sa.String(50), nullable=False),
    sa.Column("operation", sa.String(40), nullable=False),  # e.g. "create_payment", "create_payout", "get_payment"
    sa.Column("outcome", sa.String(10), nullable=False),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("error_code", sa.String(100), nullable=True),
    sa.Column("at", UtcDateTime, nullable=False, index=True),
    sa.CheckConstraint("outcome IN ('success', 'failure')", name="outcome"),
    sa.Index("ix_psp_attempts_psp_at", "psp", "at"),
)

psp_circuits = sa.Table(
    "psp_circuits",
    metadata,
    sa.Column("psp", sa.String(50), primary_key=True),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("opened_at", UtcDateTime, nullable=True),
    sa.Column("probes_in_flight", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),  # when the state last changed (or a probe was taken)
    # Set by ops (POST /v1/ops/psps/{psp}/circuit): the state held whatever the breaker sees; NULL = the breaker's.
    sa.Column("forced", sa.String(10), nullable=True),
    sa.CheckConstraint("state IN ('closed', 'open', 'half_open')", name="state"),
    sa.CheckConstraint("forced IS NULL OR forced = state", name="forced"),
)

# Prune old attempts on one record() in this many (by attempt id): cheap on average, bounded table.
PRUNE_EVERY = 100
# What ops may set a circuit to: held open, held closed, or back to the breaker.
FORCED_STATES = (CircuitState.OPEN, CircuitState.CLOSED)


@dataclass(frozen=True)
class PspHealth:
    """One PSP now: the rates over the breaker's window (`window_start` … now, at most its `window_size` newest
    attempts), its circuit, and whether it can take traffic."""

    psp: str
    samples: int
    failures: int
    success_rate: Decimal | None  # None without samples
    error_rate: Decimal | None
    p95_latency_ms: int | None
    circuit: CircuitState
    forced: CircuitState | None  # held by ops (open or closed) rather than by the breaker
    opened_at: datetime | None
    window_seconds: int
    window_start: datetime  # the later of now - window_seconds and the circuit's last change of state
    available: bool  # a connector is registered and the circuit is not open (half-open takes probes)

    def as_json(self) -> dict[str, Any]:
        return {
            "psp": self.psp,
            "samples": self.samples,
            "success_rate": None if self.success_rate is None else str(self.success_rate),
            "error_rate": None if self.error_rate is None else str(self.error_rate),
            "p95_latency_ms": self.p95_latency_ms,
            "circuit": self.circuit.value,
            "forced": None if self.forced is None else self.forced.value,
            "opened_at": None if self.opened_at is None else self.opened_at.isoformat(),
            "window_seconds": self.window_seconds,
            "window_start": self.window_start.isoformat(),
            "available": self.available,
        }


class HealthStore:
    def __init__(self, engine: AsyncEngine, config: RoutingConfig, *,
                 retention: timedelta = timedelta(hours=1)) -> None:
        self.engine = engine
        self.config = config
        self.retention = retention

    # --- writes ---------------------------------------------------------------------------------------------

    async def record(self, psp: str, operation: str, ok: bool, latency_ms: int, error_code: str | None = None,
                     now: datetime | None = None) -> CircuitState:
        """Record one PSP call and apply the breaker's transitions in the same transaction; the state after it.

        `ok` is the PSP's availability, not the payment's outcome: a decline or a 4xx answered by a working PSP is
        a success here; timeouts, connection errors and 5xx are failures."""
        now = now or utcnow()
        th = self.config.thresholds(psp)
        async with self.engine.begin() as conn:
            result = await conn.execute(psp_attempts.insert().values(
                psp=psp, operation=operation, outcome="success" if ok else "failure",
                latency_ms=max(0, int(latency_ms)), error_code=error_code, at=now))
            attempt_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
            row = await self._circuit(conn, psp, now)
            state = await self._promote_if_due(conn, row, th, now)
            if state == CircuitState.HALF_OPEN:
                target = CircuitState.CLOSED if ok else CircuitState.OPEN
                if await self._transition(conn, psp, CircuitState.HALF_OPEN, target, now):
                    state = target
                else:  # another process decided the probe first
                    state = CircuitState((await self._circuit(conn, psp, now)).state)
            elif (state == CircuitState.CLOSED and not ok and await self._should_open(conn, psp, th, row, now)
                  and await self._transition(conn, psp, CircuitState.CLOSED, CircuitState.OPEN, now)):
                state = CircuitState.OPEN
            if attempt_id is not None and attempt_id % PRUNE_EVERY == 0:
                await self._prune(conn, now)
        return state

    async def try_probe(self, psp: str, now: datetime | None = None) -> bool:
        """Call before calling a PSP. False only when its circuit is half-open and all `half_open_probes` slots are
        taken (skip the PSP for now); True otherwise — closed, or open (the router only offers an open PSP as a
        last resort), or a probe slot was just taken. A slot is freed by the next record() for the PSP; slots held
        longer than open_seconds (a crashed caller) are reclaimed."""
        now = now or utcnow()
        th = self.config.thresholds(psp)
        async with self.engine.begin() as conn:
            row = await self._circuit(conn, psp, now)
            state = await self._promote_if_due(conn, row, th, now)
            if state != CircuitState.HALF_OPEN:
                return True
            stale = now - timedelta(seconds=th.open_seconds)
            c = psp_circuits.c
            result = await conn.execute(
                psp_circuits.update()
                .where(c.psp == psp, c.state == CircuitState.HALF_OPEN.value,
                       sa.or_(c.probes_in_flight < th.half_open_probes, c.updated_at <= stale))
                .values(probes_in_flight=sa.case((c.updated_at <= stale, 1), else_=c.probes_in_flight + 1),
                        updated_at=now))
            return result.rowcount == 1

    async def force(self, psp: str, forced: CircuitState | None, now: datetime | None = None,
                    on_forced: Callable[[AsyncConnection], Awaitable[None]] | None = None) -> None:
        """Holds `psp`'s circuit open or closed (`forced` in FORCED_STATES), or hands it back to the breaker
        (`forced` None: closed, its window starting now, so failures from before do not reopen it at once).
        `on_forced` runs in the same transaction (the audit entry)."""
        assert forced is None or forced in FORCED_STATES
        now = now or utcnow()
        state = forced or CircuitState.CLOSED
        async with self.engine.begin() as conn:
            row = await self._circuit(conn, psp, now)
            values: dict[str, Any] = {"forced": None if forced is None else forced.value, "state": state.value,
                                      "probes_in_flight": 0, "updated_at": now}
            if state != CircuitState(row.state) or forced is None:
                values["opened_at"] = now if state == CircuitState.OPEN else None
            await conn.execute(psp_circuits.update().where(psp_circuits.c.psp == psp).values(**values))
            if on_forced is not None:
                await on_forced(conn)

    async def prune(self, now: datetime | None = None) -> int:
        async with self.engine.begin() as conn:
            return await self._prune(conn, now or utcnow())

    # --- reads ----------------------------------------------------------------------------------------------

    async def states(self, now: datetime | None = None) -> dict[str, CircuitState]:
        """Every known circuit's state (PSPs never recorded are absent = closed); promotes due open circuits."""
        now = now or utcnow()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(psp_circuits))).all()
        states = {row.psp: CircuitState(row.state) for row in rows}
        due = [row for row in rows if self._due(row, self.config.thresholds(row.psp), now)]
        if due:
            async with self.engine.begin() as conn:
                for row in due:
                    await self._transition(conn, row.psp, CircuitState.OPEN, CircuitState.HALF_OPEN, now,
                                           opened_at=row.opened_at)
                    states[row.psp] = CircuitState((await self._circuit(conn, row.psp, now)).state)
        return states

    async def snapshot(self, now: datetime | None = None, *, registered: Collection[str]) -> dict[str, PspHealth]:
        """Per PSP (every configured one, plus any other with a circuit), over the attempts its breaker judges.

        `registered`: the PSPs with a connector; any other is not available whatever its circuit."""
        now = now or utcnow()
        await self.states(now)  # promotes due open circuits first, so the page shows the state the router sees
        async with self.engine.connect() as conn:
            circuits = {row.psp: row for row in await conn.execute(sa.select(psp_circuits))}
            names = [p.name for p in self.config.psps]
            names += sorted(set(circuits) - set(names))
            return {name: await self._health(conn, name, circuits.get(name), name in registered, now)
                    for name in names}

    # --- internals ------------------------------------------------------------------------------------------

    async def _health(self, conn: AsyncConnection, psp: str, circuit: Any, registered: bool,
                      now: datetime) -> PspHealth:
        th = self.config.thresholds(psp)
        since = _window_start(th, circuit.updated_at if circuit is not None else None, now)
        attempts = (await conn.execute(_window_attempts(psp, th, since, now))).all()
        failures = sum(1 for attempt in attempts if attempt.outcome == "failure")
        state = CircuitState(circuit.state) if circuit is not None else CircuitState.CLOSED
        return PspHealth(
            psp=psp, samples=len(attempts), failures=failures,
            success_rate=_rate(len(attempts) - failures, len(attempts)), error_rate=_rate(failures, len(attempts)),
            p95_latency_ms=_percentile(sorted(attempt.latency_ms for attempt in attempts), 95),
            circuit=state, forced=CircuitState(circuit.forced) if circuit is not None and circuit.forced else None,
            opened_at=circuit.opened_at if state != CircuitState.CLOSED else None,
            window_seconds=th.window_seconds, window_start=since,
            available=registered and state != CircuitState.OPEN,
        )

    async def _circuit(self, conn: AsyncConnection, psp: str, now: datetime) -> Any:
        await insert_if_missing(conn, psp_circuits, {"psp": psp, "state": CircuitState.CLOSED.value,
                                                     "opened_at": None, "probes_in_flight": 0, "updated_at": now,
                                                     "forced": None})
        return (await conn.execute(sa.select(psp_circuits).where(psp_circuits.c.psp == psp))).one()

    @staticmethod
    def _due(row: Any, th: HealthThresholds, now: datetime) -> bool:
        return (row.state == CircuitState.OPEN.value and row.forced is None and row.opened_at is not None
                and now - row.opened_at >= timedelta(seconds=th.open_seconds))

    async def _promote_if_due(self, conn: AsyncConnection, row: Any, th: HealthThresholds,
                              now: datetime) -> CircuitState:
        if not self._due(row, th, now):
            return CircuitState(row.state)
        await self._transition(conn, row.psp, CircuitState.OPEN, CircuitState.HALF_OPEN, now, opened_at=row.opened_at)
        # Whoever made the transition, read what it is now (another process may have gone further).
        return CircuitState((await self._circuit(conn, row.psp, now)).state)

    async def _transition(self, conn: AsyncConnection, psp: str, old: CircuitState, new: CircuitState,
                          now: datetime, *, opened_at: datetime | None = None) -> bool:
        """The conditional UPDATE: True when this call made the transition (the row was still in `old`)."""
        c = psp_circuits.c
        where = [c.psp == psp, c.state == old.value, c.forced.is_(None)]  # a forced circuit is ops' to change
        if opened_at is not None:  # open → half_open: only the opening we looked at
            where.append(c.opened_at == opened_at)
        values: dict[str, Any] = {"state": new.value, "probes_in_flight": 0, "updated_at": now}
        if new == CircuitState.OPEN:
            values["opened_at"] = now
        elif new == CircuitState.CLOSED:
            values["opened_at"] = None
        result = await conn.execute(psp_circuits.update().where(*where).values(**values))
        return result.rowcount == 1

    async def _should_open(self, conn: AsyncConnection, psp: str, th: HealthThresholds, row: Any,
                           now: datetime) -> bool:
        recent = _window_attempts(psp, th, _window_start(th, row.updated_at, now), now).subquery()
        samples, failures = (await conn.execute(
            sa.select(sa.func.count(), sa.func.sum(sa.case((recent.c.outcome == "failure", 1), else_=0)))
        )).one()
        samples, failures = int(samples), int(failures or 0)
        return samples >= th.min_samples and Decimal(failures) >= Decimal(th.failure_rate) * samples

    async def _prune(self, conn: AsyncConnection, now: datetime) -> int:
        result = await conn.execute(psp_attempts.delete().where(psp_attempts.c.at < now - self.retention))
        return result.rowcount


def _window_start(th: HealthThresholds, changed_at: datetime | None, now: datetime) -> datetime:
    """Where the breaker's window begins: `window_seconds` ago, but never before the circuit last changed state
    (attempts from before it closed must not open it again)."""
    start = now - timedelta(seconds=th.window_seconds)
    return start if changed_at is None else max(start, changed_at)


def _window_attempts(psp: str, th: HealthThresholds, since: datetime, now: datetime) -> sa.Select[Any]:
    """The attempts the breaker judges, newest first: from `since` (`_window_start`) to `now`, at most
    `window_size` of them. Both the breaker (`_should_open`) and the ops page (`snapshot`) read this."""
    a = psp_attempts.c
    return (sa.select(a.outcome, a.latency_ms).where(a.psp == psp, a.at >= since, a.at <= now)
            .order_by(a.at.desc(), a.id.desc()).limit(th.window_size))


def _rate(part: int, whole: int) -> Decimal | None:
    return None if whole == 0 else (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"))


def _percentile(sorted_values: list[int], pct: int) -> int | None:
    """Nearest-rank percentile: the smallest value with at least pct % of the values at or below it."""
    if not sorted_values:
        return None
    rank = -(-pct * len(sorted_values) // 100)  # ceil
    return sorted_values[max(rank, 1) - 1]
