"""A guard every request passes before a route sees it, as plain ASGI middleware (no BaseHTTPMiddleware: it runs
on every request, so it adds no task and no response copying): the per-client rate limit. A request carrying a
valid API key counts against its client's `PAYLOOP_RATE_LIMIT_PAYMENTS`, before its body is read or parsed (a
flood of bad bodies is limited too).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import principal_for
from api.rate_limits import RateLimits, rate_limited_problem


def install(app: FastAPI) -> None:
    """Call before `api.errors.install`, so the trace-id middleware wraps it (its problems carry a trace id)."""
    app.add_middleware(ClientRateLimitMiddleware)


class ClientRateLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (token := _bearer_token(scope)):
            state = scope["app"].state
            principal = principal_for(token, state.api_keys)
            if principal is not None:  # an invalid key gets its 401 from the route, uncounted
                limits: RateLimits = state.rate_limits
                refusal = await limits.check_client(principal.client_id)
                if refusal is not None:
                    problem = rate_limited_problem(refusal, "this API client's requests")
                    await problem.response()(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token if scheme.lower() == "bearer" and token else None
    return None

