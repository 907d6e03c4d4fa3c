"""Detection: one query per incident class, through indexes, judged against the thresholds file. Each condition
found carries its scope, figures, a one-line diagnosis and the payments / payouts it is about (bounded).

Detection reads; it changes nothing (incidents/store.py applies a pass). What the database cannot say is given:
the running deposits and payouts (Temporal visibility: the payments table is written only at a deposit's end or
review, the payouts table only at a payout's end) and the PSPs' health (psp/routing/health.py HealthStore.snapshot,
the breaker's own window).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from incidents.config import Thresholds, rate
from ledger.models import payments, payouts, refunds
from payloop.alerts import alerts
from payloop.db import UtcDateTime
from psp.inbox import webhook_events
from psp.routing import CircuitState
from psp.routing.health import PspHealth

# workflows.types.DepositStatus's words (incidents may not import workflows).
DEPOSIT_FAILED = ("failed", "expired")  # the deposit's own final failures; `rejected` is a risk or ops decision
DEPOSIT_ENDED = ("credited", *DEPOSIT_FAILED)
# Not final and waiting on a PSP or the player's 3DS; `kyc_required` waits for the player's KYC by design.
DEPOSIT_UNDER_WAY = ("pending", "requires_action", "authorized", "captured")
# workflows.types.PayoutStatus's words: a payout waiting for KYC or a review is in a person's queue, not delayed.
PAYOUT_UNDER_WAY = ("pending", "processing")
CURRENCY_MISMATCH_KINDS = ("deposit.currency_mismatch", "payout.currency_mismatch", "refund.currency_mismatch")
CALLBACK_ERROR_OUTCOMES = ("rejected", "dead_letter")
NO_PSP = "none"

# api/models.py owns the webhook delivery log; incidents may not import api, so the columns it reads are named here.
webhook_deliveries = sa.table("webhook_deliveries", sa.column("psp", sa.String), sa.column("outcome", sa.String),
                              sa.column("at", UtcDateTime()))


@dataclass(frozen=True)
class Condition:
    incident_class: str
    scope: str
    diagnosis: str
    figures: dict[str, Any]  # JSON-able: counts, rates as decimal strings; no clock readings (they change per pass)
    payment_ids: list[str] = field(default_factory=list)
    payout_ids: list[str] = field(default_factory=list)
    first_seen_at: datetime | None = None  # the oldest sign of the cause (a failure's or a start's time)


@dataclass(frozen=True)
class RunningWorkflow:
    """A deposit or withdrawal workflow still running, as Temporal's visibility shows it."""

    object_id: str  # its payment or payout id
    started_at: datetime
    status: str | None  # its PaymentStatus search attribute
    psp: str | None  # its PaymentPsp search attribute


def _share(part: int, whole: int) -> str:
    return str((Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001")))


def _reached(part: int, whole: int, threshold: str) -> bool:
    return whole > 0 and Decimal(part) >= rate(threshold) * whole


async def detect(engine: AsyncEngine, thresholds: Thresholds, now: datetime, *,
                 health: Mapping[str, PspHealth], running_deposits: Iterable[RunningWorkflow],
                 running_payouts: Iterable[RunningWorkflow]) -> list[Condition]:
    """Every condition that holds now, all six classes, in one read transaction."""
    running_deposits, running_payouts = list(running_deposits), list(running_payouts)
    async with engine.connect() as conn:
        found = await failed_deposits(conn, thresholds, now)
        found += delayed_withdrawals(thresholds, now, running_payouts)
        found += await callback_errors(conn, thresholds, now)
        found += await currency_mismatch(conn, thresholds, now)
        found += transaction_timeout(thresholds, now, running_deposits)
        found += await gateway_downtime(conn, thresholds, now, health, running_deposits, running_payouts)
    return found


async def failed_deposits(conn: AsyncConnection, th: Thresholds, now: datetime) -> list[Condition]:
    """Per (method, PSP): of the deposits that ended in the window, the share failed or expired."""
    since = now - timedelta(seconds=th.window_seconds)
    p = payments.c
    rows = (await conn.execute(
        sa.select(p.method, p.psp, p.status, p.failure_code, sa.func.count(), sa.func.min(p.updated_at))
        .where(p.updated_at >= since, p.status.in_(DEPOSIT_ENDED))
        .group_by(p.method, p.psp, p.status, p.failure_code))).all()
    ended: Counter[tuple[str, str]] = Counter()
    failed: Counter[tuple[str, str]] = Counter()
    codes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    first_failed: dict[tuple[str, str], datetime] = {}
    for method, psp, status, code, count, oldest in rows:
        key = (method, psp or NO_PSP)
        ended[key] += count
        if status in DEPOSIT_FAILED:
            failed[key] += count
            codes[key][code or status] += count
            first_failed[key] = min(first_failed.get(key, oldest), oldest)
    rules = th.failed_deposits
    found = []
    for (method, psp), samples in sorted(ended.items()):
        failures = failed[(method, psp)]
        if samples < rules.min_samples or not _reached(failures, samples, rules.failure_rate):
            continue
        top_code = codes[(method, psp)].most_common(1)[0][0]
        psp_filter = p.psp.is_(None) if psp == NO_PSP else p.psp == psp
        ids = (await conn.execute(
            sa.select(p.payment_id).where(p.updated_at >= since, p.status.in_(DEPOSIT_FAILED), p.method == method,
                                          psp_filter)
            .order_by(p.updated_at, p.payment_id).limit(th.affected_ids_max))).scalars().all()
        found.append(Condition(
            "failed_deposits", f"psp={psp},method={method}",
            f"{failures} of {samples} {method} deposits via {psp} failed in the last {th.window_seconds} s, "
            f"mostly {top_code}",
            {"ended": samples, "failed": failures, "failure_rate": _share(failures, samples),
             "failure_codes": dict(sorted(codes[(method, psp)].items())), "window_seconds": th.window_seconds},
            payment_ids=list(ids), first_seen_at=first_failed[(method, psp)]))
    return found


def delayed_withdrawals(th: Thresholds, now: datetime, running: Iterable[RunningWorkflow]) -> list[Condition]:
    """Per PSP: payouts pending or processing longer than their SLA (the running ones are given)."""
    sla = th.delayed_withdrawals.sla_seconds
    found = []
    for psp, delayed in _past_sla(running, PAYOUT_UNDER_WAY, sla, now).items():
        statuses = _by_status(delayed)
        found.append(Condition(
            "delayed_withdrawals", f"psp={psp}",
            f"{len(delayed)} payouts via {psp} not final after their {sla} s SLA, the oldest {delayed[0].object_id}",
            {"delayed": len(delayed), "by_status": statuses, "sla_seconds": sla},
            payout_ids=[payout.object_id for payout in delayed[:th.affected_ids_max]],
            first_seen_at=delayed[0].started_at + timedelta(seconds=sla)))
    return found


async def callback_errors(conn: AsyncConnection, th: Thresholds, now: datetime) -> list[Condition]:
    """Per PSP: rejected and dead-lettered webhook deliveries in the window, by count and share."""
    since = now - timedelta(seconds=th.window_seconds)
    d = webhook_deliveries.c
    totals: Counter[str] = Counter()
    errors: dict[str, Counter[str]] = defaultdict(Counter)
    for psp, outcome, count in await conn.execute(
            sa.select(d.psp, d.outcome, sa.func.count()).where(d.at >= since).group_by(d.psp, d.outcome)):
        totals[psp] += count
        if outcome in CALLBACK_ERROR_OUTCOMES:
            errors[psp][outcome] += count
    rules = th.callback_errors
    found = []
    for psp in sorted(errors):
        count = sum(errors[psp].values())
        if count < rules.min_count or not _reached(count, totals[psp], rules.min_rate):
            continue
        e = webhook_events.c
        dead = (await conn.execute(
            sa.select(e.kind, e.payment_id, e.updated_at).where(e.state == "dead_letter", e.updated_at >= since,
                                                                e.psp == psp)
            .order_by(e.updated_at, e.id).limit(th.affected_ids_max))).all()
        first_seen = (await conn.execute(sa.select(sa.func.min(d.at)).where(
            d.at >= since, d.psp == psp, d.outcome.in_(CALLBACK_ERROR_OUTCOMES)))).scalar_one()
        found.append(Condition(
            "callback_errors", f"psp={psp}",
            f"{count} of {totals[psp]} webhooks from {psp} rejected or dead-lettered in the last "
            f"{th.window_seconds} s ({', '.join(f'{n} {o}' for o, n in sorted(errors[psp].items()))})",
            {"deliveries": totals[psp], "errors": count, "error_rate": _share(count, totals[psp]),
             "by_outcome": dict(sorted(errors[psp].items())), "window_seconds": th.window_seconds},
            payment_ids=_unique(row.payment_id for row in dead if row.kind in ("payment", "dispute")),
            payout_ids=_unique(row.payment_id for row in dead if row.kind == "payout"),
            first_seen_at=first_seen))
    return found


async def currency_mismatch(conn: AsyncConnection, th: Thresholds, now: datetime) -> list[Condition]:
    """Per PSP: `*.currency_mismatch` alerts raised within `hold_seconds`, or whose deposit still waits in review."""
    since = now - timedelta(seconds=th.currency_mismatch.hold_seconds)
    a, p, po, r = alerts.c, payments.c, payouts.c, refunds.c
    refund_payment = payments.alias("refund_payment")
    rows = (await conn.execute(
        sa.select(a.kind, a.reference, a.at, p.status, sa.func.coalesce(p.psp, po.psp, r.psp).label("psp"),
                  r.payment_id.label("refund_payment_id"), refund_payment.c.status.label("refund_payment_status"))
        .select_from(alerts.outerjoin(payments, sa.and_(a.kind == "deposit.currency_mismatch",
                                                        p.payment_id == a.reference))
                     .outerjoin(payouts, sa.and_(a.kind == "payout.currency_mismatch", po.payout_id == a.reference))
                     .outerjoin(refunds, sa.and_(a.kind == "refund.currency_mismatch", r.refund_id == a.reference))
                     .outerjoin(refund_payment, refund_payment.c.payment_id == r.payment_id))
        .where(a.kind.in_(CURRENCY_MISMATCH_KINDS),
               sa.or_(a.at >= since, p.status == "in_review", refund_payment.c.status == "in_review"))
        .order_by(a.at, a.id))).all()
    by_psp: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_psp[row.psp or NO_PSP].append(row)
    found = []
    for psp, seen in sorted(by_psp.items()):
        kinds = Counter(row.kind.split(".")[0] for row in seen)
        payment_ids = [row.reference if row.kind == "deposit.currency_mismatch" else row.refund_payment_id
                       for row in seen if row.kind != "payout.currency_mismatch"]
        found.append(Condition(
            "currency_mismatch", f"psp={psp}",
            f"{len(seen)} currency mismatches reported by {psp} ("
            + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) + ")",
            {"alerts": len(seen), "by_kind": dict(sorted(kinds.items())), "hold_seconds": th.currency_mismatch.hold_seconds},
            payment_ids=_unique(i for i in payment_ids if i)[:th.affected_ids_max],
            payout_ids=_unique(row.reference for row in seen if row.kind == "payout.currency_mismatch")
            [:th.affected_ids_max],
            first_seen_at=seen[0].at))
    return found


def transaction_timeout(th: Thresholds, now: datetime, running: Iterable[RunningWorkflow]) -> list[Condition]:
    """Per PSP: deposits under way (not waiting for KYC, not in review) longer than their SLA after their start. The
    running deposit workflows are given: a deposit's payments row is written only at its end or review."""
    sla = th.transaction_timeout.sla_seconds
    found = []
    for psp, late in _past_sla(running, DEPOSIT_UNDER_WAY, sla, now).items():
        statuses = _by_status(late)
        found.append(Condition(
            "transaction_timeout", f"psp={psp}",
            f"{len(late)} deposits via {psp} not final {sla} s after their start ("
            + ", ".join(f"{n} {status}" for status, n in statuses.items()) + ")",
            {"stuck": len(late), "by_status": statuses, "sla_seconds": sla},
            payment_ids=[deposit.object_id for deposit in late[:th.affected_ids_max]],
            first_seen_at=late[0].started_at + timedelta(seconds=sla)))
    return found


def _past_sla(running: Iterable[RunningWorkflow], under_way: Collection[str], sla_seconds: int,
              now: datetime) -> dict[str, list[RunningWorkflow]]:
    """The running workflows in an under-way status longer than the SLA, per PSP (sorted), oldest first."""
    late: dict[str, list[RunningWorkflow]] = defaultdict(list)
    for workflow in running:
        if workflow.status in under_way and now - workflow.started_at > timedelta(seconds=sla_seconds):
            late[workflow.psp or NO_PSP].append(workflow)
    return {psp: sorted(found, key=lambda w: (w.started_at, w.object_id)) for psp, found in sorted(late.items())}


def _by_status(workflows: Iterable[RunningWorkflow]) -> dict[str, int]:
    return dict(sorted(Counter(w.status or "unknown" for w in workflows).items()))


async def gateway_downtime(conn: AsyncConnection, th: Thresholds, now: datetime, health: Mapping[str, PspHealth],
                           running_deposits: Iterable[RunningWorkflow],
                           running_payouts: Iterable[RunningWorkflow]) -> list[Condition]:
    """A PSP whose circuit is not closed (open, or half-open: waiting for a probe to prove it back), or whose error
    rate over the breaker's window reaches the threshold. A circuit ops hold open is not downtime: the PSP is out of
    service on purpose, its traffic routed elsewhere (the correction of failed_deposits, say)."""
    rules = th.gateway_downtime
    found = []
    for psp, h in sorted(health.items()):
        if h.forced is CircuitState.OPEN:
            continue
        erroring = h.samples >= rules.min_samples and _reached(h.failures, h.samples, rules.error_rate)
        # Half-open is still down: an open circuit turns half-open after its open_seconds whether or not the PSP
        # is back (its window then starts empty), so counting only `open` resolved the incident between probes.
        if h.circuit is CircuitState.CLOSED and not erroring:
            continue
        # What the outage touches: the deposits that ended failed there in the window, and those still waiting on
        # it past their SLA (visibility: a running deposit or payout has no row yet).
        since = now - timedelta(seconds=th.window_seconds)
        p = payments.c
        failed_ids = (await conn.execute(
            sa.select(p.payment_id).where(p.updated_at >= since, p.psp == psp, p.status.in_(DEPOSIT_FAILED))
            .order_by(p.updated_at, p.payment_id).limit(th.affected_ids_max))).scalars().all()
        waiting_ids = [deposit.object_id for deposit in running_deposits if deposit.psp == psp]
        seen = f"circuit {h.circuit.value}" + (f", {h.failures} of {h.samples} calls failed" if h.samples else "")
        found.append(Condition(
            "gateway_downtime", f"psp={psp}",
            f"{psp} down: {seen} in the breaker's last {h.window_seconds} s",
            {"circuit": h.circuit.value, "samples": h.samples, "failures": h.failures,
             "error_rate": None if h.error_rate is None else str(h.error_rate), "window_seconds": h.window_seconds},
            payment_ids=_unique([*failed_ids, *waiting_ids])[:th.affected_ids_max],
            payout_ids=[payout.object_id for payout in running_payouts if payout.psp == psp][:th.affected_ids_max],
            first_seen_at=h.opened_at or h.window_start))
    return found


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))
