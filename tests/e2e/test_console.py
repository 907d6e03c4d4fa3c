"""The ops console (/ops) in a real browser — the system's Chromium driven by Playwright — against the real stack:
sign-in, payment search and a payment's page, a review decision, forged forms, sign-out. Screenshots of every page
go to test-artifacts/console/ (CI keeps them). Plain HTTP checks of the cookie flags and security headers beside."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from playwright.async_api import BrowserContext

from api.app import create_app
from api.console.sessions import SessionStore
from payloop.db import utcnow
from players import audit
from tests.e2e.conftest import API_KEY, OTHER_CLIENT_KEY, Stack, free_port, new_player, serve
from tests.e2e.console_helpers import SESSION_COOKIE, console_http, session_cookie, shot, sign_in

async def test_sign_in_refuses_a_wrong_key_and_a_key_without_ops_scope(stack: Stack, context: BrowserContext) -> None:
    page = await context.new_page()
    for key in ("not-a-key", OTHER_CLIENT_KEY):
        await page.goto(f"{stack.settings.api_url}/ops/login")
        await page.get_by_label("API key with the ops scope").fill(key)
        async with page.expect_response(lambda r: r.request.method == "POST") as posted:
            await page.get_by_role("button", name="Sign in").click()
        assert (await posted.value).status == 401
        await page.get_by_role("alert").wait_for()
        assert await page.get_by_role("alert").inner_text() == "This key cannot sign in to the ops console."
    await shot(page, stack, "login-refused")
    assert not [c for c in await context.cookies() if c["name"] == SESSION_COOKIE]


async def test_sign_in_sets_a_strict_http_only_session_cookie_and_sign_out_ends_it(
    stack: Stack, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, stack)
    await page.get_by_role("heading", name="Overview").wait_for()
    assert page.url == f"{stack.settings.api_url}/ops"
    await shot(page, stack, "overview")
    cookie = await session_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ops"
    assert len(cookie["value"]) >= 40 and cookie["expires"] > 0
    async with console_http(stack, cookie["value"]) as http:
        assert (await http.get("/ops/psps")).status_code == 200
        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_role("heading", name="Sign in to the ops console").wait_for()
        # The old token no longer opens anything, even to a client that kept it.
        after = await http.get("/ops/psps")
        assert after.status_code == 303 and after.headers["location"] == "/ops/login"


async def test_payment_search_finds_a_deposit_and_links_its_temporal_history(
    stack: Stack, context: BrowserContext
) -> None:
    player = new_player()
    init = await stack.deposit(method="ewallet", player_id=player)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited"
    page = await context.new_page()
    await sign_in(page, stack)
    await page.get_by_role("link", name="Payments", exact=True).click()
    await page.get_by_label("Player id").fill(player)
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("link", name=payment["payment_id"]).wait_for()
    await shot(page, stack, "payments-search")
    # The PSP's reference finds it too.
    await page.goto(f"{stack.settings.api_url}/ops/payments")
    await page.get_by_label("PSP reference").fill(payment["psp_reference"])
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("link", name=payment["payment_id"]).click()
    await page.get_by_role("heading", name=f"Payment {payment['payment_id']}").wait_for()
    assert await page.locator("dd.status").inner_text() == "credited"
    history = page.get_by_role("link", name="Temporal UI history")
    assert await history.get_attribute("href") == payment["temporal_ui_url"]
    assert payment["temporal_ui_url"].endswith(f"/workflows/deposit-{payment['payment_id']}")
    await shot(page, stack, "payment")


async def test_a_review_decision_from_the_console_credits_a_deposit_held_for_review(
    stack: Stack, context: BrowserContext
) -> None:
    player = new_player()
    init = await stack.deposit(method="card", scenario="wrong_amount", player_id=player)
    held = await stack.wait_final(init["payment_id"])
    assert held["status"] == "in_review" and held["review_reason"] == "amount_mismatch"
    page = await context.new_page()
    await sign_in(page, stack)
    await page.get_by_role("link", name="Review queues").click()
    await page.get_by_role("link", name=held["payment_id"]).wait_for()
    await shot(page, stack, "reviews")
    await page.get_by_role("link", name=held["payment_id"]).click()
    await page.get_by_label("Decision", exact=True).select_option("approve")
    await page.get_by_label("Reviewer", exact=True).fill("jane.doe")
    await page.get_by_label("Reason", exact=True).fill("PSP report checked")
    await page.get_by_role("button", name="Send decision").click()
    await page.get_by_role("heading", name=f"Payment {held['payment_id']}").wait_for()
    assert await page.locator("dd.status").inner_text() == "credited"
    await shot(page, stack, "payment-approved")
    credited = await stack.payment(held["payment_id"])
    assert credited["status"] == "credited" and credited["credited_amount"] == credited["captured_amount"]
    assert await stack.balance(player) == credited["credited_amount"]
    entries = await audit.entries(stack.engine, f"payment:{held['payment_id']}")
    assert [(e["action"], e["actor"]) for e in entries] == [("payment.review.approve", "casino-a (console)/jane.doe")]
    await stack.check_invariants()


async def test_a_forged_form_is_refused_and_changes_nothing(stack: Stack, context: BrowserContext) -> None:
    init = await stack.deposit(method="card", scenario="wrong_amount")
    payment_id = init["payment_id"]
    assert (await stack.wait_final(payment_id))["status"] == "in_review"
    page = await context.new_page()
    await sign_in(page, stack)
    await page.goto(f"{stack.settings.api_url}/ops/payments/{payment_id}")
    csrf_token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    cookie = (await session_cookie(context))["value"]
    decision = {"decision": "reject", "reviewer": "mallory", "reason": "forged"}
    own_origin = {"Origin": stack.settings.api_url}
    forgeries = [
        ({}, own_origin),  # no token
        ({"csrf_token": "0" * len(csrf_token)}, own_origin),  # a wrong one
        ({"csrf_token": csrf_token}, {"Origin": "https://evil.example"}),  # the right one, from another site
        ({"csrf_token": csrf_token}, {}),  # the right one, from nowhere said
    ]
    async with console_http(stack, cookie) as http:
        for token, headers in forgeries:
            refused = await http.post(f"/ops/payments/{payment_id}/review", data={**decision, **token},
                                      headers=headers)
            assert refused.status_code == 403, (token, headers)
            assert "Form refused" in refused.text
        # A form of another session's token is refused too (the token is bound to the session).
        async with console_http(stack) as stranger:
            refused = await stranger.post(f"/ops/payments/{payment_id}/review",
                                          data={**decision, "csrf_token": csrf_token}, headers=own_origin)
            assert refused.status_code == 303 and refused.headers["location"] == "/ops/login"
    still = await stack.payment(payment_id)
    assert still["status"] == "in_review" and still["reviewed_by"] is None
    assert await audit.entries(stack.engine, f"payment:{payment_id}") == []


async def test_every_page_renders_signed_in_and_redirects_signed_out(stack: Stack, context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_in(page, stack)
    for path, heading in (("/ops/dead-letters", "Dead letters"), ("/ops/recon", "Reconciliation cases"),
                          ("/ops/psps", "PSP health")):
        await page.goto(f"{stack.settings.api_url}{path}")
        await page.get_by_role("heading", name=heading, exact=True).wait_for()
        await shot(page, stack, path.rsplit("/", 1)[-1])
    await page.goto(f"{stack.settings.api_url}/ops/payments/pay_{'0' * 24}")
    await page.get_by_role("heading", name="Payment not found").wait_for()
    async with console_http(stack) as http:
        for path in ("/ops", "/ops/payments", "/ops/reviews", "/ops/dead-letters", "/ops/recon", "/ops/psps",
                     f"/ops/payments/pay_{'0' * 24}"):
            response = await http.get(path)
            assert (response.status_code, response.headers.get("location")) == (303, "/ops/login"), path


async def test_console_pages_carry_the_security_headers(stack: Stack) -> None:
    async with console_http(stack) as http:
        for path in ("/ops/login", "/ops", "/ops/static/console.css"):
            response = await http.get(path)
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
        assert (await http.get("/ops/static/console.css")).headers["content-type"].startswith("text/css")
        # The JSON API is not the console: its responses keep their own headers.
        assert "content-security-policy" not in (await http.get("/healthz")).headers
        page = (await http.get("/ops/login")).text
        assert not re.search(r"<script|https?://", page)  # nothing loaded, nothing from elsewhere


async def test_the_session_cookie_is_secure_by_default(stack: Stack) -> None:
    settings = stack.settings.model_copy(update={"console_cookie_secure": True, "api_port": free_port()})
    async with serve(create_app(settings, engine=stack.engine, temporal=stack.client), settings.api_port):
        async with httpx.AsyncClient(base_url=settings.api_url) as http:
            response = await http.post("/ops/login", data={"api_key": API_KEY},
                                       headers={"Origin": settings.api_url})
    assert response.status_code == 303
    flags = {part.strip().split("=", 1)[0].lower(): part.strip() for part in
             response.headers["set-cookie"].split(";")}
    assert {"secure", "httponly", "samesite", "path", "max-age"} <= flags.keys()
    assert flags["samesite"].lower() == "samesite=strict" and flags["path"] == "Path=/ops"
    assert flags["max-age"] == f"Max-Age={settings.console_session_absolute_seconds}"


async def test_a_sign_in_form_from_another_site_is_refused(stack: Stack) -> None:
    async with console_http(stack) as http:
        response = await http.post("/ops/login", data={"api_key": API_KEY}, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and "set-cookie" not in response.headers


async def test_a_session_ends_when_idle_and_at_its_absolute_expiry(stack: Stack, context: BrowserContext) -> None:
    store = SessionStore(stack.engine, idle_seconds=stack.settings.console_session_idle_seconds,
                         absolute_seconds=stack.settings.console_session_absolute_seconds)
    now = utcnow()
    idle_token, _ = await store.open("casino-a", now)
    assert await store.find(idle_token, now + timedelta(seconds=60)) is not None
    assert await store.find(idle_token, now + timedelta(seconds=stack.settings.console_session_idle_seconds + 61)) \
        is None
    # Kept busy, a session still ends at its absolute expiry.
    busy_token, _ = await store.open("casino-a", now)
    step = timedelta(seconds=stack.settings.console_session_idle_seconds // 2)
    moment = now
    while moment + step < now + timedelta(seconds=stack.settings.console_session_absolute_seconds):
        moment += step
        assert await store.find(busy_token, moment) is not None
    assert await store.find(busy_token, now + timedelta(seconds=stack.settings.console_session_absolute_seconds)) \
        is None
    async with console_http(stack, busy_token) as http:
        assert (await http.get("/ops")).status_code == 303
