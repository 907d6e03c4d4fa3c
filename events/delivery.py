"""Delivery: the worker's dispatcher sends each due delivery as a signed Standard Webhooks POST, and records 2xx as
delivered, anything else as an attempt to retry after the next wait of the schedule (then `failed`).

Claims: a delivery is due when pending and its time has come, or when a claim on it lapsed (the worker that took it
died mid-send). On PostgreSQL the claim is `FOR UPDATE SKIP LOCKED`, so several workers never take the same
delivery; SQLite has one writer. Order: a delivery is not due while an earlier event with the same ordering key
(the payment, payout or player it is about) still waits to reach the same endpoint — head-of-line per key, so one
payment's retries never hold up another's. At least once: a send whose outcome was not recorded is sent again,
with the same `webhook-id` (the event id), by which the receiver dedupes."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased
from standardwebhooks import Webhook
from temporalio.common import MetricMeter

from events.endpoints import UrlRefused, check_url, endpoint_urls
from events.models import event_deliveries
from events.outbox import DELIVERED, DELIVERING, FAILED, PENDING, Event, get_event
from payloop.db import utcnow
from payloop.settings import Settings, parse_retry_schedule

log = logging.getLogger(__name__)
JITTER = 0.25  # each wait is stretched by up to this share, so endpoints that failed together retry apart
CLAIM_MARGIN_SECONDS = 30.0  # a claim outlives the send's timeout by this before another worker may take it
CLAIM_LAPSED = "claim lapsed"  # the last attempt's outcome was never recorded


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    retry_schedule_seconds: tuple[float, ...]
    timeout_seconds: float
    batch_size: int
    interval_seconds: float
    allow_private_urls: bool  # dev mode: http and loopback endpoints (a demo receiver, the tests')

    @classmethod
    def of(cls, settings: Settings) -> DeliveryPolicy:
        return cls(parse_retry_schedule(settings.events_retry_schedule_seconds),
                   settings.events_delivery_timeout_seconds, settings.events_dispatch_batch_size,
                   settings.events_dispatch_interval_seconds, settings.dev_mode)


def retry_wait_seconds(schedule: tuple[float, ...], attempts: int, jitter: float) -> float | None:
    """The wait after the `attempts`-th failed attempt (jitter in [0, 1)); None when the schedule is spent."""
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * (1 + JITTER * jitter)


def signed_request(secret: str, event: Event, now: datetime) -> tuple[bytes, dict[str, str]]:
    """The body `{id, type, created_at, data}` and its Standard Webhooks headers (`webhook-id` is the event id, the
    same on every retry)."""
    body = json.dumps(event.body(), separators=(",", ":")).encode()
    return body, {
        "content-type": "application/json",
        "webhook-id": event.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event.id, now, body),
    }


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: int
    endpoint_id: str
    attempts: int  # including this one
    event: Event


DeliveredHook = Callable[[AsyncConnection, Event], Awaitable[None]]


class Dispatcher:
    def __init__(self, engine: AsyncEngine, http: httpx.AsyncClient, policy: DeliveryPolicy, *,
                 on_delivered: DeliveredHook | None = None, meter: MetricMeter | None = None,
                 clock: Callable[[], datetime] = utcnow, jitter: Callable[[], float] = random.random) -> None:
        self.engine, self.http, self.policy = engine, http, policy
        self.on_delivered = on_delivered
        self.clock, self.jitter = clock, jitter
        self._outcomes = meter.create_counter(
            "payloop_event_deliveries", "event delivery attempts by outcome") if meter else None
        self._oldest_age = meter.create_gauge_float(
            "payloop_event_oldest_pending_age_seconds", "age of the oldest delivery not made yet", "s"
        ) if meter else None

    async def run(self) -> None:
        """Until cancelled: dispatch, and wait an interval whenever there was less than a full batch."""
        while True:
            try:
                sent = await self.dispatch_once()
                await self._measure_backlog()
            except Exception:  # the database away, say: the next round tries again
                log.exception("event dispatch round failed")
                sent = 0
            if sent < self.policy.batch_size:
                await asyncio.sleep(self.policy.interval_seconds)

    async def dispatch_once(self) -> int:
        """Claim the due deliveries, send them concurrently, record each outcome; how many were claimed."""
        claims = await self._claim(self.clock())
        if claims:
            targets = await endpoint_urls(self.engine, {claim.endpoint_id for claim in claims})
            # One send's failure to record (the database away) must not cut the others short: its claim lapses
            # and is taken again.
            recorded = await asyncio.gather(*(self._send(claim, *targets[claim.endpoint_id]) for claim in claims),
                                            return_exceptions=True)
            for failure in (r for r in recorded if isinstance(r, BaseException)):
                log.error("event delivery outcome not recorded: %s", type(failure).__name__)
        return len(claims)

    async def _claim(self, now: datetime) -> list[_Claim]:
        d, earlier = event_deliveries, aliased(event_deliveries)
        blocked = sa.exists().where(earlier.c.endpoint_id == d.c.endpoint_id,
                                    earlier.c.ordering_key == d.c.ordering_key,
                                    earlier.c.event_seq < d.c.event_seq,
                                    earlier.c.state.in_((PENDING, DELIVERING)))
        query = (sa.select(d.c.id, d.c.endpoint_id, d.c.attempts, d.c.event_seq)
                 .where(d.c.state.in_((PENDING, DELIVERING)), d.c.next_attempt_at <= now, ~blocked)
                 .order_by(d.c.event_seq).limit(self.policy.batch_size))
        lapses_at = now + timedelta(seconds=self.policy.timeout_seconds + CLAIM_MARGIN_SECONDS)
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = (await conn.execute(query)).all()
            # A claim that lapsed on the last attempt of the schedule (its worker died mid-send, every time) ends.
            last_attempt = len(self.policy.retry_schedule_seconds) + 1
            spent = [row.id for row in rows if row.attempts >= last_attempt]
            if spent:
                await conn.execute(d.update().where(d.c.id.in_(spent))
                                   .values(state=FAILED, last_error=CLAIM_LAPSED))
            rows = [row for row in rows if row.attempts < last_attempt]
            if not rows:
                return []
            await conn.execute(d.update().where(d.c.id.in_([row.id for row in rows]))
                               .values(state=DELIVERING, attempts=d.c.attempts + 1, next_attempt_at=lapses_at))
            return [_Claim(row.id, row.endpoint_id, row.attempts + 1, await get_event(conn, row.event_seq))
                    for row in rows]

    async def _send(self, claim: _Claim, url: str, secret: str) -> None:
        status_code, error = None, None
        try:
            await check_url(url, allow_private=self.policy.allow_private_urls)
            body, headers = signed_request(secret, claim.event, self.clock())
            response = await self.http.post(url, content=body, headers=headers, timeout=self.policy.timeout_seconds,
                                            follow_redirects=False)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except UrlRefused as refused:
            error = refused.code
        except Exception as failed:  # noqa: BLE001 — every failure is an attempt on the schedule, never a stuck claim
            # httpx's ConnectError, ReadTimeout, InvalidURL …: the type only, never the body or the URL's secrets.
            error = type(failed).__name__
        await self._record(claim, status_code, error)

    async def _record(self, claim: _Claim, status_code: int | None, error: str | None) -> None:
        now = self.clock()
        d = event_deliveries
        # Only the claim this worker holds: a delete or a replay since then stands.
        mine = (d.c.id == claim.delivery_id, d.c.state == DELIVERING, d.c.attempts == claim.attempts)
        if error is None:
            values = {"state": DELIVERED, "delivered_at": now, "last_status_code": status_code, "last_error": None}
            outcome = "delivered"
        elif (wait := retry_wait_seconds(self.policy.retry_schedule_seconds, claim.attempts, self.jitter())) is None:
            values = {"state": FAILED, "last_status_code": status_code, "last_error": error}
            outcome = "failed"
        else:
            values = {"state": PENDING, "next_attempt_at": now + timedelta(seconds=wait),
                      "last_status_code": status_code, "last_error": error}
            outcome = "retrying"
        async with self.engine.begin() as conn:
            recorded = (await conn.execute(d.update().where(*mine).values(values))).rowcount == 1
            if recorded and outcome == "delivered" and self.on_delivered is not None:
                await self.on_delivered(conn, claim.event)
        if recorded and self._outcomes is not None:
            self._outcomes.add(1, {"outcome": outcome})

    async def _measure_backlog(self) -> None:
        if self._oldest_age is None:
            return
        d = event_deliveries
        async with self.engine.connect() as conn:
            oldest = [(await conn.execute(sa.select(d.c.created_at).where(d.c.state == state)
                                          .order_by(d.c.id).limit(1))).scalar_one_or_none()
                      for state in (PENDING, DELIVERING)]
        created = [at for at in oldest if at is not None]
        self._oldest_age.set((self.clock() - min(created)).total_seconds() if created else 0.0)
