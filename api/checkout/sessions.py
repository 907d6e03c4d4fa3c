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

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.ext.asyncio import AsyncEngine

from api.models import checkout_attempts, checkout_sessions
from payloop.db import insert_if_missing

# Rows are deleted this long after their status pages closed (a day of support questions can still find them).
KEEP_AFTER_CLOSE = timedelta(days=1)


def signing_keys(setting: str) -> list[str]:
    """PAYLOOP_CHECKOUT_SIGNING_KEYS as a list: the signing key first, then the ones still verified."""
    return [key.strip() for key in setting.split(",") if key.strip()]


class CheckoutRefused(Exception):
    """A checkout URL that opens nothing: `status` 403 (not ours: tampered, or signed with a retired key), 410
    (expired, or its session is gone) or 429 (the session's rate limit)."""

    def __init__(self, status: int, retry_after_seconds: int | None = None) -> None:
        super().__init__(status)
        self.status = status
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
    may_withdraw: bool  # the key that opened it had the `wallet` scope: the balance may be shown, payouts started


class AttemptKind(StrEnum):
    DEPOSIT = "deposit"
    PAYOUT = "payout"


@dataclass(frozen=True)
class Attempt:
    kind: AttemptKind
    resource_id: str


class CheckoutSessions:
    def __init__(self, engine: AsyncEngine, setting: str, *, lifetime: timedelta, status_grace: timedelta) -> None:
        keys = signing_keys(setting)
        if not keys:
            raise ValueError("no checkout signing key")
        # itsdangerous signs with the last key of the list and verifies with any: the setting names the signing
        # key first. HMAC-SHA256, not the library's SHA-1 default.
        signed = {"secret_key": list(reversed(keys)), "signer_kwargs": {"digest_method": hashlib.sha256}}
        self._sessions = URLSafeSerializer(salt="payloop-checkout", **signed)
        # What a PSP is given to send the player back: it opens one attempt's status page, never a form.
        self._returns = URLSafeSerializer(salt="payloop-checkout-return", **signed)
        self.engine = engine
        self.lifetime = lifetime
        self.status_grace = status_grace

    async def create(
        self, *, client_id: str, player_id: str, currency: str | None, amount_minor: int | None,
        country: str | None, locale: str | None, return_url: str, may_withdraw: bool, now: datetime,
    ) -> tuple[str, CheckoutSession]:
        """A new session and the token its URL carries."""
        session = CheckoutSession(f"cs_{secrets.token_hex(12)}", client_id, player_id, currency, amount_minor,
                                  country, locale, return_url, now + self.lifetime, may_withdraw)
        closed_long_ago = now - self.lifetime - self.status_grace - KEEP_AFTER_CLOSE
        async with self.engine.begin() as conn:
            old = sa.select(checkout_sessions.c.session_id).where(checkout_sessions.c.expires_at < closed_long_ago)
            await conn.execute(checkout_attempts.delete().where(checkout_attempts.c.session_id.in_(old)))
            await conn.execute(checkout_sessions.delete().where(checkout_sessions.c.expires_at < closed_long_ago))
            await conn.execute(checkout_sessions.insert().values(
                session_id=session.session_id, client_id=client_id, player_id=player_id, currency=currency,
                amount_minor=amount_minor, country=country, locale=locale, return_url=return_url,
                may_withdraw=may_withdraw, created_at=now, expires_at=session.expires_at))
        return self.token(session), session

    def token(self, session: CheckoutSession) -> str:
        """The token of the session's URL (the same every time: it signs the id and the expiry)."""
        return self._sessions.dumps([session.session_id, int(session.expires_at.timestamp())])

    def return_token(self, session: CheckoutSession, attempt_id: str) -> str:
        """The token of the URL a PSP sends the player back to: one attempt's status page, nothing else, so a PSP
        (its logs, a workflow's history) never holds the session's own token."""
        return self._returns.dumps([session.session_id, attempt_id, int(session.expires_at.timestamp())])

    async def open(self, token: str, now: datetime, *, for_status: bool = False) -> CheckoutSession:
        """The session a URL's token names; CheckoutRefused when the token is not ours or has expired (a status
        page, `for_status`, stays readable `status_grace` longer)."""
        try:
            session_id, expires_epoch = self._sessions.loads(token)
        except (BadSignature, ValueError, TypeError):
            raise CheckoutRefused(403) from None
        return await self._session(session_id, expires_epoch, now, for_status=for_status)

    async def open_return(self, token: str, now: datetime) -> tuple[CheckoutSession, str]:
        """The session and attempt id a return token names (for its status page only)."""
        try:
            session_id, attempt_id, expires_epoch = self._returns.loads(token)
        except (BadSignature, ValueError, TypeError):
            raise CheckoutRefused(403) from None
        return await self._session(session_id, expires_epoch, now, for_status=True), str(attempt_id)

    async def _session(self, session_id: object, expires_epoch: object, now: datetime, *,
                       for_status: bool) -> CheckoutSession:
        try:
            expires_at = datetime.fromtimestamp(int(expires_epoch), timezone.utc)  # type: ignore[call-overload]
        except (ValueError, TypeError, OverflowError, OSError):
            raise CheckoutRefused(403) from None
        closes_at = expires_at + (self.status_grace if for_status else timedelta(0))
        if now >= closes_at:
            raise CheckoutRefused(410)
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(checkout_sessions).where(
                checkout_sessions.c.session_id == str(session_id)))).first()
        if row is None:
            raise CheckoutRefused(410)
        return CheckoutSession(row.session_id, row.client_id, row.player_id, row.currency, row.amount_minor,
                               row.country, row.locale, row.return_url, row.expires_at, row.may_withdraw)

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
        return None if row is None else Attempt(AttemptKind(row.kind), row.resource_id)

    async def latest(self, session: CheckoutSession, kind: str) -> tuple[str, str] | None:
        """The session's latest attempt of `kind` as (attempt id, resource id), or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(checkout_attempts.c.attempt_id, checkout_attempts.c.resource_id)
                .where(checkout_attempts.c.session_id == session.session_id, checkout_attempts.c.kind == kind)
                .order_by(checkout_attempts.c.created_at.desc()).limit(1))).first()
        return None if row is None else (row.attempt_id, row.resource_id)
