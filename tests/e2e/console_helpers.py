"""What the ops console's browser tests share (their fixtures `browser` and `context` are in tests/e2e/conftest.py):
signing in, the session cookie, a plain HTTP client holding only that cookie, screenshots."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import BrowserContext, Page

from tests.e2e.conftest import API_KEY, Stack

SCREENSHOTS = Path(__file__).parent.parent.parent / "test-artifacts" / "console"
SESSION_COOKIE = "payloop_ops_session"


async def shot(page: Page, stack: Stack, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{stack.backend}-{name}.png", full_page=True)


async def sign_in(page: Page, stack: Stack, key: str = API_KEY) -> None:
    await page.goto(f"{stack.settings.api_url}/ops/login")
    await page.get_by_label("API key with the ops scope").fill(key)
    await page.get_by_role("button", name="Sign in").click()


def console_http(stack: Stack, cookie: str | None = None) -> httpx.AsyncClient:
    """A client with no API key: only the console's cookie, when given."""
    return httpx.AsyncClient(base_url=stack.settings.api_url, cookies={SESSION_COOKIE: cookie} if cookie else None,
                             follow_redirects=False)


async def session_cookie(context: BrowserContext) -> dict[str, Any]:
    return next(c for c in await context.cookies() if c["name"] == SESSION_COOKIE)


@contextlib.asynccontextmanager
async def signed_in_http(stack: Stack, key: str = API_KEY) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client signed in through the login form (as a browser posts it, from the console's origin),
    holding only the session cookie."""
    async with console_http(stack) as http:
        response = await http.post("/ops/login", data={"api_key": key}, headers={"Origin": stack.settings.api_url})
        assert response.status_code == 303 and SESSION_COOKIE in http.cookies, response.text
        yield http
