"""Two guards every request passes before a route sees it, as plain ASGI middleware (no BaseHTTPMiddleware: they
run on every request, so they add no task and no response copying):

- the per-client rate limit: a request carrying a valid API key counts against its client's
  `PAYLOOP_RATE_LIMIT_PAYMENTS`, before its body is read or parsed (a flood of bad bodies is limited too);
- the body read timeout: a request's body must arrive within `PAYLOOP_API_BODY_TIMEOUT_SECONDS` of the app first
  asking for it, or the answer is 408 and the connection is closed. uvicorn has no body read timeout of its own
  (its keep-alive timeout runs only between requests); the header timeout is `entrypoints/server.py`'s.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import principal_for
from api.problems import Problem
from api.rate_limits import RateLimits, rate_limited_problem


class BodyReadTimeout(HTTPException):
    """Raised by the app's `receive` when the body is late. An HTTPException because FastAPI turns any other error
    met while it reads a body into a 400; its own handler below answers it."""

    def __init__(self, timeout_seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {timeout_seconds:g} s")


def install(app: FastAPI, body_timeout_seconds: float) -> None:
    """Call before `api.errors.install`, so its 500 middleware wraps these. (Their problems carry the trace id of
    payloop.logs.AccessLogMiddleware, the outermost.)"""
    app.add_middleware(BodyReadTimeoutMiddleware, timeout_seconds=body_timeout_seconds)
    app.add_middleware(ClientRateLimitMiddleware)

    @app.exception_handler(BodyReadTimeout)
    async def _body_timeout(_request: Request, exc: BodyReadTimeout) -> JSONResponse:
        # Connection: close — the rest of a body that late is not worth waiting for, nor is the client.
        return Problem(408, "request_timeout", "Request timeout", exc.detail, retryable=True,
                       headers={"Connection": "close"}).response()


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


class BodyReadTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout_seconds: float) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        body_done = False

        async def timed_receive() -> Message:
            nonlocal deadline, body_done
            if body_done:  # after the body only a disconnect can come, whenever it does: no deadline
                return await receive()
            if deadline is None:  # one deadline for the whole body, so a trickle of bytes cannot extend it
                deadline = asyncio.get_running_loop().time() + self.timeout_seconds
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyReadTimeout(self.timeout_seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)
