"""The risk cases' ops API (api/routes/risk.py) against a real database, without Temporal: list, detail with
Temporal UI links, decide (audited; 404, 409, 422) and the report in JSON and CSV."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from payloop.settings import Settings
from players import audit
from risk import aml
from risk.types import CaseHit
from tests.risk.data_helpers import NOW, deposit, hours, payout

UNKNOWN = "rk_0000000000000000"


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(api_keys="k:back-office:ops;p:casino:payments"), engine=engine,
                     temporal=object())  # type: ignore[arg-type]
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api", headers={"Authorization": "Bearer k"}
    ) as http:
        yield http


async def a_case(engine: AsyncEngine, player: str = "p1", kind: str = "rapid_in_out", at=NOW) -> str:  # noqa: ANN001
    await deposit(engine, f"pay_{player}", player, 100_000, at=NOW - hours(3))
    await payout(engine, f"po_{player}", player, 90_000, at=NOW - hours(1), method="bank")
    [case_id] = await aml.open_cases(engine, [CaseHit(kind, player, "in and out", (f"pay_{player}", f"po_{player}"),
                                                      {"turnover_minor": 0})], at)
    return case_id


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    return body


async def test_cases_list_filter_and_page(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    first = await a_case(engine, "p1")
    second = await a_case(engine, "p2", "structuring", NOW + hours(1))
    page = (await client.get("/v1/ops/risk/cases", params={"limit": 1})).json()
    assert [c["case_id"] for c in page["cases"]] == [second] and page["next_before"] == second
    rest = (await client.get("/v1/ops/risk/cases", params={"limit": 1, "before": second})).json()
    assert [c["case_id"] for c in rest["cases"]] == [first] and rest["next_before"] is None
    by_player = (await client.get("/v1/ops/risk/cases", params={"player_id": "p1", "state": "open"})).json()
    assert [(c["case_id"], c["kind"], c["state"]) for c in by_player["cases"]] == [(first, "rapid_in_out", "open")]
    by_kind = (await client.get("/v1/ops/risk/cases", params={"kind": "unusual_route"})).json()
    assert by_kind["cases"] == []
    assert_problem(await client.get("/v1/ops/risk/cases", params={"kind": "nope"}), 422, "validation_error")
    assert_problem(await client.get("/v1/ops/risk/cases", params={"before": UNKNOWN}), 422, "validation_error")
    forbidden = await client.get("/v1/ops/risk/cases", headers={"Authorization": "Bearer p"})
    assert forbidden.status_code == 403


async def test_a_case_links_each_payment_to_its_workflow(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    case_id = await a_case(engine)
    body = (await client.get(f"/v1/ops/risk/cases/{case_id}")).json()
    assert [(t["id"], t["amount"], t["in_pattern"]) for t in body["transactions"]] == [
        ("pay_p1", "1000.00", True), ("po_p1", "900.00", True)]
    assert body["transactions"][0]["temporal_ui_url"].endswith("/workflows/deposit-pay_p1")
    assert "/workflows/" in body["payouts"][0]["temporal_ui_url"] and "po_p1" in body["payouts"][0]["temporal_ui_url"]
    assert [e["kind"] for e in body["events"]] == ["opened"]
    assert_problem(await client.get(f"/v1/ops/risk/cases/{UNKNOWN}"), 404, "risk_case_not_found")
    assert_problem(await client.get("/v1/ops/risk/cases/rc_0000000000000000"), 422, "validation_error")


async def test_decide_is_audited_and_final_decisions_are_409(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    case_id = await a_case(engine)
    url = f"/v1/ops/risk/cases/{case_id}/decide"
    escalated = await client.post(url, json={"decision": "escalate", "note": "ask for source of funds"})
    assert escalated.status_code == 200 and escalated.json()["state"] == "escalated"
    cleared = await client.post(url, json={"decision": "clear", "note": "payslip seen"})
    assert (cleared.json()["state"], cleared.json()["decided_by"]) == ("cleared", "back-office")
    body = assert_problem(await client.post(url, json={"decision": "report", "note": "late"}), 409,
                          "case_already_decided")
    assert body["state"] == "cleared"
    entries = await audit.entries(engine, f"risk_case:{case_id}")
    assert [(e["action"], e["details"]["note"]) for e in entries] == [
        ("risk.case.clear", "payslip seen"), ("risk.case.escalate", "ask for source of funds")]
    assert_problem(await client.post(f"/v1/ops/risk/cases/{UNKNOWN}/decide",
                                      json={"decision": "clear", "note": "x"}), 404, "risk_case_not_found")
    for bad in ({"decision": "approve", "note": "x"}, {"decision": "clear", "note": ""}, {"decision": "clear"},
                {"decision": "clear", "note": "x", "extra": 1}):
        assert_problem(await client.post(url, json=bad), 422, "validation_error")


async def test_the_report_in_json_and_csv(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    case_id = await a_case(engine)
    await client.post(f"/v1/ops/risk/cases/{case_id}/decide", json={"decision": "report", "note": "SAR filed"})
    document = (await client.get(f"/v1/ops/risk/cases/{case_id}/report")).json()
    assert document["scenario"]["kind"] == "rapid_in_out"
    assert [t["id"] for t in document["transactions"]] == ["pay_p1", "po_p1"]
    assert document["reviewer"]["by"] == "back-office" and document["reviewer"]["note"] == "SAR filed"
    as_csv = await client.get(f"/v1/ops/risk/cases/{case_id}/report", params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    lines = as_csv.text.splitlines()
    assert lines[0].startswith("case_id,scenario,state,player_id") and len(lines) == 3
    assert "SAR filed" in lines[1] and "po_p1" in lines[2]
    assert_problem(await client.get(f"/v1/ops/risk/cases/{UNKNOWN}/report"), 404, "risk_case_not_found")
    assert_problem(await client.get(f"/v1/ops/risk/cases/{case_id}/report", params={"format": "xml"}), 422,
                   "validation_error")
