"""Rate limits with the `limits` library: per API client, per PSP endpoint and source address, the rejected-webhook
log per PSP, and the status re-checks unverified webhooks may cause per payment.

Counts live in memory (each API process its own) or, with `PAYLOOP_REDIS_URL`, in Redis, shared by every API
process. When Redis cannot be reached, each process falls back to its own in-memory counts for
`REDIS_RETRY_SECONDS` and then tries Redis again, with a warning in the log and
`payloop_rate_limit_storage_errors_total` on /metrics. Why neither of the two obvious choices:
- 503 for every request would turn a blip of a cache into an outage of deposits and payouts, and a limiter's
  counts are not state anyone needs to be exact;
- plain fail open would lift every limit exactly while the limiter is blind, including the ones that keep forged
  webhooks from writing rows and flooding a workflow's history with re-checks;
so the limits keep holding, per process instead of across processes (N processes allow at most N times a limit).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis import asyncio as redis_asyncio
from redis.exceptions import RedisError

from api.problems import Problem
from payloop.settings import Settings

log = logging.getLogger("payloop.api.rate_limits")

REDIS_RETRY_SECONDS = 5.0  # after a Redis error, in-memory counts for this long before Redis is tried again
REDIS_TIMEOUT_SECONDS = 0.25  # per Redis command: a limiter check must never be what makes a request slow
_WARN_EVERY_SECONDS = 60.0  # at most one "Redis unreachable" warning per process per minute


@dataclass(frozen=True)
class Refusal:
    """A limit was reached: which one, and how many seconds until the window lets a request through again."""

    limit: str  # the limit's own notation, e.g. "300 per 1 second"
    retry_after_seconds: int


class SweptMemoryStorage(MemoryStorage):
    """The limits' MemoryStorage, whose sweep for expired keys runs at most once per `SWEEP_EVERY_SECONDS`.

    MemoryStorage starts a sweep over all its keys whenever a hit finds the previous sweep finished, which on a
    server (the event loop runs between requests) is on every hit: measured, ~9 µs a hit with a handful of keys,
    300 µs with 10,000 and 5 ms with 50,000 — keys anyone can create (a payment id per forged webhook, a source
    address per request), so every request would pay for an attacker's keys. Expired keys are already ignored on
    read (`get` checks the expiry), so sweeping less often changes no count; it only frees memory up to a second
    later. Its scheduling method is private: `_check_memory_storage_internals` fails start-up if it is renamed."""

    SWEEP_EVERY_SECONDS = 1.0
    _last_sweep = -math.inf

    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.SWEEP_EVERY_SECONDS:
            self._last_sweep = now
            await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


def _check_memory_storage_internals() -> None:
    if not callable(getattr(MemoryStorage, "_MemoryStorage__schedule_expiry", None)):
        raise RuntimeError("limits.aio.storage.MemoryStorage changed: SweptMemoryStorage no longer applies")


_check_memory_storage_internals()


class _Limiters:
    """One storage and the two strategies this module uses on it."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # Sliding window counter: no burst of twice the limit across a window's edge, for little more than a
        # fixed window costs (two counters; one Lua round trip on Redis). For request limits.
        self.sliding = SlidingWindowCounterRateLimiter(storage)
        # Fixed window, started by the first hit: "at most one per interval", exactly. For re-checks.
        self.fixed = FixedWindowRateLimiter(storage)


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.payments = _parse(settings.rate_limit_payments)
        self.webhooks = _parse(settings.rate_limit_webhooks)
        self.rejection_log = _parse(settings.rate_limit_webhook_rejection_log)
        self.console_login = _parse(settings.rate_limit_console_login)
        self.checkout = _parse(settings.rate_limit_checkout)
        self.recheck = RateLimitItemPerSecond(1, settings.status_recheck_interval_seconds)
        # In memory, one storage per kind of key, so the many keys an attacker can make (a re-check key per
        # payment id it invents, a webhook key per source) never weigh on the per-client check of every request.
        self._local = {kind: _Limiters(SweptMemoryStorage())
                       for kind in ("clients", "webhooks", "rechecks", "console_logins", "checkouts")}
        self._pool: redis_asyncio.ConnectionPool | None = None
        self._shared: _Limiters | None = None
        if settings.redis_url:
            # Our own pool, so shutdown can close it, and with timeouts: an unreachable Redis costs a request at
            # most REDIS_TIMEOUT_SECONDS once, then REDIS_RETRY_SECONDS of in-memory counts.
            self._pool = redis_asyncio.ConnectionPool.from_url(
                settings.redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
            self._shared = _Limiters(RedisStorage(
                f"async+{settings.redis_url}", implementation="redispy", connection_pool=self._pool,
                key_prefix=f"{settings.redis_key_prefix}:limits", wrap_exceptions=True))
        self._redis_down_until = 0.0
        self._warned_at = -math.inf
        # This process's counters, for /metrics.
        self.refused: Counter[str] = Counter()  # 429s by kind
        self.storage_errors = 0
        self.rechecks: Counter[str] = Counter()  # "allowed" (a signal is sent) | "suppressed"
        self.rejections_not_logged: Counter[tuple[str, str]] = Counter()  # (psp, reason)
        self.console_sign_ins_refused: Counter[str] = Counter()  # "key" (cannot sign in) | "rate_limited"

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def check_client(self, client_id: str) -> Refusal | None:
        refusal = await self._check("clients", self.payments, "client", client_id)
        if refusal is not None:
            self.refused["payments"] += 1
        return refusal

    async def check_webhook(self, psp: str, source: str) -> Refusal | None:
        refusal = await self._check("webhooks", self.webhooks, "webhook", psp, source_key(source))
        if refusal is not None:
            self.refused["webhooks"] += 1
        return refusal

    async def check_console_login(self, source: str) -> Refusal | None:
        """A sign-in attempt at the ops console from `source` (an IPv6 source by its /64): every attempt counts,
        so key guessing is bounded whether the keys are right or not."""
        refusal = await self._check("console_logins", self.console_login, "console-login", source_key(source))
        if refusal is not None:
            self.refused["console_login"] += 1
            self.console_sign_ins_refused["rate_limited"] += 1
        return refusal

    async def check_checkout(self, session_id: str) -> Refusal | None:
        """A request of one checkout session (a page, a form, a status poll): a leaked checkout URL cannot start
        payments or poll without bound, and one session cannot use up its platform's client limit."""
        refusal = await self._check("checkouts", self.checkout, "checkout", session_id)
        if refusal is not None:
            self.refused["checkout"] += 1
        return refusal

    async def may_log_rejection(self, psp: str, reason: str) -> bool:
        """Whether this rejected delivery may have its log line and delivery row; when not, it is counted."""
        if await self._check("webhooks", self.rejection_log, "rejection-log", psp) is None:
            return True
        self.rejections_not_logged[(psp, reason)] += 1
        return False

    async def may_recheck(self, workflow_id: str) -> bool:
        """True at most once per `status_recheck_interval_seconds` per workflow, across processes."""
        limiters = self._limiters("rechecks")
        try:
            allowed = await limiters.fixed.hit(self.recheck, "recheck", workflow_id)
        except (StorageError, RedisError, OSError) as err:
            self._redis_failed(err)
            allowed = await self._local["rechecks"].fixed.hit(self.recheck, "recheck", workflow_id)
        self.rechecks["allowed" if allowed else "suppressed"] += 1
        return allowed

    async def _check(self, kind: str, items: list[RateLimitItem], *identifiers: str) -> Refusal | None:
        if not items:
            return None
        try:
            return await _hit_all(self._limiters(kind).sliding, items, identifiers)
        except (StorageError, RedisError, OSError) as err:
            self._redis_failed(err)
            return await _hit_all(self._local[kind].sliding, items, identifiers)

    def _limiters(self, kind: str) -> _Limiters:
        if self._shared is not None and time.monotonic() >= self._redis_down_until:
            return self._shared
        return self._local[kind]

    def _redis_failed(self, err: BaseException) -> None:
        self.storage_errors += 1
        now = time.monotonic()
        self._redis_down_until = now + REDIS_RETRY_SECONDS
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("rate-limit storage (Redis) unreachable: %s: %s; this process counts on its own for %.0f s "
                        "at a time until it is back", type(err).__name__, err, REDIS_RETRY_SECONDS)


async def _hit_all(limiter: RateLimiter, items: list[RateLimitItem], identifiers: tuple[str, ...]) -> Refusal | None:
    # Each limit is hit in turn and the first one reached refuses; the hits already taken stay taken (a refused
    # request still used up a little of the longer windows), as in every `limits`-based limiter.
    for item in items:
        if not await limiter.hit(item, *identifiers):
            stats = await limiter.get_window_stats(item, *identifiers)
            return Refusal(str(item), max(1, math.ceil(stats.reset_time - time.time())))
    return None


def rate_limited_problem(refusal: Refusal, what: str) -> Problem:
    return Problem(429, "rate_limited", "Too many requests",
                   f"{what} is limited to {refusal.limit}; retry after {refusal.retry_after_seconds} s",
                   retryable=True, headers={"Retry-After": str(refusal.retry_after_seconds)})


def _parse(notation: str) -> list[RateLimitItem]:
    return parse_many(notation) if notation else []


def source_key(address: str) -> str:
    """The source a webhook limit counts by: the address itself, or for IPv6 its /64, since one host commonly holds
    a whole /64 and could otherwise start a fresh count with every request."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a unix socket, a test client): as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
