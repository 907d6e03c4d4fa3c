"""What the checkout's browser tests share (tests/e2e/test_checkout_browser.py): a session opened through the API,
its page in Chromium, the steps of a deposit, and every page state checked with axe and kept as a screenshot in
test-artifacts/checkout/ (CI keeps them)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import BrowserContext, FrameLocator, Locator, Page, expect

from api.app import create_app
from api.checkout import i18n
from tests.e2e.a11y import assert_accessible
from tests.e2e.conftest import API_KEY, Stack, free_port, new_player, serve

SCREENSHOTS = Path(__file__).parent.parent.parent / "test-artifacts" / "checkout"
RETURN_URL = "https://casino.example/cashier?x=1"
# The size the docs' screenshots are taken at (docs/checkout/*.png): small files, a phone-to-tablet width.
VIEWPORT = {"width": 800, "height": 900}
# A payment's way to its final status through the sandbox, the worker and the page's one-second polls.
SETTLE_MS = 20_000
# The workflows' waits for a PSP's webhook and for the player's KYC, long enough that a test decides when the payment
# moves on (Stack.webhooks_held, a KYC set by the test) — not the stack's 2-8 s, after which a deposit would ask the
# PSP or give up by itself, however busy the machine.
PATIENT = {"deposit_webhook_timeout_seconds": 30.0, "payout_webhook_timeout_seconds": 30.0,
           "deposit_kyc_wait_timeout_seconds": 30.0, "kyc_wait_timeout_seconds": 30.0}


@dataclass(frozen=True)
class Checkout:
    """A checkout session as the platform got it from POST /v1/checkout/sessions."""

    player_id: str
    url: str
    session_id: str


async def open_session(stack: Stack, *, player_id: str | None = None, currency: str | None = "EUR",
                       amount: str | None = None, locale: str | None = None, country: str = "DE",
                       return_url: str = RETURN_URL, api: httpx.AsyncClient | None = None) -> Checkout:
    """A session opened through the stack's API, or through `api` (checkout_api), whose pages it then serves."""
    body: dict[str, Any] = {"player_id": player_id or new_player(), "country": country, "return_url": return_url}
    body |= {name: value for name, value in (("currency", currency), ("amount", amount), ("locale", locale)) if value}
    response = await (api or stack.api).post("/v1/checkout/sessions", json=body)
    assert response.status_code == 201, response.text
    answer = response.json()
    return Checkout(body["player_id"], answer["url"], answer["session_id"])


async def new_page(context: BrowserContext) -> Page:
    page = await context.new_page()
    await page.set_viewport_size(VIEWPORT)
    return page


async def look(page: Page, name: str) -> None:
    """The page as it is now: no serious or critical axe violation, and its screenshot `<name>.png`."""
    await assert_accessible(page, name)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png")


async def open_checkout(context: BrowserContext, checkout: Checkout, name: str, path: str = "", *,
                        expect_status: int = 200) -> Page:
    """A new page at the checkout's URL (`path` after it), answered `expect_status`, then `look`ed at."""
    page = await new_page(context)
    response = await page.goto(checkout.url + path)
    assert response is not None and response.status == expect_status, (response and response.status, page.url)
    await look(page, name)
    return page


async def enter_amount(page: Page | FrameLocator, typed: str, lang: i18n.Language) -> None:
    """The first step: the amount as the player types it, then Continue to the methods."""
    await page.get_by_label(lang.gettext("Amount"), exact=True).fill(typed)
    await page.get_by_role("button", name=lang.gettext("Continue")).click()
    await page.get_by_role("group", name=lang.gettext("Payment method")).wait_for()


async def choose(page: Page | FrameLocator, lang: i18n.Language, *, method: str, scenario: str | None = None) -> None:
    """The method (its translated name) and, on the sandbox, the PSP's behaviour (its option's label)."""
    await page.get_by_role("radio", name=lang.gettext(method), exact=True).check()
    if scenario is not None:
        await page.get_by_label(lang.gettext("Sandbox test scenario")).select_option(label=lang.gettext(scenario))


def deposit_button(page: Page | FrameLocator, lang: i18n.Language, amount_minor: int = 5000,
                   currency: str = "EUR") -> Locator:
    """The method step's submit button, named with the amount ("Deposit €50.00")."""
    name = lang.gettext("Deposit %(amount)s") % {"amount": lang.money(amount_minor, currency)}
    return page.get_by_role("button", name=name, exact=True)


async def expect_outcome(page: Page | FrameLocator, lang: i18n.Language, title: str,
                         timeout_ms: int = SETTLE_MS) -> None:
    """The status panel's title, once the payment gets there (the page's script swaps the panel in)."""
    await expect(page.locator("#outcome-title")).to_contain_text(lang.gettext(title), timeout=timeout_ms)


async def deposits_of(stack: Stack, player_id: str) -> list[dict[str, Any]]:
    """The player's deposits in the ops list (written with their credit or final status)."""
    response = await stack.api.get("/v1/ops/payments", params={"player_id": player_id})
    assert response.status_code == 200, response.text
    return response.json()["payments"]


@contextlib.asynccontextmanager
async def checkout_api(stack: Stack, **setting_overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The stack's API once more, on a port of its own with `setting_overrides` (the stack's own API keeps its
    settings for the other tests): the platform's client. The sessions opened through it send the player's browser
    to it, and the payments they start take its settings; the PSPs' webhooks still go to the stack's API."""
    settings = stack.settings.model_copy(update={"api_port": free_port(), **setting_overrides})
    async with (
        serve(create_app(settings, engine=stack.engine, temporal=stack.client), settings.api_port),
        httpx.AsyncClient(base_url=settings.api_url, headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=30) as platform,
    ):
        yield platform
