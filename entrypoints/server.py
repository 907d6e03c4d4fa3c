"""How uvicorn serves the API (`payloop api`, and so the embedded stack): with a header read timeout, which uvicorn
does not have, and its own limits set explicitly.

uvicorn's `timeout_keep_alive` runs only between requests, and the first byte of a request cancels it: a client
that connects and sends nothing, or sends its request head a byte at a time, holds a connection (and its memory)
for as long as it likes. `HeaderTimeoutH11Protocol` gives every request head `api_header_timeout_seconds` from the
moment the connection is open or the previous response went out; late, the connection gets a 408 (when part of a
head arrived) and is closed. The body has its own deadline, in the app (`api/http_guards.py`), which can answer
it with a proper problem+json of the app's.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.problems import Problem
from payloop.settings import Settings

KEEP_ALIVE_TIMEOUT_SECONDS = 5  # uvicorn's default, set explicitly: an idle kept-alive connection is closed then
MAX_HEAD_BYTES = 16 * 1024  # the request line and headers; more is a 400 from h11 (uvicorn's default, explicit)


def api_server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` serving the API."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "http": header_timeout_protocol(settings.api_header_timeout_seconds),
        "timeout_keep_alive": KEEP_ALIVE_TIMEOUT_SECONDS,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        # X-Forwarded-For believed from these only; the app reads the client uvicorn settles on.
        "forwarded_allow_ips": settings.trusted_proxy_cidrs,
    }


def header_timeout_protocol(timeout_seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on each request head. (h11 on purpose: `http="auto"` would pick
    httptools when installed, which this does not cover.)"""
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_seconds": timeout_seconds})


class HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout_seconds = 10.0
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0  # bytes of the current request head received so far

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_timer is not None and self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is complete (or broken, and answered): the app's deadline now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the next request's head, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.header_timeout_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._head_bytes:
            # Written raw: h11 has no request to answer yet. The body is the app's problem+json shape.
            trace_id = uuid.uuid4().hex
            problem = Problem(408, "request_timeout", "Request timeout",
                              f"the request head did not arrive within {self.header_timeout_seconds:g} s",
                              retryable=True)
            body = json.dumps(problem.body() | {"trace_id": trace_id}).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
                + f"content-length: {len(body)}\r\nx-trace-id: {trace_id}\r\n".encode()
                + b"connection: close\r\n\r\n" + body)
        self.transport.close()
