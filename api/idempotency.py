"""Idempotency-Key store: per client + endpoint + key, a fingerprint of the body and the stored response."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from api.errors import Problem
from api.models import idempotency_keys
from payloop.db import insert_if_missing

# An in-flight key older than this belongs to a request that died; a retry may take it over. Safe because
# the resources a request creates derive their ids from the key (the same payment id, the same workflow).
IN_FLIGHT_TAKEOVER = timedelta(seconds=60)


def resolve_key(header: str | None, body_key: str | None) -> str:
    """The request's Idempotency-Key: the header, or the body's `idempotency_key`; both must agree."""
    if header is not None and body_key is not None and header != body_key:
        raise Problem(422, "idempotency_key_mismatch", "Idempotency-Key mismatch",
                      "the Idempotency-Key header and the body's idempotency_key differ")
    key = header if header is not None else body_key
    if not key:
        raise Problem(422, "idempotency_key_required", "Idempotency-Key required",
                      "send an Idempotency-Key header so a retried request cannot pay twice",
                      errors=[{"field": "Idempotency-Key", "code": "missing", "message": "required"}])
    if len(key) > 255 or not all(0x21 <= ord(ch) <= 0x7E for ch in key):
        raise Problem(422, "validation_error", "Validation failed", "Idempotency-Key must be 1-255 visible ASCII characters",
                      errors=[{"field": "Idempotency-Key", "code": "invalid", "message": "1-255 visible ASCII characters"}])
    return key


def derive_id(prefix: str, client_id: str, key: str) -> str:
    """A resource id derived from the Idempotency-Key, so a retry after a crash reaches the same resource."""
    digest = hashlib.sha256(f"{client_id}\x00{key}".encode()).hexdigest()
    return f"{prefix}_{digest[:24]}"


def fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


class IdempotencyStore:
    def __init__(self, engine: AsyncEngine, ttl: timedelta) -> None:
        self.engine = engine
        self.ttl = ttl

    async def begin(self, client_id: str, endpoint: str, key: str, print_: str, now: datetime) -> StoredResponse | None:
        """Claims the key for this request (None), or returns the stored response of the first one.

        Raises 422 when the key was used with another body and 409 while the first request is in flight.
        """
        where = sa.and_(
            idempotency_keys.c.client_id == client_id,
            idempotency_keys.c.endpoint == endpoint,
            idempotency_keys.c.key == key,
        )
        row_values = {
            "client_id": client_id, "endpoint": endpoint, "key": key, "fingerprint": print_,
            "state": "in_flight", "created_at": now, "expires_at": now + self.ttl,
        }
        async with self.engine.begin() as conn:
            if await insert_if_missing(conn, idempotency_keys, row_values):
                return None
            row = (await conn.execute(sa.select(idempotency_keys).where(where))).one()
            if row.expires_at <= now:
                await conn.execute(idempotency_keys.update().where(where).values(**row_values))
                return None
            if row.fingerprint != print_:
                raise Problem(422, "idempotency_key_reused", "Idempotency-Key reused",
                              "this Idempotency-Key was used with a different request body")
            if row.state == "done":
                return StoredResponse(row.response_status, json.loads(row.response_body))
            taken_over = await conn.execute(
                idempotency_keys.update()
                .where(where, idempotency_keys.c.state == "in_flight",
                       idempotency_keys.c.created_at == row.created_at,
                       idempotency_keys.c.created_at < now - IN_FLIGHT_TAKEOVER)
                .values(created_at=now)
            )
            if taken_over.rowcount == 1:
                return None
        raise Problem(409, "idempotency_in_flight", "Request in progress",
                      "a request with this Idempotency-Key is still being processed", retryable=True,
                      headers={"Retry-After": "1"})

    async def complete(self, client_id: str, endpoint: str, key: str, status: int, body: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                idempotency_keys.update()
                .where(idempotency_keys.c.client_id == client_id, idempotency_keys.c.endpoint == endpoint,
                       idempotency_keys.c.key == key)
                .values(state="done", response_status=status, response_body=json.dumps(body))
            )

    async def release(self, client_id: str, endpoint: str, key: str) -> None:
        """Forgets a key whose request failed for a reason of ours, so the client's retry runs it again."""
        async with self.engine.begin() as conn:
            await conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.client_id == client_id, idempotency_keys.c.endpoint == endpoint,
                    idempotency_keys.c.key == key, idempotency_keys.c.state == "in_flight",
                )
            )



async def run_once(
    store: IdempotencyStore,
    client_id: str,
    endpoint: str,
    key: str,
    body: dict[str, Any],
    action: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
) -> JSONResponse:
    """Runs `action` once per key: a retry gets the stored response; a failure of ours frees the key."""
    stored = await store.begin(client_id, endpoint, key, fingerprint(body), datetime.now(timezone.utc))
    if stored is not None:
        return _json(stored.status, stored.body, {"Idempotent-Replayed": "true"})
    try:
        status, payload = await action()
    except BaseException:
        await store.release(client_id, endpoint, key)
        raise
    await store.complete(client_id, endpoint, key, status, payload)
    return _json(status, payload, {})


def _json(status: int, body: Any, headers: dict[str, str]) -> JSONResponse:
    media_type = "application/problem+json" if status >= 400 else None
    return JSONResponse(body, status_code=status, media_type=media_type, headers=headers)
