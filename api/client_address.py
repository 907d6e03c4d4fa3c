"""The player's public IP address, as the risk rules read it: the request's client as uvicorn settles it — the peer,
or, only when the peer is one of PAYLOOP_TRUSTED_PROXIES, the client those proxies name in X-Forwarded-For
(entrypoints/server.py; anyone else can write that header)."""

from __future__ import annotations

from fastapi import Request

from risk.geo import public_address


def player_address(request: Request) -> str | None:
    """None when the address is private, loopback or unreadable: such an address says nothing about a country."""
    return public_address(request.client.host) if request.client else None
