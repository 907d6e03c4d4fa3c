"""The players' checkout (/checkout) in a real browser — the system's Chromium driven by Playwright — against the
real stack (API, sandbox PSPs, worker, Temporal): deposits by every method to their final status page, a decline, a
double submit, a withdrawal, a deposit and a withdrawal waiting for the player's identity check, responsible-gaming
limits and blocks, the four languages, keyboard only, refused forms and URLs, the status page's polling (slower
over time, a 429 waited out, a gone link left alone), the checkout in another site's iframe, no cookies and a small
first page, a right-to-left layout. Every page is checked with axe and kept as a screenshot
(test-artifacts/checkout/); every test checks the API and the ledger, not only the page. A test that must see a
payment before its outcome opens its session on the stack's API served again with long waits (PATIENT).

SQLite only to keep CI short, but for the frictionless card deposit, which runs on PostgreSQL too."""

from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from playwright.async_api import Browser, BrowserContext, Page, Request, Response, expect
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse
from starlette.routing import Route

from api.checkout import i18n, messages
from api.checkout.sessions import CheckoutSessions
from api.models import checkout_sessions
from payloop.db import utcnow
from tests.conftest import BACKENDS
from tests.e2e.a11y import focused_description, has_visible_focus, tab_until
from tests.e2e.checkout_helpers import (
    PATIENT, RETURN_URL, Checkout, checkout_api, choose, deposit_button, deposits_of, enter_amount, expect_outcome,
    look, new_page, open_checkout, open_session,
)
from tests.e2e.conftest import Stack, free_port, new_player, serve
from tests.e2e.test_payouts import assert_settled, funded_player, get_payout, set_kyc

SQLITE = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)

EN = i18n.language("en")
DE = i18n.language("de")
CREDITED = messages.DEPOSIT_STATUSES["credited"]


def announcement(lang: i18n.Language, outcome: messages.Outcome) -> str:
    """What the status page's live region says when the payment gets to `outcome`."""
    return f"{lang.gettext(outcome.title)}. {lang.gettext(outcome.detail)}"


async def reference_on(page: Page) -> str:
    """The payment's or payout's id, as the status page shows it."""
    return (await page.locator(".facts code").inner_text()).strip()


async def deposit_on_checkout(page: Page, lang: i18n.Language, *, method: str, scenario: str | None = None,
                              amount_minor: int = 5000) -> None:
    """From the first step to the form's submission: the amount as the player types it in `lang`, the method (and
    the sandbox's scenario), submit."""
    await enter_amount(page, lang.decimal_input(amount_minor, "EUR"), lang)
    await choose(page, lang, method=method, scenario=scenario)
    await deposit_button(page, lang, amount_minor).click()


@pytest.mark.parametrize("stack", BACKENDS, indirect=True)
async def test_card_frictionless_deposit_updates_the_status_page_live(stack: Stack, context: BrowserContext) -> None:
    # The webhook is held until the status page shows the payment in progress, and the deposit waits for it
    # (PATIENT) rather than asking the card PSP after 2 s: what follows is the page's own polling, not a page
    # rendered after the credit, however slow the machine.
    async with checkout_api(stack, **PATIENT) as api:
        checkout = await open_session(stack, api=api, locale="de")
        name = f"card-{stack.backend}"
        page = await open_checkout(context, checkout, f"{name}-amount")
        assert await page.locator("html").get_attribute("lang") == "de"
        await enter_amount(page, "50,00", DE)  # typed the German way
        assert await page.locator(".amount-line strong").inner_text() == DE.money(5000, "EUR")
        await look(page, f"{name}-methods")
        await choose(page, DE, method="Card", scenario="Approve (frictionless)")
        async with stack.webhooks_held():
            await deposit_button(page, DE).click()
            await page.wait_for_url("**/attempts/**")
            await expect_outcome(page, DE, "Payment in progress")
            await page.evaluate("window.sameDocument = true")  # a reload would lose it
        await expect_outcome(page, DE, "Deposit successful")
        assert await page.evaluate("window.sameDocument") is True
        await expect(page.get_by_role("status")).to_have_text(announcement(DE, CREDITED))
        await look(page, f"{name}-credited")

        payment_id = await reference_on(page)
        assert await stack.balance(checkout.player_id) == "50.00"
        [listed] = await deposits_of(stack, checkout.player_id)
        assert (listed["payment_id"], listed["status"], listed["method"]) == (payment_id, "credited", "card")
        back = urlsplit(await page.get_by_role("link", name=DE.gettext("Back to the casino")).get_attribute("href"))
        assert back._replace(query="").geturl() == "https://casino.example/cashier"
        assert parse_qs(back.query) == {"x": ["1"], "payment_id": [payment_id], "status": ["credited"]}
        await stack.check_invariants()


@SQLITE
async def test_card_challenge_is_credited_and_a_failed_one_offers_to_try_again(
    stack: Stack, context: BrowserContext
) -> None:
    checkout = await open_session(stack)
    page = await open_checkout(context, checkout, "challenge-amount")
    await deposit_on_checkout(page, EN, method="Card", scenario="3-D Secure challenge")
    await page.get_by_role("button", name="Authenticate").wait_for()  # the sandbox's 3-D Secure page
    assert page.url.startswith(stack.settings.sandbox_psp_url)
    await look(page, "challenge-3ds-page")
    await page.get_by_role("button", name="Authenticate").click()
    await page.wait_for_url(f"{checkout.url}/attempts/**")
    await expect_outcome(page, EN, "Deposit successful")
    await look(page, "challenge-credited")
    credited_id = await reference_on(page)
    assert (await stack.payment(credited_id))["status"] == "credited"

    await page.goto(checkout.url)
    await deposit_on_checkout(page, EN, method="Card", scenario="3-D Secure fails")
    await page.get_by_role("button", name="Authenticate").click()  # the scenario fails it all the same
    await expect_outcome(page, EN, "Authentication failed")
    await expect(page.locator("#status-panel")).to_contain_text(
        EN.gettext(messages.DEPOSIT_FAILURES["3ds_failed"].detail))
    await look(page, "challenge-3ds-failed")
    failed = await stack.payment(await reference_on(page))
    assert (failed["status"], failed["failure_code"]) == ("failed", "3ds_failed")
    # Try again: the methods for the same amount, a fresh form.
    await page.get_by_role("link", name=EN.gettext("Try again")).click()
    await expect(page.locator(".amount-line strong")).to_have_text(EN.money(5000, "EUR"))
    await page.get_by_role("radio", name=EN.gettext("Card")).wait_for()
    assert await stack.balance(checkout.player_id) == "50.00"
    await stack.check_invariants()


@SQLITE
async def test_ewallet_deposit_is_credited(stack: Stack, context: BrowserContext) -> None:
    checkout = await open_session(stack)
    page = await open_checkout(context, checkout, "ewallet-amount")
    await deposit_on_checkout(page, EN, method="E-wallet", scenario="Approve (frictionless)", amount_minor=2500)
    await expect_outcome(page, EN, "Deposit successful")
    await look(page, "ewallet-credited")
    payment = await stack.payment(await reference_on(page))
    assert (payment["status"], payment["method"], payment["amount"]) == ("credited", "ewallet", "25.00")
    assert await stack.balance(checkout.player_id) == "25.00"
    await stack.check_invariants()


@SQLITE
async def test_pay_by_bank_deposit_goes_through_the_banks_page(stack: Stack, context: BrowserContext) -> None:
    checkout = await open_session(stack)
    page = await open_checkout(context, checkout, "bank-amount")
    await deposit_on_checkout(page, EN, method="Pay by bank")
    await page.get_by_role("button", name="Authorise payment").wait_for()  # the sandbox bank's page
    assert page.url.startswith(stack.settings.sandbox_psp_url)
    await look(page, "bank-page")
    await page.get_by_label("Bank").select_option("Demo Sparkasse")
    await page.get_by_role("button", name="Authorise payment").click()
    await page.wait_for_url(f"{checkout.url}/attempts/**")
    await expect_outcome(page, EN, "Deposit successful")
    await look(page, "bank-credited")
    payment = await stack.payment(await reference_on(page))
    assert (payment["status"], payment["method"], payment["psp"]) == ("credited", "bank_transfer", "paybybank")
    assert await stack.balance(checkout.player_id) == "50.00"
    await stack.check_invariants()


@SQLITE
async def test_crypto_deposit_status_page_follows_the_confirmations(stack: Stack, context: BrowserContext) -> None:
    async with checkout_api(stack, **PATIENT) as api:  # the deposit waits for the held confirmations
        checkout = await open_session(stack, api=api)
        page = await open_checkout(context, checkout, "crypto-amount")
        async with stack.webhooks_held():  # the chain's confirmations come once the page shows the payment waiting
            await deposit_on_checkout(page, EN, method="Crypto", scenario="Approve (frictionless)")
            await page.wait_for_url("**/attempts/**")
            await expect_outcome(page, EN, "Payment in progress")
            await look(page, "crypto-in-progress")
            await page.evaluate("window.sameDocument = true")
        await expect_outcome(page, EN, "Deposit successful")
        assert await page.evaluate("window.sameDocument") is True
        await expect(page.get_by_role("status")).to_have_text(announcement(EN, CREDITED))
        await look(page, "crypto-credited")
        payment = await stack.payment(await reference_on(page))
        assert (payment["status"], payment["psp"]) == ("credited", "crypto")
        assert await stack.balance(checkout.player_id) == "50.00"
        await stack.check_invariants()


# Under Playwright's clock, what the status page's script does: each wait it asks setTimeout for, each look at the
# payment (a fetch) and each answer's status. Added after the clock's own init scripts, so the setTimeout it records
# is the clock's (`clocked` says so); Playwright's injected scripts keep the real one.
RECORD_POLLING = """(() => {
    window.__polling = {clocked: Boolean(window.__pwClock), waits: [], looks: 0, answers: []};
    const record = window.__polling;
    const setTimeoutOfClock = window.setTimeout;
    window.setTimeout = (callback, ms, ...rest) => {
        record.waits.push(ms);
        return setTimeoutOfClock(callback, ms, ...rest);
    };
    const fetchOfPage = window.fetch;
    window.fetch = (...args) => {
        record.looks += 1;
        return fetchOfPage(...args).then(answer => { record.answers.push(answer.status); return answer; });
    };
})()"""


async def polling(page: Page) -> dict[str, Any]:
    return await page.evaluate("window.__polling")


async def waits_become(page: Page, waits: list[int]) -> None:
    """The script has asked for exactly `waits` so far (each asked once its look's answer is read)."""
    await page.wait_for_function("n => window.__polling.waits.length >= n", arg=len(waits), polling=20)
    assert (await polling(page))["waits"] == waits


@SQLITE
async def test_the_status_page_looks_less_often_over_time_waits_out_a_429_and_stops_once_the_link_is_gone(
    stack: Stack, browser: Browser
) -> None:
    clocked = await browser.new_context()
    plain = await browser.new_context()  # axe runs on the page's own timers: not under a paused clock
    try:
        start = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
        await clocked.clock.install(time=start)
        await clocked.clock.pause_at(start + timedelta(seconds=1))  # time moves only when the test moves it
        await clocked.add_init_script(RECORD_POLLING)
        # Six requests an hour: the form (1), its post (2), the status page (3) and three looks; the fourth is 429.
        async with checkout_api(stack, rate_limit_checkout="6/hour", **PATIENT) as api:
            checkout = await open_session(stack, api=api, amount="50.00")
            page = await new_page(clocked)
            await page.goto(checkout.url)
            await choose(page, EN, method="E-wallet", scenario="Approve (frictionless)")
            async with stack.webhooks_held():  # the payment stays in progress until the block ends
                await deposit_button(page, EN).click()
                await page.wait_for_url("**/attempts/**")
                await expect_outcome(page, EN, "Payment in progress")
                assert (await polling(page))["clocked"]
                await waits_become(page, [1000])
                await clocked.clock.run_for(1000)
                await waits_become(page, [1000, 1000])  # every second for the first 30 s
                await clocked.clock.fast_forward(29_000)
                await waits_become(page, [1000, 1000, 3000])  # then every 3 s
                await clocked.clock.fast_forward(90_000)
                await waits_become(page, [1000, 1000, 3000, 15_000])  # after two minutes, every 15 s

                async with page.expect_response("**/status") as limited:
                    await clocked.clock.run_for(15_000)
                retry_after_seconds = int((await limited.value).headers["retry-after"])
                await waits_become(page, [1000, 1000, 3000, 15_000, retry_after_seconds * 1000])
                await clocked.clock.run_for(retry_after_seconds * 1000 - 1)
                assert (await polling(page))["looks"] == 4  # none before the Retry-After
                await open_checkout(plain, checkout, "rate-limited", expect_status=429)

                # The session's row gone, its link answers 410: the script stops looking.
                async with stack.engine.begin() as conn:
                    await conn.execute(checkout_sessions.delete().where(
                        checkout_sessions.c.session_id == checkout.session_id))
                await clocked.clock.run_for(1)
                await page.wait_for_function("() => window.__polling.answers.length === 5", polling=20)
                await clocked.clock.run_for(3_600_000)
                record = await polling(page)
                assert (record["answers"], record["looks"]) == ([200, 200, 200, 429, 410], 5)
                assert len(record["waits"]) == 5  # nothing asked after the 410
            await expect_outcome(page, EN, "Payment in progress")  # what the page last knew
        payment = await stack.wait_final(await reference_on(page))
        assert payment["status"] == "credited"
        assert await stack.balance(checkout.player_id) == "50.00"
    finally:
        await clocked.close()
        await plain.close()
    await stack.check_invariants()


def casino_site(checkout_url: str) -> Starlette:
    """A casino's two pages: /casino holds the checkout in an iframe, /casino/return is where the player comes back."""

    async def cashier(_request: HttpRequest) -> HTMLResponse:
        return HTMLResponse(f'<!doctype html><html lang="en"><head><title>Casino</title></head><body><main>'
                            f'<h1>Casino</h1><iframe src="{html.escape(checkout_url)}" title="Cashier" width="760" '
                            f'height="800"></iframe></main></body></html>')

    async def back(_request: HttpRequest) -> HTMLResponse:
        return HTMLResponse('<!doctype html><html lang="en"><head><title>Casino</title></head><body><main>'
                            '<h1>Welcome back</h1></main></body></html>')

    return Starlette(routes=[Route("/casino", cashier), Route("/casino/return", back)])


@SQLITE
async def test_an_embedded_checkout_pays_in_the_casino_s_frame_and_goes_back_to_the_whole_casino_page(
    stack: Stack, context: BrowserContext
) -> None:
    # The casino at localhost, the checkout at 127.0.0.1: another site, so the frame is a third party's.
    port = free_port()
    casino = f"http://localhost:{port}"
    checkout = await open_session(stack, return_url=f"{casino}/casino/return")
    assert urlsplit(checkout.url).hostname == "127.0.0.1"
    async with serve(casino_site(checkout.url), port):
        page = await new_page(context)
        await page.goto(f"{casino}/casino")
        frame = page.frame_locator('iframe[title="Cashier"]')
        await enter_amount(frame, "50.00", EN)
        await choose(frame, EN, method="E-wallet", scenario="Approve (frictionless)")
        await deposit_button(frame, EN).click()
        await expect_outcome(frame, EN, "Deposit successful")
        await look(page, "embedded-credited")
        payment_id = (await frame.locator(".facts code").inner_text()).strip()
        await frame.get_by_role("link", name=EN.gettext("Back to the casino")).click()
        await page.wait_for_url(f"{casino}/casino/return?**")  # the whole page, not the frame
        await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome back")
        assert await page.locator("iframe").count() == 0
    assert parse_qs(urlsplit(page.url).query) == {"payment_id": [payment_id], "status": ["credited"]}
    assert await context.cookies() == []
    assert (await stack.payment(payment_id))["status"] == "credited"
    assert await stack.balance(checkout.player_id) == "50.00"
    await stack.check_invariants()


@SQLITE
async def test_a_declined_card_says_what_to_do_and_moves_no_money(stack: Stack, context: BrowserContext) -> None:
    checkout = await open_session(stack)
    page = await open_checkout(context, checkout, "decline-amount")
    await deposit_on_checkout(page, EN, method="Card", scenario="Decline")
    await expect_outcome(page, EN, "Card declined")
    declined = messages.DEPOSIT_FAILURES["card_declined"]
    await expect(page.locator("#status-panel")).to_contain_text(EN.gettext(declined.detail))
    await look(page, "decline-status")
    # What happened in words, never the PSP's code.
    assert "card_declined" not in await page.locator("body").inner_text()
    assert "card_declined" not in await page.content()
    payment = await stack.payment(await reference_on(page))
    assert (payment["status"], payment["failure_code"]) == ("failed", "card_declined")
    # What to do: another method, for the same amount.
    await page.get_by_role("link", name=EN.gettext("Choose another method")).click()
    await expect(page.locator(".amount-line strong")).to_have_text(EN.money(5000, "EUR"))
    await look(page, "decline-other-method")
    assert await stack.balance(checkout.player_id) == "0.00"
    await stack.check_invariants()


async def _one_credited_deposit(stack: Stack, page: Page, player_id: str) -> None:
    """The page reaches the credited status and the player has exactly one deposit, credited once."""
    await expect_outcome(page, EN, "Deposit successful")
    payment_id = await reference_on(page)
    assert [p["payment_id"] for p in await deposits_of(stack, player_id)] == [payment_id]
    assert [w.id async for w in stack.client.list_workflows(f"PlayerId = '{player_id}'")] == [
        f"deposit-{payment_id}"]
    assert await stack.balance(player_id) == "50.00"


# Two POSTs of the form's data at once, as a browser resending it or a script of the player's would: the page's own
# script is not asked. Each answer's status and the URL it ended at (its redirect followed).
POST_TWICE = """async () => {
    const form = document.querySelector("form[data-once]");
    const body = new URLSearchParams(new FormData(form));
    const send = () => fetch(form.action, {method: "POST", body});
    return (await Promise.all([send(), send()])).map(answer => [answer.status, answer.url]);
}"""
# Two submit events in a row, as a second click or Enter while the first is on its way gives: whether each was
# cancelled by the time a listener after the page's script sees it, and the button's state.
SUBMIT_TWICE = """() => {
    const form = document.querySelector("form[data-once]");
    const cancelled = [];
    form.addEventListener("submit", event => cancelled.push(event.defaultPrevented));
    form.requestSubmit();
    form.requestSubmit();
    return [cancelled, form.querySelector("button[type=submit]").getAttribute("aria-disabled")];
}"""


@SQLITE
async def test_a_double_submitted_deposit_pays_once(stack: Stack, context: BrowserContext) -> None:
    clicked = await open_session(stack)
    page = await open_checkout(context, clicked, "double-click-amount")
    await enter_amount(page, "50.00", EN)
    await choose(page, EN, method="Card", scenario="Approve (frictionless)")
    posts: list[Request] = []
    page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
    await deposit_button(page, EN).dblclick()  # a real double click: one request reaches the server
    await page.wait_for_url("**/attempts/**")
    await _one_credited_deposit(stack, page, clicked.player_id)
    assert len(posts) == 1, [p.url for p in posts]

    # The same form posted twice at once past the page's script, then submitted by the page as well: three
    # requests of one attempt, one payment.
    sent_thrice = await open_session(stack)
    page = await open_checkout(context, sent_thrice, "double-post-amount")
    await enter_amount(page, "50.00", EN)
    await choose(page, EN, method="Card", scenario="Approve (frictionless)")
    [(first_status, first_url), (second_status, second_url)] = await page.evaluate(POST_TWICE)
    assert first_status == second_status == 200 and first_url == second_url, (first_url, second_url)
    assert first_url.startswith(f"{sent_thrice.url}/attempts/")
    # The page's script sends its form once: the second submit event is cancelled, the button marked busy.
    assert await page.evaluate(SUBMIT_TWICE) == [[False, True], "true"]
    await page.wait_for_url(first_url)
    await _one_credited_deposit(stack, page, sent_thrice.player_id)
    await look(page, "double-post-credited")
    await stack.check_invariants()


@SQLITE
async def test_a_withdrawal_goes_back_to_the_deposits_method(stack: Stack, context: BrowserContext) -> None:
    # A credited card deposit, played through once (money passed straight back out would go to AML review).
    player = await funded_player(stack, "50.00", method="card")
    checkout = await open_session(stack, player_id=player, locale="de")
    page = await open_checkout(context, checkout, "withdraw-from-deposit-page")
    await page.get_by_role("link", name=DE.gettext("Withdraw"), exact=True).click()
    await expect(page.locator(".balance strong")).to_have_text(DE.money(5000, "EUR"))
    destination = page.get_by_role("region", name=DE.gettext("Paid to"))
    await expect(destination.locator("strong")).to_have_text(DE.gettext("Card"))
    await look(page, "withdraw-form-de")
    await page.get_by_label(DE.gettext("Amount"), exact=True).fill("10,00")
    await page.get_by_label(DE.gettext("Sandbox test scenario")).select_option(label=DE.gettext("Pay out"))
    await page.get_by_role("button", name=DE.gettext("Withdraw")).click()
    await page.wait_for_url(f"{checkout.url}/attempts/**")
    await expect_outcome(page, DE, "Withdrawal sent")
    await look(page, "withdraw-sent-de")
    payout = await get_payout(stack, await reference_on(page))
    assert (payout["status"], payout["amount"], payout["method"]) == ("paid", "10.00", "card")
    await assert_settled(stack, payout)
    assert await stack.balance(player) == "40.00"
    await stack.check_invariants()


@SQLITE
async def test_a_deposit_waits_for_the_identity_check_and_its_page_follows_it_to_the_credit(
    stack: Stack, browser: Browser, context: BrowserContext
) -> None:
    waiting = messages.DEPOSIT_STATUSES["kyc_required"]
    without_script = await browser.new_context(java_script_enabled=False)
    try:
        # GB asks for a verified identity before the first deposit (risk/rules.yaml, markets); the deposit waits
        # for it (PATIENT: as long as the test needs, not the stack's 8 s).
        async with checkout_api(stack, **PATIENT) as api:
            checkout = await open_session(stack, api=api, country="GB")
            page = await open_checkout(context, checkout, "kyc-deposit-amount")
            await deposit_on_checkout(page, EN, method="E-wallet", scenario="Approve (frictionless)")
            await page.wait_for_url("**/attempts/**")
            await expect_outcome(page, EN, waiting.title)
            await expect(page.locator("#status-panel")).to_contain_text(EN.gettext(waiting.detail))
            await look(page, "kyc-deposit-waiting")
            payment_id = await reference_on(page)
            assert (await stack.payment(payment_id))["status"] == "kyc_required"

            # Without script the page does not reload itself: a link does, when the player wants.
            still = await without_script.new_page()
            await still.goto(page.url)
            assert await still.locator('meta[http-equiv="refresh"]').count() == 0
            refresh = still.get_by_role("link", name=EN.gettext("Refresh status"))
            assert await refresh.get_attribute("href") == urlsplit(page.url).path
            await refresh.click()
            await expect(still.locator("#outcome-title")).to_contain_text(EN.gettext(waiting.title))

            # Verified by the ops API: the page follows the deposit to its credit, and the focus the player had in
            # the panel (its title) moves to the new panel's title.
            await page.locator("#outcome-title").focus()
            await page.evaluate("window.sameDocument = true")
            await set_kyc(stack, checkout.player_id, "verified")
            await expect_outcome(page, EN, "Deposit successful")
            await expect(page.locator("#outcome-title")).to_be_focused()
            assert await page.evaluate("window.sameDocument") is True
            await look(page, "kyc-deposit-credited")
    finally:
        await without_script.close()
    assert (await stack.payment(payment_id))["status"] == "credited"
    assert await stack.balance(checkout.player_id) == "50.00"
    await stack.check_invariants()


@SQLITE
async def test_a_withdrawal_waits_for_the_identity_check_where_the_market_asks_for_it(
    stack: Stack, context: BrowserContext
) -> None:
    waiting = messages.PAYOUT_STATUSES["kyc_required"]
    player = await funded_player(stack, "50.00", kyc=None)  # deposited in DE, where that needs no identity check
    async with checkout_api(stack, **PATIENT) as api:  # the payout waits as long as the test needs
        checkout = await open_session(stack, api=api, player_id=player, country="GB")  # GB: kyc_before_payout
        page = await open_checkout(context, checkout, "kyc-withdraw-form", path="/withdraw")
        await page.get_by_label(EN.gettext("Amount"), exact=True).fill("10.00")
        await page.get_by_label(EN.gettext("Sandbox test scenario")).select_option(label=EN.gettext("Pay out"))
        await page.get_by_role("button", name=EN.gettext("Withdraw")).click()
        await page.wait_for_url(f"{checkout.url}/attempts/**")
        await expect_outcome(page, EN, waiting.title)
        await expect(page.locator("#status-panel")).to_contain_text(EN.gettext(waiting.detail))
        await look(page, "kyc-withdraw-waiting")  # a payout's status page that is not final
        payout_id = await reference_on(page)
        assert (await get_payout(stack, payout_id))["status"] == "kyc_required"
        await set_kyc(stack, player, "verified")
        await expect_outcome(page, EN, "Withdrawal sent")
    payout = await get_payout(stack, payout_id)
    assert (payout["status"], payout["amount"]) == ("paid", "10.00")
    await assert_settled(stack, payout)
    assert await stack.balance(player) == "40.00"
    await stack.check_invariants()


@SQLITE
async def test_refused_forms_and_pages_without_a_form_pass_axe(stack: Stack, context: BrowserContext) -> None:
    # A deposit form sent without a method (its radios unchecked behind the page's back): a 422 page whose error
    # summary leads to the methods and whose error each radio is described by.
    checkout = await open_session(stack)
    page = await open_checkout(context, checkout, "refused-amount")
    await enter_amount(page, "50.00", EN)
    await page.evaluate("() => document.querySelectorAll('input[name=method]').forEach(r => { r.checked = false; })")
    async with page.expect_response(f"{checkout.url}/deposits") as answer:
        await deposit_button(page, EN).click()
    assert (await answer.value).status == 422
    await expect(page.locator(".error-summary")).to_be_focused()
    await expect(page.locator(".error-summary a")).to_have_attribute("href", "#method-options")
    for radio in await page.locator("input[name=method]").all():
        assert "method-error" in (await radio.get_attribute("aria-describedby") or "").split()
    await look(page, "refused-deposit-method")
    # Nothing to withdraw: the new player has no balance.
    await page.get_by_role("link", name=EN.gettext("Withdraw"), exact=True).click()
    await expect(page.locator(".notice")).to_have_text(
        EN.gettext("There is nothing to withdraw in %(currency)s.") % {"currency": "EUR"})
    await look(page, "nothing-to-withdraw")
    # No such page.
    await open_checkout(context, checkout, "not-found", path="/nope", expect_status=404)

    # A withdrawal over the balance: a 422 page with the amount refused.
    player = await funded_player(stack, "20.00")
    page = await open_checkout(context, await open_session(stack, player_id=player), "over-balance-form",
                               path="/withdraw")
    await page.get_by_label(EN.gettext("Amount"), exact=True).fill("20.01")
    async with page.expect_response("**/payouts") as answer:
        await page.get_by_role("button", name=EN.gettext("Withdraw")).click()
    assert (await answer.value).status == 422
    await expect(page.locator(".error-summary")).to_contain_text(EN.gettext(messages.form_error("over_balance")))
    await expect(page.locator("#amount")).to_have_attribute("aria-invalid", "true")
    await look(page, "refused-withdrawal-amount")
    # An amount the session fixes is text: no label names a control that is not there.
    page = await open_checkout(context, await open_session(stack, player_id=player, amount="10.00"),
                               "withdraw-fixed-amount", path="/withdraw")
    await expect(page.locator(".amount-line")).to_have_text(f"{EN.gettext('Amount')}: {EN.money(1000, 'EUR')}")
    assert await page.locator('label[for="amount"]').count() == 0
    assert await stack.balance(player) == "20.00"
    await stack.check_invariants()


@SQLITE
async def test_deposit_limits_and_self_exclusion_are_explained(stack: Stack, context: BrowserContext) -> None:
    player = new_player()
    limit = await stack.api.put(f"/v1/players/{player}/deposit-limits",
                                json={"currency": "EUR", "period": "day", "amount": "100.00"})
    assert limit.status_code == 200, limit.text
    first = await stack.deposit(method="ewallet", amount="30.00", player_id=player)
    assert (await stack.wait_final(first["payment_id"]))["status"] == "credited"
    checkout = await open_session(stack, player_id=player)
    page = await open_checkout(context, checkout, "limits-amount")
    limits = page.get_by_role("region", name=EN.gettext("Your deposit limits"))
    await expect(limits).to_contain_text(EN.gettext("Daily limit"))
    await expect(limits).to_contain_text(EN.gettext("%(amount)s left") % {"amount": EN.money(7000, "EUR")})
    await deposit_on_checkout(page, EN, method="E-wallet", amount_minor=8000)
    await expect_outcome(page, EN, "Deposit limit reached")
    await expect(page.locator("#status-panel")).to_contain_text(
        EN.gettext(messages.DEPOSIT_CODES["deposit_limit_exceeded"].detail))
    await look(page, "limits-reached")
    refused = await stack.payment(await reference_on(page))
    assert (refused["status"], refused["failure_code"]) == ("rejected", "deposit_limit_exceeded")
    assert await stack.balance(player) == "30.00"

    excluded = new_player()
    response = await stack.api.post(f"/v1/players/{excluded}/self-exclusion", json={"until": None})
    assert response.status_code == 200, response.text
    blocked = await open_checkout(context, await open_session(stack, player_id=excluded), "self-excluded",
                                  expect_status=403)
    paused = messages.DEPOSIT_CODES["self_excluded"]
    await expect(blocked.get_by_role("heading", level=1)).to_have_text(EN.gettext(paused.title))
    await expect(blocked.locator("main")).to_contain_text(EN.gettext(paused.detail))
    assert await blocked.locator("form").count() == 0
    back = blocked.get_by_role("link", name=EN.gettext("Back to the casino"))
    assert (await back.get_attribute("href"), await back.get_attribute("target")) == (RETURN_URL, "_top")
    await stack.check_invariants()


async def _locale_page(page: Page, lang: i18n.Language, name: str) -> None:
    """The methods step in `lang`: its <html lang>, money the locale's way, a text from its catalog."""
    await expect(page.locator("html")).to_have_attribute("lang", lang.code)
    assert await page.title() == f"{lang.gettext('Deposit')} · {lang.gettext('Cashier')}"
    await expect(page.get_by_role("heading", level=1)).to_have_text(lang.gettext("Deposit"))
    await expect(page.locator(".amount-line strong")).to_have_text(lang.money(5000, "EUR"))
    await look(page, name)


@SQLITE
async def test_each_language_by_session_browser_and_link(stack: Stack, browser: Browser) -> None:
    # Babel's formats, whatever the catalogs hold: the page must show exactly these.
    assert [i18n.language(code).money(5000, "EUR") for code in ("en", "de", "fi", "es")] == [
        "€50.00", "50,00\xa0€", "50,00\xa0€", "50,00\xa0€"]
    english = await browser.new_context(locale="en-GB")
    finnish = await browser.new_context(locale="fi-FI")  # its Accept-Language: fi-FI
    try:
        # en: the browser's language, nothing set.
        page = await open_checkout(english, await open_session(stack), "locale-en-amount")
        await enter_amount(page, "50.00", EN)
        await _locale_page(page, EN, "locale-en")
        # es: the language link, reached and followed with the keyboard alone; the choice stays on the page.
        await tab_until(page, 'a[hreflang="es"]')
        await page.keyboard.press("Enter")
        await page.wait_for_url("**lang=es**")
        await _locale_page(page, i18n.language("es"), "locale-es")
        await expect(page.locator('form input[name="lang"]')).to_have_value("es")
        # de: the session's locale, though the browser asks for English.
        page = await open_checkout(english, await open_session(stack, locale="de"), "locale-de-amount")
        await enter_amount(page, "50,00", DE)
        await _locale_page(page, DE, "locale-de")
        # fi: the browser's Accept-Language.
        page = await open_checkout(finnish, await open_session(stack), "locale-fi-amount")
        fi = i18n.language("fi")
        await enter_amount(page, "50,00", fi)
        await _locale_page(page, fi, "locale-fi")
    finally:
        await english.close()
        await finnish.close()


@SQLITE
async def test_a_deposit_by_keyboard_alone(stack: Stack, context: BrowserContext) -> None:
    checkout = await open_session(stack)
    page = await open_checkout(context, checkout, "keyboard-amount")
    await page.keyboard.press("Tab")
    assert await focused_description(page) == f'a "{EN.gettext("Skip to content")}"'
    await look(page, "keyboard-skip-link")
    await page.keyboard.press("Enter")  # to the main content: the next Tab is its first field
    await page.keyboard.press("Tab")
    assert (await focused_description(page)).startswith("input#amount")
    # Sent empty: the refused form's error summary takes focus, and its link leads back to the field.
    await page.keyboard.press("Enter")
    await expect(page.locator(".error-summary")).to_be_focused()
    await expect(page.locator(".error-summary")).to_contain_text(EN.gettext("Enter an amount."))
    await look(page, "keyboard-amount-refused")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    assert (await focused_description(page)).startswith("input#amount")
    assert await has_visible_focus(page)
    await page.keyboard.type("50.00")
    await page.keyboard.press("Enter")
    await page.get_by_role("group", name=EN.gettext("Payment method")).wait_for()
    await tab_until(page, "input[type=radio]")  # the group's checked radio takes the Tab
    assert await has_visible_focus(page)
    for _ in range(4):  # the arrows move through the group (and check what they reach) until Card
        if await page.locator("#method-card:focus").count():
            break
        await page.keyboard.press("ArrowDown")
    await expect(page.locator("#method-card")).to_be_checked()
    await look(page, "keyboard-card-chosen")
    await tab_until(page, "button[type=submit]")
    assert await has_visible_focus(page)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/attempts/**")
    await expect_outcome(page, EN, "Deposit successful")
    await look(page, "keyboard-credited")
    payment = await stack.payment(await reference_on(page))
    assert (payment["status"], payment["method"]) == ("credited", "card")
    assert await stack.balance(checkout.player_id) == "50.00"
    await stack.check_invariants()


@SQLITE
async def test_a_changed_or_expired_link_opens_no_form(stack: Stack, context: BrowserContext) -> None:
    checkout = await open_session(stack)
    token = checkout.url.rsplit("/", 1)[1]
    # One character of the signed payload changed (the payload's characters all count; a signature's last one
    # may carry only padding bits).
    changed = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    page = await open_checkout(context, Checkout(checkout.player_id, checkout.url.replace(token, changed),
                                                 checkout.session_id), "link-changed", expect_status=403)
    await expect(page.get_by_role("heading", level=1)).to_have_text(EN.gettext("This link is not valid"))
    assert await page.locator("form").count() == 0

    settings = stack.settings
    sessions = CheckoutSessions(stack.engine, settings.checkout_signing_keys,
                                lifetime=timedelta(minutes=settings.checkout_session_minutes),
                                status_grace=timedelta(minutes=settings.checkout_status_grace_minutes))
    token, _ = await sessions.create(client_id="casino-a", player_id=new_player(), currency="EUR", amount_minor=None,
                                     country="DE", locale=None, return_url=RETURN_URL, may_withdraw=True,
                                     now=utcnow() - timedelta(minutes=31))
    expired = Checkout("", f"{stack.settings.checkout_url}/checkout/{token}", "")
    page = await open_checkout(context, expired, "link-expired", expect_status=410)
    await expect(page.get_by_role("heading", level=1)).to_have_text(EN.gettext("This link has expired"))
    assert await page.locator("form").count() == 0
    # Its withdrawal page likewise.
    page = await open_checkout(context, expired, "link-expired-withdraw", path="/withdraw", expect_status=410)
    assert await page.locator("form").count() == 0


@SQLITE
async def test_no_cookies_a_small_first_page_and_no_third_party_requests(
    stack: Stack, context: BrowserContext
) -> None:
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    checkout = await open_session(stack)
    page = await new_page(context)
    first_page: list[Response] = []

    def keep(response: Response) -> None:
        first_page.append(response)

    page.on("response", keep)
    await page.goto(checkout.url, wait_until="load")
    page.remove_listener("response", keep)
    kinds = {response.request.resource_type for response in first_page}
    assert {"document", "stylesheet", "script"} <= kinds, kinds
    first_page_bytes = sum([len(await response.body()) for response in first_page
                            if response.request.resource_type in ("document", "stylesheet", "script")])
    assert first_page_bytes <= 100 * 1024, first_page_bytes
    await look(page, "small-amount")

    await deposit_on_checkout(page, EN, method="Card", scenario="3-D Secure challenge")
    await page.get_by_role("button", name="Authenticate").click()
    await expect_outcome(page, EN, "Deposit successful")
    await look(page, "small-credited")
    assert await stack.balance(checkout.player_id) == "50.00"

    assert await context.cookies(stack.settings.api_url) == []
    origins = {f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" for url in requested}
    assert origins == {stack.settings.api_url, stack.settings.sandbox_psp_url}, origins
    await stack.check_invariants()


# Where the Card option's parts sit across the page (left and right edges, in CSS pixels).
CARD_OPTION_EDGES = """() => Object.fromEntries([
    ["radio", "#method-card"], ["label", 'label[for="method-card"]'], ["hint", "#method-card-info"],
    ["option", "#method-card"],
].map(([part, selector]) => {
    const element = document.querySelector(selector);
    const box = (part === "option" ? element.parentElement : element).getBoundingClientRect();
    return [part, [box.left, box.right]];
}))"""


@SQLITE
async def test_a_right_to_left_page_mirrors(stack: Stack, context: BrowserContext) -> None:
    page = await open_checkout(context, await open_session(stack), "rtl-amount")
    await enter_amount(page, "50.00", EN)
    ltr = await page.evaluate(CARD_OPTION_EDGES)
    # Left to right: the radio, then its label; the hint indented from the left.
    assert ltr["radio"][1] <= ltr["label"][0]
    indent = ltr["hint"][0] - ltr["option"][0]
    assert indent > 0
    await page.evaluate('document.documentElement.dir = "rtl"')
    rtl = await page.evaluate(CARD_OPTION_EDGES)
    # Right to left: the radio on the right of its label, the hint indented as much from the right.
    assert rtl["radio"][0] >= rtl["label"][1]
    assert abs((rtl["option"][1] - rtl["hint"][1]) - indent) < 1
    await look(page, "rtl-methods")
