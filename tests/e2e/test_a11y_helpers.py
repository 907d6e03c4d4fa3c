"""tests/e2e/a11y.py on pages made here: axe finds what it should and nothing on a sound page, and the keyboard
helpers follow focus as a person would. Only the browser: no Temporal, no database."""

from __future__ import annotations

import pytest
from playwright.async_api import BrowserContext, Error, Page

from tests.e2e.a11y import (
    assert_accessible, axe_violations, focused_description, has_visible_focus, tab_until,
)

ALL_IMPACTS = ("minor", "moderate", "serious", "critical")

BROKEN = """<!doctype html><html lang="en"><head><title>Broken checkout</title></head><body><main>
<input id="card" type="text">
<p id="fine-print" style="color:#c8c8c8;background:#fff">Fees may apply</p>
</main></body></html>"""

SOUND = """<!doctype html><html lang="en"><head><title>Checkout</title></head>
<body style="color:#1a1a1a;background:#fff"><main>
<h1>Deposit</h1>
<form>
  <label for="amount">Amount (EUR)</label> <input id="amount" name="amount" inputmode="decimal">
  <label for="method">Method</label>
  <select id="method" name="method"><option>Card</option><option>Bank transfer</option></select>
  <label><input type="checkbox" name="terms"> I accept the terms</label>
  <p style="color:#595959">Deposits are credited within minutes.</p>
  <button id="pay" type="submit">Pay now</button>
</form>
</main></body></html>"""

KEYBOARD = """<!doctype html><html lang="en"><head><title>Keys</title><style>
  #bare { outline: none; }
  /* The ring shows only after a delay: read at once, focused looks like blurred unless transitions are off. */
  #ring { outline: none; transition: box-shadow .2s 1s; }
  #ring:focus-visible { box-shadow: 0 0 0 3px #1a5fb4; }
</style></head><body><main>
<a href="#terms">Terms</a>
<label for="amount">Amount</label> <input id="amount">
<button id="skipped" tabindex="-1">Not in the Tab order</button>
<button id="pay">Pay now</button>
<button id="bare">No focus style</button>
<button id="ring">Own focus ring</button>
</main></body></html>"""


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


async def test_axe_finds_an_unlabelled_input_and_low_contrast_text(page: Page) -> None:
    await page.set_content(BROKEN)
    violations = {v["id"]: v for v in await axe_violations(page)}
    assert {"label", "color-contrast"} <= set(violations), violations
    assert violations["label"]["nodes"] == ["#card"] and violations["label"]["impact"] == "critical"
    assert violations["color-contrast"]["nodes"] == ["#fine-print"]
    with pytest.raises(AssertionError) as failure:
        await assert_accessible(page, "broken checkout")
    message = str(failure.value)
    assert "broken checkout" in message and "label (critical)" in message and "#card" in message
    assert violations["color-contrast"]["help"] in message and "#fine-print" in message


async def test_a_sound_page_has_no_violation_of_any_impact(page: Page) -> None:
    await page.set_content(SOUND)
    assert await axe_violations(page, impacts=ALL_IMPACTS) == []
    await assert_accessible(page, "checkout")


async def test_axe_runs_under_a_strict_content_security_policy(page: Page) -> None:
    """The console's policy (`default-src 'self'`) refuses inline scripts: it does not stop axe."""
    await page.set_content(BROKEN.replace(
        "<head>", """<head><meta http-equiv="Content-Security-Policy" content="script-src 'none'">"""))
    with pytest.raises(Error):  # the policy is in force: an inline <script> is refused
        await page.add_script_tag(content="window.ran = true")
    assert {"label", "color-contrast"} <= {v["id"] for v in await axe_violations(page)}


async def test_tab_until_reaches_the_button_by_keyboard(page: Page) -> None:
    await page.set_content(KEYBOARD)
    assert await tab_until(page, "#pay") == 'button#pay "Pay now"'
    assert await focused_description(page) == 'button#pay "Pay now"'
    # By accessible name, a Locator or a predicate: each from the top of the page again.
    for wanted in ("Pay now", page.get_by_role("button", name="Pay now"),
                   lambda p: p.evaluate("document.activeElement.id === 'pay'")):
        await page.set_content(KEYBOARD)
        assert await tab_until(page, wanted) == 'button#pay "Pay now"'
    await page.set_content(KEYBOARD)
    assert await tab_until(page, "Amount") == 'input#amount "Amount"'  # named by its <label>


async def test_tab_until_lists_where_focus_went_when_it_never_gets_there(page: Page) -> None:
    await page.set_content(KEYBOARD)
    with pytest.raises(AssertionError) as failure:
        await tab_until(page, "#skipped", max_tabs=5)
    message = str(failure.value)
    assert "'#skipped' not reached by keyboard in 5 Tab presses" in message
    assert '1. a "Terms"' in message and '2. input#amount "Amount"' in message and '3. button#pay "Pay now"' in message


async def test_has_visible_focus(page: Page) -> None:
    await page.set_content(KEYBOARD)
    await tab_until(page, "#pay")
    assert await has_visible_focus(page)  # Chromium's default focus ring
    await tab_until(page, "#bare")
    assert not await has_visible_focus(page)  # outline:none and nothing instead
    # A box-shadow ring counts, even read before its transition has shown it.
    await tab_until(page, "#ring")
    assert await has_visible_focus(page)
    # Focus is where it was, so the keyboard goes on from there.
    assert await focused_description(page) == 'button#ring "Own focus ring"'
    assert await page.evaluate("document.activeElement.matches(':focus-visible')")
    assert await has_visible_focus(page)
    await page.keyboard.press("Shift+Tab")
    assert await focused_description(page) == 'button#bare "No focus style"'
