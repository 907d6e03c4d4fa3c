"""The API's Prometheus metrics (prometheus-client), one registry per app: what this process counted (webhook
deliveries, alerts, init latency, KYC verification time, the rate limiter's refusals …), and a few gauges read from
the database at scrape time with indexed look-ups only — the circuits, the review queues, the open incidents — never
a count over a growing table. Each API process reports its own counters; Prometheus sums them.

The worker's metrics (payments by final status, PSP calls, the Temporal SDK's own) are the worker's:
workers/metrics.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from incidents.models import INCIDENT_CLASSES
from incidents.store import open_counts
from ledger.models import payments, payouts
from payloop.db import utcnow
from psp.routing.health import psp_circuits
from risk.models import risk_cases

# Seconds: an init answer is tens to hundreds of milliseconds (a 3DS redirect included); KYC takes minutes to days.
INIT_BUCKETS_SECONDS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
KYC_BUCKETS_SECONDS = (60, 300, 900, 3600, 4 * 3600, 86_400, 3 * 86_400, 7 * 86_400, 30 * 86_400)
CIRCUIT_STATES = ("closed", "half_open", "open")
# The review queues a person works through: (queue, table, state column, state values, since column).
REVIEW_QUEUES = (
    ("deposits", payments, payments.c.status, ("in_review",), payments.c.created_at),
    ("payouts", payouts, payouts.c.status, ("in_review",), payouts.c.updated_at),
    ("risk_cases", risk_cases, risk_cases.c.state, ("open", "escalated"), risk_cases.c.created_at),
)


class ApiMetrics:
    def __init__(self, process_counters: Collector) -> None:
        registry = self.registry = CollectorRegistry()
        self.webhook_deliveries = Counter(
            "payloop_webhook_deliveries", "Webhook deliveries received, by PSP and outcome (verified, duplicate, "
            "processed, dead_letter, rejected …).", ["psp", "outcome"], registry=registry)
        self.alerts = Counter("payloop_alerts", "Alerts raised by this process for people, by kind.", ["kind"],
                              registry=registry)
        self.deposit_init_seconds = Histogram(
            "payloop_deposit_init_seconds", "POST /v1/payments/init from request to answer, by method and the "
            "answer's status.", ["method", "status"], buckets=INIT_BUCKETS_SECONDS, registry=registry)
        self.kyc_verify_seconds = Histogram(
            "payloop_kyc_time_to_verify_seconds", "From a player's first sight to their KYC set verified.",
            buckets=KYC_BUCKETS_SECONDS, registry=registry)
        self.circuit_state = Gauge("payloop_psp_circuit_state", "1 for the state each PSP's circuit is in.",
                                   ["psp", "state"], registry=registry)
        self.reviews_open = Gauge("payloop_reviews_open", "Items waiting for a person, by queue.", ["queue"],
                                  registry=registry)
        self.review_oldest_age_seconds = Gauge(
            "payloop_review_oldest_age_seconds", "Age of the oldest item waiting for a person, by queue (0: none).",
            ["queue"], registry=registry)
        self.incidents_open = Gauge("payloop_incidents_open", "Open incidents, by class.", ["incident_class"],
                                    registry=registry)
        registry.register(process_counters)

    async def refresh_from_database(self, engine: AsyncEngine, configured_psps: Iterable[str]) -> None:
        """The gauges that describe the database's state, read now."""
        async with engine.connect() as conn:
            circuits = {row.psp: row.state for row in await conn.execute(
                sa.select(psp_circuits.c.psp, psp_circuits.c.state))}
            queues = await _review_queues(conn, utcnow())
            incidents_open = await open_counts(conn)  # through ix_incidents_state_opened_at
        for psp in sorted(set(configured_psps) | set(circuits)):
            current = circuits.get(psp, "closed")  # never called yet: closed
            for state in CIRCUIT_STATES:
                self.circuit_state.labels(psp, state).set(1 if state == current else 0)
        for queue in queues:
            self.reviews_open.labels(queue.name).set(queue.count)
            self.review_oldest_age_seconds.labels(queue.name).set(queue.oldest_age_seconds)
        for incident_class in INCIDENT_CLASSES:
            self.incidents_open.labels(incident_class).set(incidents_open.get(incident_class, 0))


@dataclass(frozen=True)
class ReviewQueue:
    name: str  # deposits | payouts | risk_cases
    count: int
    oldest_age_seconds: float  # 0 when empty


async def review_queues(engine: AsyncEngine) -> list[ReviewQueue]:
    """Each review queue's size and its oldest item's age, through indexes (the gauges and the ops console)."""
    async with engine.connect() as conn:
        return await _review_queues(conn, utcnow())


async def _review_queues(conn: AsyncConnection, now: datetime) -> list[ReviewQueue]:
    queues = []
    for queue, table, column, states, since in REVIEW_QUEUES:
        count, oldest = (await conn.execute(sa.select(sa.func.count(), sa.func.min(since))
                                            .select_from(table).where(column.in_(states)))).one()
        queues.append(ReviewQueue(queue, int(count), _age_seconds(oldest, now)))
    return queues


def _age_seconds(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


class CountersOf(Collector):
    """Counters kept as plain numbers by the objects that count them (the rate limiter, the delivery-log pruner),
    exposed as Prometheus counters when scraped."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterable[CounterMetricFamily]:
        limits = self.state.rate_limits
        refused = CounterMetricFamily("payloop_rate_limited", "Requests refused with 429 by this process, by limit.",
                                      labels=["limit"])
        for kind in ("payments", "webhooks", "console_login", "checkout"):
            refused.add_metric([kind], limits.refused[kind])
        yield refused
        sign_ins = CounterMetricFamily("payloop_console_sign_ins_refused", "Ops console sign-ins this process "
                                       "refused: a key that cannot sign in, or over the per-address limit.",
                                       labels=["reason"])
        for reason in ("key", "rate_limited"):
            sign_ins.add_metric([reason], limits.console_sign_ins_refused[reason])
        yield sign_ins
        yield CounterMetricFamily("payloop_rate_limit_storage_errors", "Redis errors of the rate limiter (it then "
                                  "counts in memory).", value=limits.storage_errors)
        not_logged = CounterMetricFamily(
            "payloop_webhook_rejections_not_logged", "Rejected webhooks counted but not logged (over the "
            "rejection-log limit), by PSP and reason.", labels=["psp", "reason"])
        for (psp, reason), count in sorted(limits.rejections_not_logged.items()):
            not_logged.add_metric([psp, reason], count)
        yield not_logged
        rechecks = CounterMetricFamily("payloop_status_rechecks", "Re-checks unverified webhooks asked for: allowed "
                                       "(signal sent) or suppressed (one per payment per interval).",
                                       labels=["outcome"])
        for outcome in ("allowed", "suppressed"):
            rechecks.add_metric([outcome], limits.rechecks[outcome])
        yield rechecks
        pruner = getattr(self.state, "delivery_log_pruner", None)
        yield CounterMetricFamily("payloop_webhook_deliveries_pruned", "Delivery-log rows this process deleted as "
                                  "too old.", value=pruner.pruned_total if pruner else 0)
