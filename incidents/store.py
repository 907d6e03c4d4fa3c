"""Incidents kept: one detection pass applied, ops' manual resolve, and the reads of the ops API.

A pass (`apply`) converges the open incidents on the conditions that hold now:
- a condition of a (class, scope) with no open incident opens one (`reopened` on its timeline when ops resolved the
  previous one of that class and scope while its cause still held);
- an open incident whose condition still holds gets its figures and newly affected ids, up to
  `affected_ids_kept_max` in all (its figures say how many are kept and whether it is full); a timeline entry only
  when its figures differ from the last ones on its timeline and the last entry is `timeline_update_seconds` old;
- an open incident whose condition is gone is resolved by "monitor".
The partial unique index allows one open incident per (class, scope), so the same pass applied again (a retried
activity, a second monitor) finds everything already as it would make it and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from incidents.config import Thresholds
from incidents.detection import Condition
from incidents.models import incident_events, incident_payments, incidents
from ledger.errors import RecordNotFound
from payloop.db import insert_if_missing

MONITOR = "monitor"
# The figures the store adds to a condition's own: how many affected ids the incident keeps, and whether it is full.
AFFECTED_KEPT = "affected_ids_kept"
AFFECTED_FULL = "affected_ids_full"
DEFAULTS = Thresholds()
LIST_LIMIT_MAX = 500
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Incident:
    incident_id: str
    incident_class: str
    scope: str
    state: str
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    first_seen_at: datetime | None
    diagnosis: str
    figures_at_open: dict[str, Any]
    figures_now: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    event_id: int
    kind: str
    at: datetime
    actor: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Affected:
    kind: str  # payment | payout
    object_id: str


@dataclass
class PassResult:
    """What one pass changed: the classes of the incidents it opened and resolved (a class once per incident)."""

    opened: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


class IncidentAlreadyResolved(Exception):
    code = "incident_already_resolved"

    def __init__(self, incident_id: str) -> None:
        super().__init__(f"incident {incident_id} is already resolved")
        self.incident_id = incident_id


def new_incident_id() -> str:
    return f"inc_{uuid.uuid4().hex}"


async def apply(engine: AsyncEngine, conditions: Sequence[Condition], now: datetime,
                thresholds: Thresholds = DEFAULTS) -> PassResult:
    """Open, update and resolve so the open incidents match `conditions` (see the module's docstring)."""
    result = PassResult()
    wanted = {(c.incident_class, c.scope): c for c in conditions}
    async with engine.begin() as conn:
        open_now = {(i.incident_class, i.scope): i for i in map(_incident, await conn.execute(
            sa.select(incidents).where(incidents.c.state == "open")))}
        for key, condition in wanted.items():
            incident = open_now.get(key)
            if incident is None:
                if await _open(conn, condition, now, thresholds):
                    result.opened.append(condition.incident_class)
            elif await _update(conn, incident, condition, now, thresholds):
                result.updated.append(condition.incident_class)
        for key, incident in open_now.items():
            if key not in wanted and await _close(conn, incident.incident_id, MONITOR, now, {"cause": "cleared"}):
                result.resolved.append(incident.incident_class)
    return result


async def resolve(engine: AsyncEngine, incident_id: str, actor: str, note: str, now: datetime, *,
                  on_resolved: Callable[[AsyncConnection, Incident], Awaitable[None]] | None = None) -> Incident:
    """Ops resolve an incident: its timeline entry and whatever `on_resolved(conn, incident)` writes (the audit
    entry) in one transaction. RecordNotFound, or IncidentAlreadyResolved. If the cause still holds, the next pass
    opens a new incident."""
    async with engine.begin() as conn:
        if not await _close(conn, incident_id, actor, now, {"note": note}):
            if await _get(conn, incident_id) is None:
                raise RecordNotFound("incident", incident_id)
            raise IncidentAlreadyResolved(incident_id)
        incident = await _get(conn, incident_id)
        assert incident is not None  # just updated in this transaction
        if on_resolved is not None:
            await on_resolved(conn, incident)
    return incident


async def _open(conn: AsyncConnection, c: Condition, now: datetime, thresholds: Thresholds) -> bool:
    incident_id = new_incident_id()
    named = len(_affected_rows(incident_id, c))  # a new incident keeps none yet: it keeps what fits
    figures = _with_affected(c.figures, min(named, thresholds.affected_ids_kept_max),
                             named > thresholds.affected_ids_kept_max)
    inserted = await insert_if_missing(conn, incidents, {
        "incident_id": incident_id, "incident_class": c.incident_class, "scope": c.scope, "state": "open",
        "opened_at": now, "updated_at": now, "resolved_at": None, "resolved_by": None,
        "first_seen_at": c.first_seen_at, "diagnosis": c.diagnosis[:500], "figures_at_open": figures,
        "figures_now": figures})
    if not inserted:  # another pass opened it first
        return False
    previous = (await conn.execute(
        sa.select(incidents.c.incident_id, incidents.c.resolved_by)
        .where(incidents.c.incident_class == c.incident_class, incidents.c.scope == c.scope,
               incidents.c.state == "resolved")
        .order_by(incidents.c.resolved_at.desc(), incidents.c.incident_id.desc()).limit(1))).one_or_none()
    reopened = previous is not None and previous.resolved_by != MONITOR  # ops resolved it; the cause held
    details = {"diagnosis": c.diagnosis, "figures": figures}
    if reopened:
        details["previous_incident_id"] = previous.incident_id
    await conn.execute(incident_events.insert().values(incident_id=incident_id, kind="reopened" if reopened
                                                       else "opened", at=now, actor=MONITOR, details=details))
    await _add_affected(conn, incident_id, c, thresholds.affected_ids_kept_max)
    return True


async def _update(conn: AsyncConnection, incident: Incident, c: Condition, now: datetime,
                  thresholds: Thresholds) -> bool:
    kept, full = await _add_affected(conn, incident.incident_id, c, thresholds.affected_ids_kept_max)
    figures = _with_affected(c.figures, kept, full or bool(incident.figures_now.get(AFFECTED_FULL)))
    if incident.figures_now == figures:
        return False
    await conn.execute(incidents.update().where(incidents.c.incident_id == incident.incident_id).values(
        figures_now=figures, diagnosis=c.diagnosis[:500], updated_at=now))
    e = incident_events.c
    last = (await conn.execute(sa.select(e.at, e.details).where(e.incident_id == incident.incident_id)
                               .order_by(e.event_id.desc()).limit(1))).one()
    logged_long_ago = now - last.at >= timedelta(seconds=thresholds.timeline_update_seconds)
    if last.details.get("figures") != figures and logged_long_ago:
        await conn.execute(incident_events.insert().values(
            incident_id=incident.incident_id, kind="updated", at=now, actor=MONITOR,
            details={"diagnosis": c.diagnosis, "figures": figures}))
    return True


def _with_affected(figures: dict[str, Any], kept: int, full: bool) -> dict[str, Any]:
    return {**figures, AFFECTED_KEPT: kept, AFFECTED_FULL: full}


async def _close(conn: AsyncConnection, incident_id: str, actor: str, now: datetime, details: dict[str, Any]) -> bool:
    """The conditional UPDATE open → resolved: True when this call resolved it."""
    c = incidents.c
    changed = await conn.execute(incidents.update().where(c.incident_id == incident_id, c.state == "open").values(
        state="resolved", resolved_at=now, resolved_by=actor, updated_at=now))
    if changed.rowcount != 1:
        return False
    await conn.execute(incident_events.insert().values(incident_id=incident_id, kind="resolved", at=now, actor=actor,
                                                       details=details))
    return True


async def _add_affected(conn: AsyncConnection, incident_id: str, c: Condition, kept_max: int) -> tuple[int, bool]:
    """Keeps the ids the condition names, up to `kept_max` for the incident in all: (how many it keeps now, whether
    some named were left out because it was full)."""
    ip = incident_payments.c
    kept = (await conn.execute(sa.select(sa.func.count()).select_from(incident_payments)
                               .where(ip.incident_id == incident_id))).scalar_one()
    beyond: dict[str, list[str]] = {}  # named once it was full: left out unless kept by an earlier pass
    for row in _affected_rows(incident_id, c):
        if kept >= kept_max:
            beyond.setdefault(row["kind"], []).append(row["object_id"])
        elif await insert_if_missing(conn, incident_payments, row):
            kept += 1
    for kind, ids in beyond.items():  # at most affected_ids_max ids: one bounded IN list
        present = (await conn.execute(sa.select(sa.func.count()).select_from(incident_payments).where(
            ip.incident_id == incident_id, ip.kind == kind, ip.object_id.in_(ids)))).scalar_one()
        if present < len(ids):
            return kept, True
    return kept, False


def _affected_rows(incident_id: str, c: Condition) -> list[dict[str, str]]:
    rows = [{"incident_id": incident_id, "kind": "payment", "object_id": i} for i in c.payment_ids]
    return rows + [{"incident_id": incident_id, "kind": "payout", "object_id": i} for i in c.payout_ids]


# --- reads ----------------------------------------------------------------------------------------------------


async def list_incidents(engine: AsyncEngine, *, state: str | None = None, incident_class: str | None = None,
                         limit: int = 50, before: str | None = None) -> list[Incident]:
    """Newest first (opened_at, then id, descending); `before`: the previous page's last id (RecordNotFound if
    unknown)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIST_LIMIT_MAX}")
    c = incidents.c
    filters = {"state": state, "incident_class": incident_class}
    query = (sa.select(incidents).where(*(c[name] == value for name, value in filters.items() if value is not None))
             .order_by(c.opened_at.desc(), c.incident_id.desc()).limit(limit))
    async with engine.connect() as conn:
        if before is not None:
            cursor = (await conn.execute(sa.select(c.opened_at).where(c.incident_id == before))).scalar_one_or_none()
            if cursor is None:
                raise RecordNotFound("incident", before)
            query = query.where(sa.tuple_(c.opened_at, c.incident_id) < sa.tuple_(cursor, before))
        return [_incident(row) for row in await conn.execute(query)]


async def get(engine: AsyncEngine, incident_id: str) -> Incident | None:
    async with engine.connect() as conn:
        return await _get(conn, incident_id)


async def timeline(engine: AsyncEngine, incident_id: str) -> list[IncidentEvent]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(incident_events).where(incident_events.c.incident_id == incident_id)
                                  .order_by(incident_events.c.event_id))
        return [_from_row(IncidentEvent, row) for row in rows]


async def affected(engine: AsyncEngine, incident_id: str) -> list[Affected]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(incident_payments.c.kind, incident_payments.c.object_id)
                                  .where(incident_payments.c.incident_id == incident_id)
                                  .order_by(incident_payments.c.kind, incident_payments.c.object_id))
        return [Affected(row.kind, row.object_id) for row in rows]


async def open_counts(conn: AsyncConnection) -> dict[str, int]:
    """Open incidents per class (through ix_incidents_state_opened_at)."""
    rows = await conn.execute(sa.select(incidents.c.incident_class, sa.func.count())
                              .where(incidents.c.state == "open").group_by(incidents.c.incident_class))
    return {name: int(count) for name, count in rows}


async def _get(conn: AsyncConnection, incident_id: str) -> Incident | None:
    row = (await conn.execute(sa.select(incidents).where(incidents.c.incident_id == incident_id))).one_or_none()
    return _incident(row) if row is not None else None


def _incident(row: Any) -> Incident:
    return _from_row(Incident, row)


def _from_row(cls: type[R], row: Any) -> R:
    mapping = row._mapping
    return cls(**{f.name: mapping[f.name] for f in fields(cls)})  # type: ignore[arg-type]
