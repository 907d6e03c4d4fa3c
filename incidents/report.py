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
from incidents.models import incident_payments
from ledger.models import payments, payouts

# workflows.types' final statuses (incidents may not import workflows; tests/incidents/test_status_words.py ties
# them). A deposit `in_review` has ended its workflow's own part but waits for a person's decision: its money is not
# settled, so it is not final here — an incident about it has not passed while it waits.
DEPOSIT_FINAL = frozenset({"credited", "failed", "rejected", "expired", "refunded"})
PAYOUT_FINAL = frozenset({"paid", "failed", "rejected", "cancelled"})
# A payment or payout not in its table yet (a payout is written at its end, a deposit at its end or review): the
# API asks its workflow for its status.
RUNNING = "running"


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
    ip = incident_payments.c
    # A join, not an IN list of the ids: one bind parameter per id would fail past the drivers' limits.
    query = (sa.select(ip.kind, ip.object_id, sa.func.coalesce(payments.c.status, payouts.c.status).label("status"))
             .select_from(incident_payments
                          .outerjoin(payments, sa.and_(ip.kind == "payment", payments.c.payment_id == ip.object_id))
                          .outerjoin(payouts, sa.and_(ip.kind == "payout", payouts.c.payout_id == ip.object_id)))
             .where(ip.incident_id == incident_id).order_by(ip.kind, ip.object_id))
    async with engine.connect() as conn:
        now = [_now(row.kind, row.object_id, row.status) for row in await conn.execute(query)]
    return IncidentDetail(incident, await store.timeline(engine, incident_id), now)


def _now(kind: str, object_id: str, status: str | None) -> AffectedNow:
    status = status or RUNNING
    return AffectedNow(kind, object_id, status, status in (DEPOSIT_FINAL if kind == "payment" else PAYOUT_FINAL))


async def report(engine: AsyncEngine, incident_id: str, corrections: list[dict[str, Any]],
                 now: datetime, *, ledger_check: bool = True) -> dict[str, Any] | None:
    """The report as a JSON-able dict (None: no such incident). `corrections`: the audit entries naming it.
    `ledger_check`: run the ledger's invariants (they scan every account and transfer: the report itself runs them,
    a console page view shows the report without them); without it `ledger_invariants_ok` and `passed` are None."""
    found = await detail(engine, incident_id)
    if found is None:
        return None
    i = found.incident
    invariants = await check_invariants(engine) if ledger_check else None
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
            "not_final": not_final[:50], "ledger_invariants_ok": invariants.ok if invariants else None,
            "ledger_violations": invariants.violations[:10] if invariants else [],
            "passed": not not_final and invariants.ok and i.state == "resolved" if invariants else None,
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
              f"- ledger invariants: {_ledger_line(v)}",
              f"- passed: {_passed_line(v['passed'])}", "",
              "## Timeline", ""]
    lines += [f"- {e['at']} {e['kind']} by {e['actor']}" for e in doc["timeline"]]
    return "\n".join(lines) + "\n"


def _ledger_line(validation: dict[str, Any]) -> str:
    if validation["ledger_invariants_ok"] is None:
        return "not checked here (the downloaded report checks them)"
    return "green" if validation["ledger_invariants_ok"] else "RED: " + "; ".join(validation["ledger_violations"])


def _passed_line(passed: bool | None) -> str:
    return "not judged here (the downloaded report does)" if passed is None else "yes" if passed else "no"


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f} s"
