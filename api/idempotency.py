"""Idempotency-Key store: per client + endpoint + key, a fingerprint of the body and the stored response."""

from __future__ import annotations

import hashlib
import json
import secrets
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



IDEMPOTENCY_KEY_DOC = ("1-255 visible ASCII characters; required unless the body has `idempotency_key` (then both "
                       "must agree). A retry with the same key and body gets the first answer.")


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


def new_resource_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


@dataclass(frozen=True)
class Claim:
    resource_id: str
    stored: StoredResponse | None  # the first request's response, when there is one to replay


class IdempotencyStore:
    def __init__(self, engine: AsyncEngine, ttl: timedelta) -> None:
        self.engine = engine
        self.ttl = ttl

    async def begin(
        self, client_id: str, endpoint: str, key: str, print_: str, now: datetime, resource_id: str
    ) -> Claim:
        """Claims the key for this request (with `resource_id`, or the id an earlier, dead claim chose), or
        returns the stored response of the first one.

        Raises 422 when the key was used with another body. A key in flight is shared: the actions answer_once
        guards are keyed by the resource id (a workflow id), so running one twice reaches the same workflow.
        """
        where = sa.and_(
            idempotency_keys.c.client_id == client_id,
            idempotency_keys.c.endpoint == endpoint,
            idempotency_keys.c.key == key,
        )
        row_values = {
            "client_id": client_id, "endpoint": endpoint, "key": key, "fingerprint": print_,
            "resource_id": resource_id, "state": "in_flight", "created_at": now, "expires_at": now + self.ttl,
            "response_status": None, "response_body": None,
        }
        async with self.engine.begin() as conn:
            if await insert_if_missing(conn, idempotency_keys, row_values):
                return Claim(resource_id, None)
            row = (await conn.execute(sa.select(idempotency_keys).where(where))).one()
            if row.expires_at <= now:  # an expired key is a new request
                await conn.execute(idempotency_keys.update().where(where).values(**row_values))
                return Claim(resource_id, None)
            if row.fingerprint != print_:
                raise Problem(422, "idempotency_key_reused", "Idempotency-Key reused",
                              "this Idempotency-Key was used with a different request body")
            if row.state == "done":
                return Claim(row.resource_id, StoredResponse(row.response_status, json.loads(row.response_body)))
            await conn.execute(
                idempotency_keys.update()
                .where(where, idempotency_keys.c.created_at == row.created_at)
                .values(state="in_flight", created_at=now)
            )
            # Released, or still in flight — maybe alive, maybe dead with its answer never stored (the database
            # went away first): either way the retry runs the action again with the claim's resource id, which
            # reaches the very payment the first request started. Never a second payment, never a wait.
            return Claim(row.resource_id, None)

    async def complete(self, client_id: str, endpoint: str, key: str, status: int, body: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                idempotency_keys.update()
                .where(idempotency_keys.c.client_id == client_id, idempotency_keys.c.endpoint == endpoint,
                       idempotency_keys.c.key == key)
                .values(state="done", response_status=status, response_body=json.dumps(body))
            )

    async def release(self, client_id: str, endpoint: str, key: str) -> None:
        """Frees a key whose request failed for a reason of ours: the client's retry runs it again, with the
        same resource id, so it reaches whatever the failed attempt may already have started."""
        async with self.engine.begin() as conn:
            await conn.execute(
                idempotency_keys.update()
                .where(idempotency_keys.c.client_id == client_id, idempotency_keys.c.endpoint == endpoint,
                       idempotency_keys.c.key == key, idempotency_keys.c.state == "in_flight")
                .values(state="released")
            )



async def answer_once(
    store: IdempotencyStore,
    client_id: str,
    endpoint: str,
    key: str,
    body: dict[str, Any],
    id_prefix: str,
    action: Callable[[str], Awaitable[tuple[int, dict[str, Any]]]],
    present: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[int, dict[str, Any], bool]:
    """Runs `action(resource_id)` once per key: a retry gets the stored answer (status, body, replayed=True); a
    failure of ours frees the key (keeping the resource id, so the retry reaches what the failed attempt may have
    started).

    `present(body)` shapes the stored answer for this request's caller, first time and replays alike: the key is
    the client's, but what each of its API keys may see (its scopes) is the request's."""
    claim = await store.begin(client_id, endpoint, key, fingerprint(body), datetime.now(timezone.utc),
                              new_resource_id(id_prefix))
    shown = present or (lambda stored: stored)
    if claim.stored is not None:
        return claim.stored.status, shown(claim.stored.body), True
    try:
        status, payload = await action(claim.resource_id)
    except BaseException as err:
        await store.release(client_id, endpoint, key)
        if isinstance(err, Problem) and err.status >= 500:
            err.resource_id = claim.resource_id  # it may have started: a caller can follow it
        raise
    await store.complete(client_id, endpoint, key, status, payload)
    return status, shown(payload), False


def answer_json(status: int, body: Any, replayed: bool) -> JSONResponse:
    """An `answer_once` answer as a route's response; a replayed answer says so (`Idempotent-Replayed`)."""
    media_type = "application/problem+json" if status >= 400 else None
    return JSONResponse(body, status_code=status, media_type=media_type,
                        headers={"Idempotent-Replayed": "true"} if replayed else {})
