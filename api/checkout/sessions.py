"""Checkout sessions: what a platform lets one of its players do at the checkout, and the URL that opens it.

The URL carries `<session id, expiry>` signed with HMAC-SHA256 (itsdangerous): a changed character fails the
signature (403) and an expired URL is known from its own signed expiry (410), both without a database read. The
session's terms — player, client, currency, amount, return URL — live only in the `checkout_sessions` row, so the
player's browser holds no API key and cannot change the player it pays for.

Each submitted form is an attempt (`checkout_attempts`): the form carries a random attempt id, the deposit or payout
it starts uses `checkout:<session>:<attempt>` as its Idempotency-Key, so a double click or a resubmitted form reaches
the same payment.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.ext.asyncio import AsyncEngine

from api.models import checkout_attempts, checkout_sessions
from payloop.db import insert_if_missing

# Rows are deleted this long after their status pages closed (a day of support questions can still find them).
KEEP_AFTER_CLOSE = timedelta(days=1)


class CheckoutRefused(Exception):
    """A checkout URL that opens nothing: `status` 403 (not ours: tampered, or signed with a retired key), 410
    (expired, or its session is gone) or 429 (the session's rate limit)."""

    def __init__(self, status: int, reason: str, retry_after_seconds: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds  # a 429's


@dataclass(frozen=True)
class CheckoutSession:
    session_id: str
    client_id: str
    player_id: str
    currency: str | None
    amount_minor: int | None
    country: str | None
    locale: str | None
    return_url: str
    expires_at: datetime

    def open_at(self, now: datetime) -> bool:
        """Whether its forms still start payments (status pages stay readable a grace period longer)."""
        return now < self.expires_at


@dataclass(frozen=True)
class Attempt:
    kind: str  # deposit | payout
    resource_id: str


class CheckoutSessions:
    def __init__(self, engine: AsyncEngine, signing_keys: str, *, lifetime: timedelta, status_grace: timedelta) -> None:
        keys = [key.strip() for key in signing_keys.split(",") if key.strip()]
        if not keys:
            raise ValueError("no checkout signing key")
        # itsdangerous signs with the last key of the list and verifies with any: the setting names the signing
        # key first.
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt="payloop-checkout")
        self.engine = engine
        self.lifetime = lifetime
        self.status_grace = status_grace

    async def create(
        self, *, client_id: str, player_id: str, currency: str | None, amount_minor: int | None,
        country: str | None, locale: str | None, return_url: str, now: datetime,
    ) -> tuple[str, CheckoutSession]:
        """A new session and the token its URL carries."""
        session = CheckoutSession(f"cs_{secrets.token_hex(12)}", client_id, player_id, currency, amount_minor,
                                  country, locale, return_url, now + self.lifetime)
        closed_long_ago = now - self.lifetime - self.status_grace - KEEP_AFTER_CLOSE
        async with self.engine.begin() as conn:
            old = sa.select(checkout_sessions.c.session_id).where(checkout_sessions.c.expires_at < closed_long_ago)
            await conn.execute(checkout_attempts.delete().where(checkout_attempts.c.session_id.in_(old)))
            await conn.execute(checkout_sessions.delete().where(checkout_sessions.c.expires_at < closed_long_ago))
            await conn.execute(checkout_sessions.insert().values(
                session_id=session.session_id, client_id=client_id, player_id=player_id, currency=currency,
                amount_minor=amount_minor, country=country, locale=locale, return_url=return_url, created_at=now,
                expires_at=session.expires_at))
        return self._serializer.dumps([session.session_id, int(session.expires_at.timestamp())]), session

    async def open(self, token: str, now: datetime, *, for_status: bool = False) -> CheckoutSession:
        """The session a URL's token names; CheckoutRefused when the token is not ours or has expired (a status
        page, `for_status`, stays readable `status_grace` longer)."""
        try:
            session_id, expires_epoch = self._serializer.loads(token)
            expires_at = datetime.fromtimestamp(int(expires_epoch), timezone.utc)
        except (BadSignature, ValueError, TypeError, OverflowError):
            raise CheckoutRefused(403, "tampered") from None
        closes_at = expires_at + (self.status_grace if for_status else timedelta(0))
        if now >= closes_at:
            raise CheckoutRefused(410, "expired")
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(checkout_sessions).where(
                checkout_sessions.c.session_id == str(session_id)))).first()
        if row is None:
            raise CheckoutRefused(410, "gone")
        return CheckoutSession(row.session_id, row.client_id, row.player_id, row.currency, row.amount_minor,
                               row.country, row.locale, row.return_url, row.expires_at)

    async def record_attempt(self, session: CheckoutSession, attempt_id: str, attempt: Attempt,
                             now: datetime) -> Attempt:
        """Remembers the payment or payout of a submitted form; the first record of an attempt id stands."""
        async with self.engine.begin() as conn:
            await insert_if_missing(conn, checkout_attempts, {
                "session_id": session.session_id, "attempt_id": attempt_id, "kind": attempt.kind,
                "resource_id": attempt.resource_id, "created_at": now})
        return await self.attempt(session, attempt_id) or attempt

    async def attempt(self, session: CheckoutSession, attempt_id: str) -> Attempt | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(checkout_attempts.c.kind, checkout_attempts.c.resource_id).where(
                checkout_attempts.c.session_id == session.session_id,
                checkout_attempts.c.attempt_id == attempt_id))).first()
        return None if row is None else Attempt(row.kind, row.resource_id)

    async def latest(self, session: CheckoutSession, kind: str) -> tuple[str, str] | None:
        """The session's latest attempt of `kind` as (attempt id, resource id), or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(checkout_attempts.c.attempt_id, checkout_attempts.c.resource_id)
                .where(checkout_attempts.c.session_id == session.session_id, checkout_attempts.c.kind == kind)
                .order_by(checkout_attempts.c.created_at.desc()).limit(1))).first()
        return None if row is None else (row.attempt_id, row.resource_id)
