"""Slow clients, with a raw socket against the API served as `payloop api` serves it: a request head or body that
does not arrive in time gets 408 problem+json and the connection is closed; an idle connection is closed. The
timeouts are short here (1 s) and the client waits far longer than that, so nothing depends on how fast the
machine is."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from tests.e2e.conftest import API_KEY, free_port
from tests.e2e.test_rate_limits import api_settings, database, serving

WAIT_SECONDS = 30  # how long the client waits for the server to give up on it: far beyond the 1 s timeouts


@pytest.fixture
async def api_port(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[int]:
    async with database("sqlite", tmp_path) as (url, engine):
        settings = api_settings(url, api_port=free_port(), api_header_timeout_seconds=1.0,
                                api_body_timeout_seconds=1.0)
        async with serving(create_app(settings, engine=engine, temporal=temporal_env.client), settings):
            yield settings.api_port


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(WAIT_SECONDS):
        return await reader.read()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(WAIT_SECONDS):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {name.lower(): value.strip() for name, value in (h.split(":", 1) for h in header_lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split(" ")[1]), headers, body


def assert_timeout_problem(raw: bytes, part: str) -> None:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), raw
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert (problem["status"], problem["code"], problem["retryable"]) == (408, "request_timeout", True)
    assert part in problem["detail"] and problem["trace_id"]


async def test_a_request_head_that_stops_midway_gets_408_and_the_connection_closed(api_port: int) -> None:
    async with connection(api_port) as (reader, writer):
        writer.write(b"POST /v1/webhooks/card HTTP/1.1\r\nHost: payloop\r\nContent-Type: appl")
        assert_timeout_problem(await read_until_closed(reader), "request head")


async def test_a_connection_that_sends_nothing_is_closed(api_port: int) -> None:
    async with connection(api_port) as (reader, _writer):
        assert await read_until_closed(reader) == b""


async def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_head(api_port: int) -> None:
    async with connection(api_port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: payloop\r\n\r\n")
        status, _headers, _body = await read_response(reader)
        assert status == 200
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")  # the next request, never finished
        assert_timeout_problem(await read_until_closed(reader), "request head")


@pytest.mark.parametrize(("path", "headers"), [
    ("/v1/webhooks/card", b""),  # read as a raw stream by the route
    ("/v1/payments/init", f"Authorization: Bearer {API_KEY}\r\nIdempotency-Key: slow-1\r\n".encode()),  # by FastAPI
])
async def test_a_body_that_stops_midway_gets_408_problem_json_and_the_connection_closed(
    api_port: int, path: str, headers: bytes
) -> None:
    async with connection(api_port) as (reader, writer):
        writer.write(f"POST {path} HTTP/1.1\r\nHost: payloop\r\nContent-Type: application/json\r\n"
                     "Content-Length: 1000\r\n".encode() + headers + b"\r\n" + b'{"amount": "5')
        assert_timeout_problem(await read_until_closed(reader), "request body")


async def test_a_trickled_body_does_not_extend_its_deadline(api_port: int) -> None:
    """One byte every 0.2 s keeps every single read short; the whole body still has its one deadline."""
    async with connection(api_port) as (reader, writer):
        writer.write(b"POST /v1/webhooks/card HTTP/1.1\r\nHost: payloop\r\nContent-Length: 150\r\n\r\n")
        answer = asyncio.ensure_future(read_until_closed(reader))
        for _ in range(150):  # 30 s of trickle, unless the server stops it
            if answer.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b"x")
            await asyncio.sleep(0.2)
        assert_timeout_problem(await answer, "request body")
