"""risk/cases.py on SQLite and PostgreSQL: keyset pages with filters, a case's detail, decisions audited in their
transaction (final ones final), and the report as JSON and CSV."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.errors import RecordNotFound
from players import audit
from risk import aml, cases
from risk.types import CaseHit
from tests.risk.data_helpers import NOW, deposit, hours, payout, player


async def open_case(engine: AsyncEngine, kind: str = "structuring", player: str = "p1", at=NOW,  # noqa: ANN001
                    ids: tuple[str, ...] = ("pay_1", "pay_2")) -> str:
    [case_id] = await aml.open_cases(engine, [CaseHit(kind, player, f"{kind} of {player}", ids, {"n": len(ids)})],
                                     at)
    return case_id


def audited(actor: str):  # noqa: ANN201
    async def on_decided(conn: AsyncConnection, case: cases.RiskCase) -> None:
        await audit.record(conn, actor=actor, action=f"risk.case.{case.state}", subject=f"risk_case:{case.case_id}",
                           details={"note": case.decision_note}, now=NOW)

    return on_decided


async def test_cases_list_newest_first_in_keyset_pages_with_filters(engine: AsyncEngine) -> None:
    ids = [await open_case(engine, kind, player, NOW + hours(n))
           for n, (kind, player) in enumerate([("structuring", "p1"), ("cdd_threshold", "p1"),
                                               ("structuring", "p2"), ("rapid_in_out", "p3")])]
    page = await cases.list_cases(engine, limit=3)
    assert [c.case_id for c in page] == ids[::-1][:3]
    assert [c.case_id for c in await cases.list_cases(engine, limit=3, before=page[-1].case_id)] == [ids[0]]
    assert [c.case_id for c in await cases.list_cases(engine, kind="structuring")] == [ids[2], ids[0]]
    assert [c.case_id for c in await cases.list_cases(engine, player_id="p1")] == [ids[1], ids[0]]
    await cases.decide(engine, ids[3], "clear", "fine", "ops", NOW)
    assert [c.case_id for c in await cases.list_cases(engine, state="cleared")] == [ids[3]]
    with pytest.raises(RecordNotFound):
        await cases.list_cases(engine, before="rk_0000000000000000")


async def test_a_case_shows_its_timeline_pattern_and_the_players_money(engine: AsyncEngine) -> None:
    await deposit(engine, "pay_1", "p1", 190_000, at=NOW - hours(2))
    await deposit(engine, "pay_2", "p1", 185_000, at=NOW - hours(1))
    await deposit(engine, "pay_x", "p1", 1_000, at=NOW - hours(3))
    await payout(engine, "po_1", "p1", 5_000, at=NOW - hours(1))
    await deposit(engine, "pay_o", "other", 1_000)
    case_id = await open_case(engine)
    detail = await cases.case_detail(engine, case_id)
    assert detail is not None and detail.case.state == "open"
    assert [t.id for t in detail.transactions] == ["pay_1", "pay_2"]
    assert [t.id for t in detail.payments] == ["pay_2", "pay_1", "pay_x"]
    assert [t.id for t in detail.payouts] == ["po_1"]
    assert [(e.kind, e.reason) for e in detail.events] == [("opened", "structuring of p1")]
    assert await cases.case_detail(engine, "rk_0000000000000000") is None


async def test_decisions_are_audited_in_their_transaction_and_final_ones_stay_final(engine: AsyncEngine) -> None:
    case_id = await open_case(engine)
    escalated = await cases.decide(engine, case_id, "escalate", "look closer", "alice", NOW,
                                   on_decided=audited("alice"))
    assert escalated.state == "escalated" and await aml.has_active_case(engine, "p1")
    # Escalating again changes nothing and audits nothing.
    assert (await cases.decide(engine, case_id, "escalate", "again", "bob", NOW, on_decided=audited("bob"))
            ).decided_by == "alice"
    reported = await cases.decide(engine, case_id, "report", "filed SAR 17", "carol", NOW + hours(1),
                                  on_decided=audited("carol"))
    assert (reported.state, reported.decided_by, reported.decision_note) == ("reported", "carol", "filed SAR 17")
    assert not await aml.has_active_case(engine, "p1")
    for decision in ("clear", "report", "escalate"):
        with pytest.raises(cases.CaseAlreadyDecided):
            await cases.decide(engine, case_id, decision, "no", "dave", NOW, on_decided=audited("dave"))
    entries = await audit.entries(engine, f"risk_case:{case_id}")
    assert [(e["actor"], e["action"]) for e in entries] == [("carol", "risk.case.reported"),
                                                            ("alice", "risk.case.escalated")]
    detail = await cases.case_detail(engine, case_id)
    assert detail is not None and [e.kind for e in detail.events] == ["opened", "escalate", "report"]
    with pytest.raises(RecordNotFound):
        await cases.decide(engine, "rk_0000000000000000", "clear", "x", "ops", NOW)


async def test_a_failing_audit_rolls_the_decision_back(engine: AsyncEngine) -> None:
    case_id = await open_case(engine)

    async def broken(_conn: AsyncConnection, _case: cases.RiskCase) -> None:
        raise RuntimeError("audit down")

    with pytest.raises(RuntimeError):
        await cases.decide(engine, case_id, "clear", "x", "ops", NOW, on_decided=broken)
    case = await cases.get_case(engine, case_id)
    assert case is not None and case.state == "open"


async def test_a_cleared_pattern_opens_no_new_case_but_a_new_one_does(engine: AsyncEngine) -> None:
    case_id = await open_case(engine)
    await cases.decide(engine, case_id, "clear", "known player", "ops", NOW)
    assert await open_case(engine) == case_id
    assert not await aml.has_active_case(engine, "p1")
    assert await open_case(engine, ids=("pay_1", "pay_2", "pay_3")) != case_id
    assert await aml.has_active_case(engine, "p1")


async def test_the_report_in_json_and_csv(engine: AsyncEngine) -> None:
    await deposit(engine, "pay_1", "p1", 190_000, at=NOW - hours(2))
    await payout(engine, "po_1", "p1", 5_050, currency="GBP", method="bank", at=NOW - hours(1))
    case_id = await open_case(engine, ids=("pay_1", "po_1"))
    await cases.decide(engine, case_id, "report", "filed, ref 42", "carol", NOW)
    await player(engine, "p1", created_at=NOW, kyc_status="verified")
    document = await cases.report(engine, case_id)
    assert document is not None
    assert document["subject"] == {"player_id": "p1", "kyc_status": "verified", "country": None}
    assert document["scenario"]["kind"] == "structuring"
    assert [(t["id"], t["amount"], t["currency"]) for t in document["transactions"]] == [
        ("pay_1", "1900.00", "EUR"), ("po_1", "50.50", "GBP")]
    assert [r["reason"] for r in document["reasons"]] == ["structuring of p1"]
    assert document["reviewer"] == {"decision": "reported", "by": "carol", "at": NOW.isoformat(),
                                    "note": "filed, ref 42"}
    rows = list(csv.DictReader(io.StringIO(cases.report_csv(document))))
    assert [(r["transaction_id"], r["amount"], r["reviewer"], r["decision_note"]) for r in rows] == [
        ("pay_1", "1900.00", "carol", "filed, ref 42"), ("po_1", "50.50", "carol", "filed, ref 42")]
    assert await cases.report(engine, "rk_0000000000000000") is None
