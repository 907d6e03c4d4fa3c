"""The ops console's sessions, kept server-side so that one can be ended (sign-out, expiry, the key withdrawn) and
the cookie carries nothing but a random token: the `ops_sessions` row holds only the token's SHA-256, the client the
ops-scoped API key belongs to, and the CSRF token every console form must carry.

A session ends `idle_seconds` after its last request or `absolute_seconds` after sign-in, whichever comes first; an
expired row is deleted when it is next presented, and every sign-in deletes all expired rows.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from api.models import ops_sessions

TOKEN_BYTES = 32  # 256 random bits: the cookie's value
# last_seen_at is written at most this often: a page view is a read, not a write, for the minute after the last one.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class ConsoleSession:
    client_id: str
    csrf_token: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, engine: AsyncEngine, *, idle_seconds: int, absolute_seconds: int) -> None:
        self.engine = engine
        self.idle = timedelta(seconds=idle_seconds)
        self.absolute = timedelta(seconds=absolute_seconds)

    async def open(self, client_id: str, now: datetime) -> tuple[str, ConsoleSession]:
        """A new session: the cookie's token (known to the caller only) and the session."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        session = ConsoleSession(client_id, secrets.token_urlsafe(TOKEN_BYTES))
        async with self.engine.begin() as conn:
            await conn.execute(ops_sessions.delete().where(self._expired(now)))
            await conn.execute(ops_sessions.insert().values(
                token_sha256=token_hash(token), client_id=client_id, csrf_token=session.csrf_token,
                created_at=now, last_seen_at=now))
        return token, session

    async def find(self, token: str, now: datetime) -> ConsoleSession | None:
        """The live session of this token (its idle clock moved on), or None."""
        key = ops_sessions.c.token_sha256 == token_hash(token)
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(ops_sessions).where(key))).first()
        if row is None:
            return None
        if row.last_seen_at <= now - self.idle or row.created_at <= now - self.absolute:
            await self.end(token)
            return None
        if row.last_seen_at <= now - TOUCH_EVERY:
            async with self.engine.begin() as conn:
                await conn.execute(ops_sessions.update().where(key).values(last_seen_at=now))
        return ConsoleSession(row.client_id, row.csrf_token)

    async def end(self, token: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(ops_sessions.delete().where(ops_sessions.c.token_sha256 == token_hash(token)))

    def _expired(self, now: datetime) -> sa.ColumnElement[bool]:
        return sa.or_(ops_sessions.c.last_seen_at <= now - self.idle, ops_sessions.c.created_at <= now - self.absolute)
