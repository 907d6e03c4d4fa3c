"""The console's incidents in a real browser (the system's Chromium, Playwright) against the real stack: a deposit
the sandbox captures in another currency, the monitor's own workflow (MonitorWorkflow on the stack's Temporal and
worker, as the `monitor` Schedule starts it) opening the currency_mismatch incident, its page with the affected
payment one click from its console page and its Temporal UI history, the report downloads, the resolve form
(audited as the console's), a forged resolve refused, the alerts page. SQLite only: the JSON paths these pages share
are tested on both backends (tests/incidents). Screenshots go to test-artifacts/console/."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.async_api import BrowserContext

from players import audit
from tests.e2e.conftest import Stack, eventually, new_player
from tests.e2e.console_helpers import console_http, session_cookie, shot, sign_in
from workflows.monitor import MonitorWorkflow
from workflows.types import IncidentPassResult, MonitorInput

pytestmark = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)


async def currency_mismatch_deposit(stack: Stack) -> dict[str, Any]:
    """A card deposit the sandbox captures in another currency: held for review, its alert raised."""
    init = await stack.deposit(method="card", scenario="wrong_currency", player_id=new_player())
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "in_review" and payment["review_reason"] == "currency_mismatch"

    async def alerted() -> list[dict[str, Any]]:
        response = await stack.api.get("/v1/ops/alerts", params={"kind": "deposit.currency_mismatch", "limit": 200})
        return [a for a in response.json()["alerts"] if a["payment_id"] == payment["payment_id"]]

    await eventually(alerted, bool, timeout=10)
    return payment


async def monitor_pass(stack: Stack) -> IncidentPassResult:
    """One pass of the monitor's own workflow, on the stack's worker."""
    return await stack.client.execute_workflow(MonitorWorkflow.run, MonitorInput(), id=f"monitor-{uuid.uuid4().hex}",
                                               task_queue=stack.settings.task_queue,
                                               result_type=IncidentPassResult)


async def open_incident_naming(stack: Stack, payment_id: str) -> dict[str, Any]:
    """The open currency_mismatch incident that names the payment, after a monitor pass (the session's other
    mismatched deposits share its scope, so the pass may update one already open rather than open it)."""
    await monitor_pass(stack)
    listed = (await stack.api.get("/v1/ops/incidents", params={"state": "open",
                                                               "incident_class": "currency_mismatch"})).json()
    for incident in listed["incidents"]:
        detail = (await stack.api.get(f"/v1/ops/incidents/{incident['incident_id']}")).json()
        if payment_id in {a["id"] for a in detail["affected"]}:
            return detail
    raise AssertionError(f"no open currency_mismatch incident names {payment_id}: {listed}")


async def test_an_incident_the_monitor_opened_is_shown_with_its_payment_and_resolved_from_the_console(
    stack: Stack, context: BrowserContext
) -> None:
    payment = await currency_mismatch_deposit(stack)
    payment_id = payment["payment_id"]
    incident = await open_incident_naming(stack, payment_id)
    incident_id = incident["incident_id"]
    assert incident["scope"] == "psp=card"

    page = await context.new_page()
    await sign_in(page, stack)
    await page.get_by_role("heading", name="Overview").wait_for()
    await page.get_by_role("link", name=incident_id).wait_for()  # among the open incidents
    await page.get_by_role("link", name="Incidents", exact=True).click()
    await page.get_by_role("heading", name="Incidents", exact=True).wait_for()
    await shot(page, stack, "incidents")
    await page.get_by_role("link", name=incident_id).click()
    await page.get_by_role("heading", name=f"Incident {incident_id}").wait_for()
    assert await page.locator("dd.incident-class").inner_text() == "currency_mismatch"
    assert await page.locator("dd.state").inner_text() == "open"
    assert "currency mismatch" in await page.locator("dd.diagnosis").inner_text()

    # The affected payment: its status now, its console page and its Temporal UI history.
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=payment_id, exact=True))
    assert await row.locator("td.status").inner_text() == "in_review"
    assert await row.get_by_role("link", name=payment_id).get_attribute("href") == f"/ops/payments/{payment_id}"
    history = row.get_by_role("link", name="Temporal UI history")
    assert await history.get_attribute("href") == payment["temporal_ui_url"]
    assert payment["temporal_ui_url"].endswith(f"/workflows/deposit-{payment_id}")
    # The correction its class calls for, on this payment: its review, taken on its page (a re-sync would be
    # refused: it waits for a person, not for its PSP).
    corrections = page.locator("tr.correction").filter(has_text=payment_id)
    assert [await c.get_attribute("data-action") for c in await corrections.all()] == ["payment.review"]
    review = corrections.filter(has=page.get_by_role("link", name="Open its page"))
    assert await review.get_by_role("link").get_attribute("href") == f"/ops/payments/{payment_id}"
    assert f"# Incident {incident_id}: currency_mismatch (psp=card)" in await page.locator("pre.report").inner_text()
    await shot(page, stack, "incident-open")

    # The report downloads as Markdown and JSON, the same document the API gives.
    cookie = (await session_cookie(context))["value"]
    async with console_http(stack, cookie) as http:
        markdown = await http.get(f"/ops/incidents/{incident_id}/report.md")
        assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
        assert markdown.headers["content-disposition"] == f'attachment; filename="{incident_id}.md"'
        assert markdown.text.startswith(f"# Incident {incident_id}: currency_mismatch")
        document = await http.get(f"/ops/incidents/{incident_id}/report.json")
        assert document.headers["content-disposition"] == f'attachment; filename="{incident_id}.json"'
        assert document.json()["incident_id"] == incident_id and document.json()["state"] == "open"

    await page.get_by_label("Resolution note").fill("<b>PSP told</b>; reviews under way")
    await page.get_by_role("button", name="Resolve").click()
    await page.get_by_role("heading", name=f"Incident {incident_id}").wait_for()
    assert await page.locator("dd.state").inner_text() == "resolved"
    last = page.locator("tr.event").last
    assert await last.locator("td.kind").inner_text() == "resolved"
    assert "casino-a (console)" in await last.inner_text()
    assert "<b>PSP told</b>; reviews under way" in await last.inner_text()  # text, not markup
    assert await page.get_by_role("button", name="Resolve").count() == 0
    await shot(page, stack, "incident-resolved")

    [entry] = await audit.entries(stack.engine, f"incident:{incident_id}")
    assert (entry["action"], entry["actor"], entry["incident_id"]) == (
        "incident.resolve", "casino-a (console)", incident_id)
    resolved = (await stack.api.get(f"/v1/ops/incidents/{incident_id}")).json()
    assert resolved["state"] == "resolved" and resolved["resolved_by"] == "casino-a (console)"
    assert [(c["action"], c["actor"]) for c in resolved["corrections"]] == [("incident.resolve", "casino-a (console)")]

    # The alert that raised it names the payment and links its page.
    await page.get_by_role("link", name="Alerts", exact=True).click()
    await page.get_by_role("heading", name="Alerts", exact=True).wait_for()
    await page.get_by_label("Kind").fill("deposit.currency_mismatch")
    await page.get_by_role("button", name="Show").click()
    await page.get_by_role("link", name=payment_id).click()
    await page.get_by_role("heading", name=f"Payment {payment_id}").wait_for()
    await page.go_back()
    await shot(page, stack, "alerts")


async def test_a_forged_resolve_is_refused_and_the_incident_stays_open(
    stack: Stack, context: BrowserContext
) -> None:
    payment = await currency_mismatch_deposit(stack)
    incident_id = (await open_incident_naming(stack, payment["payment_id"]))["incident_id"]
    page = await context.new_page()
    await sign_in(page, stack)
    await page.goto(f"{stack.settings.api_url}/ops/incidents/{incident_id}")
    csrf_token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    cookie = (await session_cookie(context))["value"]
    own_origin = {"Origin": stack.settings.api_url}
    forgeries = [
        ({}, own_origin),  # no token
        ({"csrf_token": "0" * len(csrf_token)}, own_origin),  # a wrong one
        ({"csrf_token": csrf_token}, {"Origin": "https://evil.example"}),  # the right one, from another site
    ]
    async with console_http(stack, cookie) as http:
        for token, headers in forgeries:
            refused = await http.post(f"/ops/incidents/{incident_id}/resolve", data={"note": "forged", **token},
                                      headers=headers)
            assert refused.status_code == 403 and "Form refused" in refused.text, (token, headers)
        # A GET changes nothing either.
        assert (await http.get(f"/ops/incidents/{incident_id}/resolve")).status_code == 405
    still = (await stack.api.get(f"/v1/ops/incidents/{incident_id}")).json()
    assert still["state"] == "open" and still["corrections"] == []
    assert await audit.entries(stack.engine, f"incident:{incident_id}") == []


async def test_the_incident_pages_refuse_bad_input_and_need_a_session(
    stack: Stack, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, stack)
    for path, heading in ((f"/ops/incidents/inc_{'0' * 32}", "Incident not found"),
                          ("/ops/incidents/not-an-id", "Incident not found"),
                          ("/ops/incidents?state=nope", "Invalid filter"),
                          ("/ops/alerts?kind=nope", "Invalid filter")):
        await page.goto(f"{stack.settings.api_url}{path}")
        await page.get_by_role("heading", name=heading).wait_for()
    await page.goto(f"{stack.settings.api_url}/ops/incidents?state=resolved")
    await page.get_by_role("heading", name="Incidents", exact=True).wait_for()
    await shot(page, stack, "incidents-resolved")
    async with console_http(stack) as http:
        for path in ("/ops/incidents", f"/ops/incidents/inc_{'0' * 32}", f"/ops/incidents/inc_{'0' * 32}/report.md",
                     f"/ops/incidents/inc_{'0' * 32}/report.json", "/ops/alerts"):
            response = await http.get(path)
            assert (response.status_code, response.headers.get("location")) == (303, "/ops/login"), path
