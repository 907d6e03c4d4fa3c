"""The platforms' event endpoints: registered with a URL (refused when it could reach inside our network) and an
optional list of event types, each with its own signing secret, shown once."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from events.models import event_deliveries, event_endpoints
from payloop.db import insert_if_missing
from events.outbox import DELIVERING, FAILED, PENDING

SECRET_BYTES = 32
ENDPOINT_ID_PREFIX = "we_"
ENDPOINT_DELETED = "endpoint deleted"


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    client_id: str
    url: str
    event_types: list[str] | None
    secret: str
    created_at: datetime


class UrlRefused(Exception):
    """`code`: url_invalid (no URL: a bad port, a broken IPv6 host), url_scheme (not http(s), or plain http outside
    dev mode), url_not_public (a private, loopback, link-local or otherwise non-global address), url_unresolvable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s); outside dev mode (`allow_private` false) also plain http and any host
    that is or resolves to an address that is not global — so an endpoint cannot make the worker call into our own
    network (SSRF). Checked at registration and again before every send (a name may resolve elsewhere later)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises on a port out of range or not a number
    except ValueError as err:  # also "[::1/x": an unclosed IPv6 host
        raise UrlRefused("url_invalid", "the URL's host or port is not valid") from err
    if parts.scheme not in ("http", "https") or not host:
        raise UrlRefused("url_scheme", "the URL must be http(s) with a host")
    if allow_private:
        return
    if parts.scheme != "https":
        raise UrlRefused("url_scheme", "the URL must be https")
    for address in await _addresses(host, port or 443):
        if not address.is_global:
            raise UrlRefused("url_not_public", "the URL's host is not a public address")


async def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:  # UnicodeError: a name IDNA refuses (a label over 63 characters)
        raise UrlRefused("url_unresolvable", "the URL's host does not resolve") from err
    # An IPv6 address may carry a zone ("fe80::1%eth0"); ip_address refuses it, and such an address is link-local.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(row.id, row.client_id, row.url, row.event_types, row.secret, row.created_at)


async def create_endpoint(engine: AsyncEngine, *, endpoint_id: str, client_id: str, url: str,
                          event_types: list[str] | None, now: datetime) -> Endpoint:
    """Register the endpoint; events from now on are delivered to it (earlier ones: `GET /v1/events`). Idempotent by
    id: a registration retried after its answer was lost (the Idempotency-Key keeps the id) finds the first one."""
    row = {"id": endpoint_id, "client_id": client_id, "url": url, "event_types": event_types,
           "secret": new_secret(), "created_at": now}
    async with engine.begin() as conn:
        await insert_if_missing(conn, event_endpoints, row)
        stored = (await conn.execute(sa.select(event_endpoints).where(event_endpoints.c.id == endpoint_id))).one()
    return _endpoint(stored)


async def client_endpoints(engine: AsyncEngine, client_id: str) -> list[Endpoint]:
    query = (sa.select(event_endpoints).where(event_endpoints.c.client_id == client_id,
                                              event_endpoints.c.deleted_at.is_(None))
             .order_by(event_endpoints.c.created_at, event_endpoints.c.id))
    async with engine.connect() as conn:
        return [_endpoint(row) for row in await conn.execute(query)]


async def endpoint_urls(engine: AsyncEngine, endpoint_ids: set[str]) -> dict[str, tuple[str, str]]:
    """(url, secret) of each endpoint, for the dispatcher."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(event_endpoints.c.id, event_endpoints.c.url, event_endpoints.c.secret)
                                  .where(event_endpoints.c.id.in_(endpoint_ids)))
        return {row.id: (row.url, row.secret) for row in rows}


async def delete_endpoint(engine: AsyncEngine, client_id: str, endpoint_id: str, now: datetime) -> bool:
    """Delete the client's endpoint and stop its deliveries not made yet (they end `failed`, "endpoint deleted");
    False when the client has no such endpoint."""
    async with engine.begin() as conn:
        deleted = await conn.execute(event_endpoints.update().where(
            event_endpoints.c.id == endpoint_id, event_endpoints.c.client_id == client_id,
            event_endpoints.c.deleted_at.is_(None)).values(deleted_at=now))
        if deleted.rowcount != 1:
            return False
        await conn.execute(event_deliveries.update().where(
            event_deliveries.c.endpoint_id == endpoint_id, event_deliveries.c.state.in_((PENDING, DELIVERING)))
            .values(state=FAILED, last_error=ENDPOINT_DELETED))
    return True
