"""The ops corrections taken from the console in a real browser (the system's Chromium, Playwright) against the
real stack: a gateway_downtime incident the monitor's own workflow opened while the sandbox's card PSP is down (its
breaker's open circuit not offered for forcing), the circuit held open by ops handed back to its breaker from the
incident's page (audited with the incident's id, listed among its corrections taken),
a correction from a page left open after the incident was resolved refused as a message on that page; the Methods
page switching ewallet off (hidden, refused at init) and on; forged correction forms refused. SQLite only: the JSON
routes these share are tested on both backends (tests/e2e/test_ops_actions.py). Screenshots: test-artifacts/console/."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page

from players import audit
from tests.e2e.conftest import Stack, new_player
from tests.e2e.console_helpers import console_http, session_cookie, shot, sign_in
from tests.e2e.test_console_incidents import monitor_pass

pytestmark = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)

DEPOSITS_TO_OPEN_MAX = 5  # the circuit opens within one deposit's retries (tests/e2e/test_failover.py)


async def gateway_downtime_of_card(stack: Stack) -> dict[str, Any]:
    """Card down, deposits (failing over to card_b) until a monitor pass sees it down: its open incident."""
    await stack.sandbox.post("/control/card", json={"mode": "down"})
    for _ in range(DEPOSITS_TO_OPEN_MAX):
        init = await stack.deposit(method="card", amount="20.00", player_id=new_player())
        await stack.wait_final(init["payment_id"])
        await monitor_pass(stack)
        listed = (await stack.api.get("/v1/ops/incidents", params={
            "state": "open", "incident_class": "gateway_downtime"})).json()["incidents"]
        if found := [i for i in listed if i["scope"] == "psp=card"]:
            return found[0]
    raise AssertionError("no gateway_downtime incident of card opened")


def message(page: Page) -> Any:
    return page.locator("p.flash")


async def test_an_incidents_correction_is_taken_from_its_page_and_a_stale_one_refused(
    stack: Stack, context: BrowserContext
) -> None:
    try:
        incident_id = (await gateway_downtime_of_card(stack))["incident_id"]
        page = await context.new_page()
        await sign_in(page, stack)
        await page.goto(f"{stack.settings.api_url}/ops/incidents/{incident_id}")
        await page.get_by_role("heading", name=f"Incident {incident_id}").wait_for()
        stale = await context.new_page()  # the same page, left open in another tab
        await stale.goto(f"{stack.settings.api_url}/ops/incidents/{incident_id}")

        # Its breaker opened it: forcing it open would only pin it (no half-open probes), so it is not offered.
        correction = page.locator("tr.correction[data-action='psp.circuit.force']")
        assert await correction.count() == 0
        # Held open by ops meanwhile (the PSP health page, the API): the page offers handing it back.
        await stack.api.post("/v1/ops/psps/card/circuit", json={"state": "open"})
        await page.reload()
        await stale.reload()
        await correction.get_by_role("button").click()
        await page.get_by_role("heading", name=f"Incident {incident_id}").wait_for()
        assert await message(page).inner_text() == "Circuit of card back to its circuit breaker: it is closed now."
        assert await message(page).get_attribute("class") == "flash done"
        taken = page.locator("section[aria-labelledby=corrections-heading] tbody tr")
        assert [await cell.inner_text() for cell in await taken.first.locator("td").all()][1:4] == [
            "casino-a (console)", "psp.circuit.force", "psp:card"]
        await shot(page, stack, "incident-correction-taken")
        [entry] = [e for e in await audit.entries(stack.engine, "psp:card") if e["incident_id"] == incident_id]
        assert (entry["action"], entry["actor"], entry["details"]) == (
            "psp.circuit.force", "casino-a (console)", {"state": "auto"})
        health = {p["psp"]: p for p in (await stack.api.get("/v1/ops/psp-health")).json()["psps"]}
        assert health["card"]["forced"] is None
        await page.reload()
        assert await message(page).count() == 0  # shown once

        await page.get_by_label("Resolution note").fill("card back; its breaker closes it again")
        await page.get_by_role("button", name="Resolve").click()
        await page.locator("dd.state", has_text="resolved").wait_for()
        # The tab left open still offers the correction; the incident no longer calls for it.
        await stale.locator("tr.correction[data-action='psp.circuit.force']").get_by_role("button").click()
        await stale.get_by_role("heading", name=f"Incident {incident_id}").wait_for()
        refused = await message(stale).inner_text()
        assert refused.startswith("Refused — not called for") and "resolved" in refused, refused
        assert await message(stale).get_attribute("role") == "alert"
        assert await stale.get_by_role("navigation", name="Console").count() == 1  # the page, with its menu
        await shot(stale, stack, "incident-correction-refused")
        resolved = (await stack.api.get(f"/v1/ops/incidents/{incident_id}")).json()
        assert [c["action"] for c in resolved["corrections"]] == ["psp.circuit.force", "incident.resolve"]

        # The PSP health page hands a held circuit back to its breaker.
        await stack.api.post("/v1/ops/psps/card/circuit", json={"state": "open"})
        await page.get_by_role("link", name="PSP health").click()
        row = page.locator("tr.force[data-psp='card']")
        assert await row.locator("td.forced").inner_text() == "open"
        await row.get_by_label("Circuit of card", exact=True).select_option("auto")
        await row.get_by_role("button", name="Force the circuit of card").click()
        await page.get_by_role("heading", name="PSP health").wait_for()
        assert (await message(page).inner_text()).startswith("Circuit of card back to its circuit breaker")
        assert await page.locator("tr.force[data-psp='card'] td.forced").inner_text() == "no"
        await shot(page, stack, "psps-forced")
    finally:
        await stack.api.post("/v1/ops/psps/card/circuit", json={"state": "auto"})
        await stack.psp_mode("card", "up")


async def test_the_methods_page_switches_a_method_off_and_on(stack: Stack, context: BrowserContext) -> None:
    async def listed() -> list[str]:
        response = await stack.api.get("/v1/payment-methods", params={"currency": "EUR", "amount": "10.00"})
        return [m["method"] for m in response.json()["methods"]]

    assert "ewallet" in await listed()
    page = await context.new_page()
    await sign_in(page, stack)
    await page.get_by_role("link", name="Methods", exact=True).click()
    await page.get_by_role("heading", name="Methods").wait_for()
    try:
        await page.get_by_role("button", name="Switch ewallet off").click()
        await page.get_by_role("heading", name="Methods").wait_for()
        assert await message(page).inner_text() == "Method ewallet switched off."
        assert await page.locator("tr[data-method='ewallet'] td.enabled").inner_text() == "off"
        await shot(page, stack, "methods-ewallet-off")
        assert "ewallet" not in await listed() and "card" in await listed()
        refused = await stack.deposit(method="ewallet", expect=422)
        assert refused["code"] == "method_disabled"
    finally:
        await page.get_by_role("button", name="Switch ewallet on").click()
    await page.get_by_role("heading", name="Methods").wait_for()
    assert await message(page).inner_text() == "Method ewallet switched on."
    assert "ewallet" in await listed()
    newest_first = await audit.entries(stack.engine, "method:ewallet")
    assert [(e["action"], e["actor"], e["details"]) for e in newest_first[:2]] == [
        ("method.switch", "casino-a (console)", {"enabled": True}),
        ("method.switch", "casino-a (console)", {"enabled": False})]


async def test_a_forged_correction_is_refused_and_changes_nothing(stack: Stack, context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_in(page, stack)
    await page.goto(f"{stack.settings.api_url}/ops/methods")
    csrf_token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    cookie = (await session_cookie(context))["value"]
    before = [await audit.entries(stack.engine, subject) for subject in ("method:card", "psp:card")]
    own_origin = {"Origin": stack.settings.api_url}
    forgeries = [
        ("/ops/methods/card", {"enabled": "false"}, own_origin),  # no token
        ("/ops/psps/card/circuit", {"state": "open"}, own_origin),
        ("/ops/methods/card", {"enabled": "false", "csrf_token": csrf_token}, {"Origin": "https://evil.example"}),
        (f"/ops/incidents/inc_{'0' * 32}/corrections", {"action": "method.switch", "target": "card"}, own_origin),
        ("/ops/dead-letters/replay", {"psp": "card"}, own_origin),
    ]
    async with console_http(stack, cookie) as http:
        for path, form, headers in forgeries:
            refused = await http.post(path, data=form, headers=headers)
            assert refused.status_code == 403 and "Form refused" in refused.text, (path, form)
    switches = {m["method"]: m for m in (await stack.api.get("/v1/ops/methods")).json()["methods"]}
    assert switches["card"]["enabled"] is True
    health = {p["psp"]: p for p in (await stack.api.get("/v1/ops/psp-health")).json()["psps"]}
    assert health["card"]["forced"] is None
    assert [await audit.entries(stack.engine, subject) for subject in ("method:card", "psp:card")] == before
