"""Bearer API keys with scopes. Keys come from PAYLOOP_API_KEYS ("key:client:scope,scope;…")."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import Problem

SCOPES = frozenset({"payments", "wallet", "ops"})


@dataclass(frozen=True)
class Principal:
    client_id: str
    scopes: frozenset[str]


def parse_api_keys(spec: str) -> dict[str, Principal]:
    keys: dict[str, Principal] = {}
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        try:
            key, client_id, scopes = entry.split(":", 2)
        except ValueError:
            raise ValueError("each PAYLOOP_API_KEYS entry is key:client_id:scope,scope") from None
        scope_set = frozenset(s.strip() for s in scopes.split(",") if s.strip())
        if not key or not client_id or not scope_set <= SCOPES:
            raise ValueError(f"bad PAYLOOP_API_KEYS entry for client {client_id!r}; scopes are {sorted(SCOPES)}")
        keys[key] = Principal(client_id, scope_set)
    return keys


# Declares the scheme in the OpenAPI schema; the checks below are ours, so every failure is a problem+json 401.
_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")


def _authenticate(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "unauthorized", "Unauthorized", "a bearer API key is required",
                      headers={"WWW-Authenticate": "Bearer"})
    found = principal_for(token, request.app.state.api_keys)
    if found is None:
        raise Problem(401, "unauthorized", "Unauthorized", "the API key is not valid",
                      headers={"WWW-Authenticate": "Bearer"})
    return found


def principal_for(token: str, keys: dict[str, Principal]) -> Principal | None:
    """The client a bearer token belongs to, or None."""
    # Compare against every key in constant time so timing says nothing about which keys exist.
    found = None
    for key, principal in keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            found = principal
    return found


def authentication_problem(request: Request) -> Problem | None:
    """The 401 a request to an API-key route deserves, if any. FastAPI parses a JSON body before it runs a route's
    dependencies, so without this an unauthenticated caller would hear about its body before its credentials."""
    route = request.scope.get("route")
    if route is None or not _depends_on(getattr(route, "dependant", None), _authenticate):
        return None
    try:
        _authenticate(request)
    except Problem as problem:
        return problem
    return None


def _depends_on(dependant: Any, call: Callable[..., Any]) -> bool:
    if dependant is None:
        return False
    return dependant.call is call or any(_depends_on(sub, call) for sub in dependant.dependencies)


def require_scope(scope: str):  # noqa: ANN201
    def dependency(principal: Principal = Depends(_authenticate)) -> Principal:
        if scope not in principal.scopes:
            raise Problem(403, "insufficient_scope", "Forbidden", f"this API key lacks the {scope!r} scope")
        return principal

    return dependency
