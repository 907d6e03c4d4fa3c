"""The incidents' and alerts' ops API (api/routes/incidents.py) against a real database, without Temporal: list
and page, detail with affected payments, their status and Temporal UI links, resolve (audited with the incident's
id, listed as a correction; 404, 409, 422), the report in JSON and Markdown, the alerts list, the open gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from incidents import detection, store
from incidents import report as reports
from payloop.settings import Settings
from tests.incidents.helpers import NOW, alert, deposits, detect, seconds

UNKNOWN = "inc_" + "0" * 32


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(api_keys="k:back-office:ops;p:casino:payments"), engine=engine,
                     temporal=object())  # type: ignore[arg-type]
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api", headers={"Authorization": "Bearer k"}
    ) as http:
        yield http


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


async def failed_deposits_incident(engine: AsyncEngine) -> tuple[str, list[str]]:
    failed = await deposits(engine, "failed", 6, failure_code="psp_unavailable")
    await deposits(engine, "credited", 4)
    await store.apply(engine, await detect(engine), NOW)
    [incident] = await store.list_incidents(engine)
    return incident.incident_id, failed


async def test_list_detail_resolve_and_report(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    incident_id, failed = await failed_deposits_incident(engine)
    page = (await client.get("/v1/ops/incidents", params={"state": "open"})).json()
    assert [(i["incident_id"], i["incident_class"], i["scope"]) for i in page["incidents"]] == [
        (incident_id, "failed_deposits", "psp=card,method=card")]
    assert (await client.get("/v1/ops/incidents", params={"incident_class": "gateway_downtime"})).json()[
        "incidents"] == []
    assert_problem(await client.get("/v1/ops/incidents", params={"state": "nope"}), 422, "validation_error")
    assert_problem(await client.get("/v1/ops/incidents", params={"before": UNKNOWN}), 422, "validation_error")

    detail = (await client.get(f"/v1/ops/incidents/{incident_id}")).json()
    assert detail["diagnosis"].startswith("6 of 10 card deposits via card failed")
    assert detail["figures_at_open"]["failed"] == 6 and [e["kind"] for e in detail["timeline"]] == ["opened"]
    assert sorted(a["id"] for a in detail["affected"]) == sorted(failed)
    assert {(a["status"], a["final"]) for a in detail["affected"]} == {("failed", True)}
    assert detail["affected"][0]["temporal_ui_url"].endswith(f"/workflows/deposit-{detail['affected'][0]['id']}")
    assert_problem(await client.get(f"/v1/ops/incidents/{UNKNOWN}"), 404, "incident_not_found")
    assert_problem(await client.get("/v1/ops/incidents/nope"), 422, "validation_error")

    open_report = (await client.get(f"/v1/ops/incidents/{incident_id}/report")).json()
    assert open_report["state"] == "open" and open_report["summary"].startswith("open since")
    assert open_report["detection_seconds"] == 30.0 and open_report["validation"]["passed"] is False

    assert_problem(await client.post(f"/v1/ops/incidents/{incident_id}/resolve", json={"note": ""}), 422,
                   "validation_error")
    # A field it does not take is refused, not silently dropped (like every other request body).
    assert_problem(await client.post(f"/v1/ops/incidents/{incident_id}/resolve",
                                     json={"note": "x", "incident_id": incident_id}), 422, "validation_error")
    resolved = await client.post(f"/v1/ops/incidents/{incident_id}/resolve", json={"note": "card_b took over"})
    assert resolved.status_code == 200 and resolved.json()["resolved_by"] == "back-office"
    assert_problem(await client.post(f"/v1/ops/incidents/{incident_id}/resolve", json={"note": "again"}), 409,
                   "incident_already_resolved")
    assert_problem(await client.post(f"/v1/ops/incidents/{UNKNOWN}/resolve", json={"note": "x"}), 404,
                   "incident_not_found")

    [correction] = (await client.get(f"/v1/ops/incidents/{incident_id}")).json()["corrections"]
    assert (correction["action"], correction["actor"]) == ("incident.resolve", "back-office")
    document = (await client.get(f"/v1/ops/incidents/{incident_id}/report")).json()
    assert document["state"] == "resolved" and document["corrections"][0]["action"] == "incident.resolve"
    assert document["validation"] == {"affected": 6, "affected_final": 6, "not_final": [],
                                      "ledger_invariants_ok": True, "ledger_violations": [], "passed": True}
    markdown = await client.get(f"/v1/ops/incidents/{incident_id}/report", headers={"Accept": "text/markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert f"# Incident {incident_id}: failed_deposits" in markdown.text
    assert "- ledger invariants: green" in markdown.text and "incident.resolve on incident:" in markdown.text
    assert (await client.get(f"/v1/ops/incidents/{incident_id}/report", params={"format": "md"})).text == markdown.text


async def test_a_deposit_waiting_in_review_is_not_final_so_its_incident_has_not_passed(
        client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    [in_review] = await deposits(engine, "in_review", 1, psp="card")
    await alert(engine, "deposit.currency_mismatch", in_review)
    await store.apply(engine, await detect(engine), NOW)
    [incident] = await store.list_incidents(engine, incident_class="currency_mismatch")
    detail = (await client.get(f"/v1/ops/incidents/{incident.incident_id}")).json()
    assert [(a["id"], a["status"], a["final"]) for a in detail["affected"]] == [(in_review, "in_review", False)]
    await client.post(f"/v1/ops/incidents/{incident.incident_id}/resolve", json={"note": "looked at it"})
    validation = (await client.get(f"/v1/ops/incidents/{incident.incident_id}/report")).json()["validation"]
    assert (validation["affected_final"], validation["not_final"], validation["passed"]) == (
        0, [f"payment:{in_review}"], False)


async def test_a_console_view_of_the_report_skips_the_ledger_scan(engine: AsyncEngine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    incident_id, _failed = await failed_deposits_incident(engine)

    async def no_scan(_engine: AsyncEngine) -> None:
        raise AssertionError("the ledger's invariants were checked")

    monkeypatch.setattr(reports, "check_invariants", no_scan)
    document = await reports.report(engine, incident_id, [], NOW, ledger_check=False)
    assert document is not None
    assert (document["validation"]["ledger_invariants_ok"], document["validation"]["passed"]) == (None, None)
    markdown = reports.report_markdown(document)
    assert "- ledger invariants: not checked here (the downloaded report checks them)" in markdown
    assert "- passed: not judged here" in markdown


async def test_the_open_gauge_counts_open_incidents(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    await failed_deposits_incident(engine)
    await store.apply(engine, [*await detect(engine), detection.Condition("gateway_downtime", "psp=card", "down",
                                                                          {"circuit": "open"})], NOW + seconds(1))
    text = (await client.get("/metrics")).text
    assert 'payloop_incidents_open{incident_class="failed_deposits"} 1.0' in text
    assert 'payloop_incidents_open{incident_class="gateway_downtime"} 1.0' in text
    assert 'payloop_incidents_open{incident_class="callback_errors"} 0.0' in text


async def test_alerts_name_what_they_are_about(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    await alert(engine, "deposit.currency_mismatch", "pay_1")
    await alert(engine, "payout.amount_mismatch", "po_1")
    await alert(engine, "recon.differences", "run_1")
    page = (await client.get("/v1/ops/alerts", params={"limit": 2})).json()
    assert [(a["kind"], a["payout_id"], a["recon_run"]) for a in page["alerts"]] == [
        ("recon.differences", None, "run_1"), ("payout.amount_mismatch", "po_1", None)]
    rest = (await client.get("/v1/ops/alerts", params={"before": page["next_before"]})).json()
    assert [(a["kind"], a["payment_id"]) for a in rest["alerts"]] == [("deposit.currency_mismatch", "pay_1")]
    assert rest["next_before"] is None
    by_kind = (await client.get("/v1/ops/alerts", params={"kind": "payout.amount_mismatch"})).json()
    assert [a["payout_id"] for a in by_kind["alerts"]] == ["po_1"]
    assert_problem(await client.get("/v1/ops/alerts", params={"kind": "DROP TABLE"}), 422, "validation_error")
