"""The player's public IP address, as the risk rules read it: the request's peer — or, only when the peer is one of
PAYLOOP_TRUSTED_PROXIES, the client those proxies name in X-Forwarded-For (anyone else can write that header)."""

from __future__ import annotations

from fastapi import Request

from risk.geo import client_address, public_address


def player_address(request: Request) -> str | None:
    """None when the address is private, loopback or unreadable: such an address says nothing about a country."""
    peer = request.client.host if request.client else None
    address = client_address(peer, request.headers.get("x-forwarded-for"), request.app.state.trusted_proxies)
    return public_address(address) if address else None
