"""The bench's API client honours 429 like a well-behaved platform client: it waits `Retry-After` and asks again.
A 429 is answered before the request does anything (the limit is checked first), so repeating it is always safe;
without this, the figures read back after the run (one GET per inbox row) would silently lose rows to the limit."""

from __future__ import annotations

import asyncio

import httpx

MAX_WAITS = 10


class RetryAfterTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(MAX_WAITS):
            response = await self._inner.handle_async_request(request)
            if response.status_code != 429:
                return response
            await response.aclose()
            await asyncio.sleep(float(response.headers.get("retry-after") or 1))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
