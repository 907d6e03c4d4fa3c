"""An incident's detail and report: the incident, its timeline, the payments and payouts it is about with their
status now, the corrections taken (given: the audit log is the players package's), and the validation — every
affected payment and payout final, the ledger's invariants green (ledger/invariants.py).

Detection time is opened_at minus the first sign of the cause the detector saw (the oldest failure, a payout's SLA
running out, the circuit opening); duration is opened_at to resolved_at (to now while open)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from incidents import store
from ledger.invariants import check_invariants
from ledger.models import payments, payouts

# workflows.types' final statuses (incidents may not import workflows; tests/incidents/test_status_words.py ties
# them). A deposit `in_review` has ended its workflow's own part but waits for a person's decision: its money is not
# settled, so it is not final here — an incident about it has not passed while it waits.
DEPOSIT_FINAL = frozenset({"credited", "failed", "rejected", "expired", "refunded"})
PAYOUT_FINAL = frozenset({"paid", "failed", "rejected", "cancelled"})
RUNNING = "running"  # a payout not in the payouts table: it is written at the payout's end


@dataclass(frozen=True)
class AffectedNow:
    kind: str  # payment | payout
    object_id: str
    status: str
    final: bool


@dataclass(frozen=True)
class IncidentDetail:
    incident: store.Incident
    timeline: list[store.IncidentEvent]
    affected: list[AffectedNow]


async def detail(engine: AsyncEngine, incident_id: str) -> IncidentDetail | None:
    incident = await store.get(engine, incident_id)
    if incident is None:
        return None
    affected = await store.affected(engine, incident_id)
    ids = {kind: [a.object_id for a in affected if a.kind == kind] for kind in ("payment", "payout")}
    async with engine.connect() as conn:
        statuses = {("payment", i): s for i, s in await conn.execute(
            sa.select(payments.c.payment_id, payments.c.status).where(payments.c.payment_id.in_(ids["payment"])))}
        statuses |= {("payout", i): s for i, s in await conn.execute(
            sa.select(payouts.c.payout_id, payouts.c.status).where(payouts.c.payout_id.in_(ids["payout"])))}
    now = [_now(a.kind, a.object_id, statuses.get((a.kind, a.object_id))) for a in affected]
    return IncidentDetail(incident, await store.timeline(engine, incident_id), now)


def _now(kind: str, object_id: str, status: str | None) -> AffectedNow:
    status = status or RUNNING
    return AffectedNow(kind, object_id, status, status in (DEPOSIT_FINAL if kind == "payment" else PAYOUT_FINAL))


async def report(engine: AsyncEngine, incident_id: str, corrections: list[dict[str, Any]],
                 now: datetime) -> dict[str, Any] | None:
    """The report as a JSON-able dict (None: no such incident). `corrections`: the audit entries naming it."""
    found = await detail(engine, incident_id)
    if found is None:
        return None
    i = found.incident
    invariants = await check_invariants(engine)
    not_final = [f"{a.kind}:{a.object_id}" for a in found.affected if not a.final]
    ended = i.resolved_at or now
    return {
        "incident_id": i.incident_id, "incident_class": i.incident_class, "scope": i.scope, "state": i.state,
        "summary": (f"open since {i.opened_at.isoformat()}" if i.state == "open"
                    else f"resolved at {ended.isoformat()} by {i.resolved_by}"),
        "diagnosis": i.diagnosis,
        "first_seen_at": i.first_seen_at.isoformat() if i.first_seen_at else None,
        "opened_at": i.opened_at.isoformat(),
        "resolved_at": i.resolved_at.isoformat() if i.resolved_at else None,
        "resolved_by": i.resolved_by,
        "detection_seconds": (max(0.0, (i.opened_at - i.first_seen_at).total_seconds())
                              if i.first_seen_at else None),
        "duration_seconds": (ended - i.opened_at).total_seconds(),
        "figures_at_open": i.figures_at_open, "figures_now": i.figures_now,
        "corrections": corrections,
        "validation": {
            "affected": len(found.affected), "affected_final": len(found.affected) - len(not_final),
            "not_final": not_final[:50], "ledger_invariants_ok": invariants.ok,
            "ledger_violations": invariants.violations[:10],
            "passed": not not_final and invariants.ok and i.state == "resolved",
        },
        "timeline": [{"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "details": e.details}
                     for e in found.timeline],
    }


def report_markdown(doc: dict[str, Any]) -> str:
    v = doc["validation"]
    lines = [
        f"# Incident {doc['incident_id']}: {doc['incident_class']} ({doc['scope']})", "",
        f"**State:** {doc['state']} — {doc['summary']}", "",
        "## Diagnosis", "", doc["diagnosis"], "",
        "## Timing", "",
        f"- first sign of the cause: {doc['first_seen_at'] or 'unknown'}",
        f"- opened: {doc['opened_at']}",
        f"- detection time: {_seconds(doc['detection_seconds'])}",
        f"- resolved: {doc['resolved_at'] or 'not yet (open)'}" + (f" by {doc['resolved_by']}"
                                                                   if doc["resolved_by"] else ""),
        f"- duration: {_seconds(doc['duration_seconds'])}" + (" so far" if doc["state"] == "open" else ""), "",
        "## Corrections taken", "",
    ]
    lines += [f"- {c['at']} {c['actor']}: {c['action']} on {c['subject']}" for c in doc["corrections"]] or ["- none"]
    lines += ["", "## Validation", "",
              f"- affected payments and payouts final: {v['affected_final']} of {v['affected']}"
              + (f" (not yet: {', '.join(v['not_final'])})" if v["not_final"] else ""),
              f"- ledger invariants: {'green' if v['ledger_invariants_ok'] else 'RED: ' + '; '.join(v['ledger_violations'])}",
              f"- passed: {'yes' if v['passed'] else 'no'}", "",
              "## Timeline", ""]
    lines += [f"- {e['at']} {e['kind']} by {e['actor']}" for e in doc["timeline"]]
    return "\n".join(lines) + "\n"


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f} s"
