"""AML cases for review (risk/aml.py opens them): list, look at one, decide, report.

A case is `open` until a reviewer decides: `escalate` (still active: the player's payouts keep going to review),
`clear` or `report` (final: another decision is CaseAlreadyDecided). Every decision is a timeline event, and the
caller's audit entry (`on_decided`) is written in the same transaction, like reconciliation's resolutions.
The report is what a reviewer files: the subject, the transactions of the pattern, the scenario, the reasons, the
reviewer's decision — as a JSON-able dict or CSV text (one row per transaction).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.errors import RecordNotFound
from ledger.models import payments, payouts
from payloop.money import to_decimal_string
from risk.facts import last_declared_country, players
from risk.models import risk_case_events, risk_cases
from risk.types import CASE_ACTIVE_STATES, CASE_DECISIONS

LIST_LIMIT_MAX = 500
PLAYER_TRANSACTIONS_MAX = 200  # the newest payments and payouts a case shows beside its pattern
SCENARIOS = {
    "cdd_threshold": "single or linked operations reaching the customer due-diligence threshold",
    "structuring": "several operations each just below the due-diligence threshold",
    "rapid_in_out": "money paid out soon after it was deposited, with little of it played",
    "unusual_route": "a payout by a method the player never deposited with",
    "shared_instrument": "a device or payment instrument shared by several players",
}
REPORT_COLUMNS = ("case_id", "scenario", "state", "player_id", "kyc_status", "country", "transaction_type",
                  "transaction_id",
                  "created_at", "amount", "currency", "method", "status", "reasons", "reviewer", "decided_at",
                  "decision_note")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RiskCase:
    case_id: str
    player_id: str
    kind: str  # one of CASE_KINDS
    state: str  # one of CASE_STATES
    reason: str  # the opening hit's
    subject_ids: list[str]  # every hit's payments and payouts
    facts: dict[str, Any]  # the latest hit's figures
    hits: int
    created_at: datetime
    updated_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None


@dataclass(frozen=True, slots=True)
class CaseEvent:
    event_id: int
    kind: str  # opened | hit | clear | escalate | report
    at: datetime
    actor: str | None
    reason: str
    subject_ids: list[str] | None
    facts: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Transaction:
    """A deposit or payout as a reviewer sees it."""

    type: str  # deposit | payout
    id: str
    created_at: datetime
    amount_minor: int
    currency: str
    method: str | None
    status: str
    credited_minor: int | None  # deposits


@dataclass(frozen=True, slots=True)
class CaseDetail:
    case: RiskCase
    events: list[CaseEvent]  # oldest first
    transactions: list[Transaction]  # the pattern's, oldest first
    payments: list[Transaction]  # the player's newest deposits
    payouts: list[Transaction]  # the player's newest payouts


class CaseAlreadyDecided(Exception):
    """The case was cleared or reported: its decision is final. The API answers 409."""

    code = "case_already_decided"

    def __init__(self, case_id: str, state: str) -> None:
        super().__init__(f"case {case_id} is {state}")
        self.case_id = case_id
        self.state = state


async def list_cases(engine: AsyncEngine, *, state: str | None = None, kind: str | None = None,
                     player_id: str | None = None, limit: int = 50, before: str | None = None) -> list[RiskCase]:
    """Cases newest first (created_at, then case id, descending); `before` is the last case id of the previous
    page (RecordNotFound if unknown)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIST_LIMIT_MAX}")
    c = risk_cases.c
    filters = {"state": state, "kind": kind, "player_id": player_id}
    query = (select(risk_cases).where(*(c[name] == value for name, value in filters.items() if value is not None))
             .order_by(c.created_at.desc(), c.case_id.desc()).limit(limit))
    async with engine.connect() as conn:
        if before is not None:
            cursor = (await conn.execute(select(c.created_at).where(c.case_id == before))).scalar_one_or_none()
            if cursor is None:
                raise RecordNotFound("risk_case", before)
            query = query.where(tuple_(c.created_at, c.case_id) < tuple_(cursor, before))
        return [_from_row(RiskCase, row) for row in await conn.execute(query)]


async def get_case(engine: AsyncEngine, case_id: str) -> RiskCase | None:
    async with engine.connect() as conn:
        return await _case(conn, case_id)


async def case_detail(engine: AsyncEngine, case_id: str) -> CaseDetail | None:
    """The case, its timeline, the transactions of its pattern and the player's newest payments and payouts."""
    async with engine.connect() as conn:
        case = await _case(conn, case_id)
        if case is None:
            return None
        events = [_from_row(CaseEvent, row) for row in await conn.execute(
            select(risk_case_events).where(risk_case_events.c.case_id == case_id)
            .order_by(risk_case_events.c.event_id))]
        pattern = await _transactions(conn, case.subject_ids)
        deposits = [_deposit(row) for row in await conn.execute(
            select(payments).where(payments.c.player_id == case.player_id)
            .order_by(payments.c.created_at.desc(), payments.c.payment_id.desc()).limit(PLAYER_TRANSACTIONS_MAX))]
        paid = [_payout(row) for row in await conn.execute(
            select(payouts).where(payouts.c.player_id == case.player_id)
            .order_by(payouts.c.created_at.desc(), payouts.c.payout_id.desc()).limit(PLAYER_TRANSACTIONS_MAX))]
    return CaseDetail(case, events, pattern, deposits, paid)


async def decide(engine: AsyncEngine, case_id: str, decision: str, note: str, actor: str, now: datetime, *,
                 on_decided: Callable[[AsyncConnection, RiskCase], Awaitable[None]] | None = None) -> RiskCase:
    """A reviewer's decision (`clear`, `escalate`, `report`): one transaction with its timeline event and whatever
    `on_decided(conn, case)` writes (the audit entry). RecordNotFound for an unknown case, CaseAlreadyDecided for a
    cleared or reported one; escalating an escalated case again changes nothing (no event, no audit)."""
    if decision not in CASE_DECISIONS:
        raise ValueError(f"decision must be one of {sorted(CASE_DECISIONS)}")
    state = CASE_DECISIONS[decision]
    async with engine.begin() as conn:
        c = risk_cases.c
        changed = await conn.execute(update(risk_cases).where(
            c.case_id == case_id, c.state.in_(CASE_ACTIVE_STATES), c.state != state).values(
            state=state, decided_by=actor, decided_at=now, decision_note=note, updated_at=now))
        case = await _case(conn, case_id)
        if case is None:
            raise RecordNotFound("risk_case", case_id)
        if changed.rowcount == 0:
            if case.state in CASE_ACTIVE_STATES:  # escalated, and escalated again
                return case
            raise CaseAlreadyDecided(case_id, case.state)
        await conn.execute(risk_case_events.insert().values(case_id=case_id, kind=decision, at=now, actor=actor,
                                                            reason=note))
        if on_decided is not None:
            await on_decided(conn, case)
    return case


async def report(engine: AsyncEngine, case_id: str) -> dict[str, Any] | None:
    """What the reviewer files for the case (None: no such case), JSON-able; amounts as decimal strings."""
    detail = await case_detail(engine, case_id)
    if detail is None:
        return None
    case = detail.case
    async with engine.connect() as conn:
        kyc_status = (await conn.execute(select(players.c.kyc_status).where(players.c.id == case.player_id))
                      ).scalar_one_or_none()
        country = await last_declared_country(conn, case.player_id)
    return {
        "case_id": case.case_id,
        "scenario": {"kind": case.kind, "description": SCENARIOS[case.kind]},
        "state": case.state,
        "subject": {"player_id": case.player_id, "kyc_status": kyc_status, "country": country},
        "opened_at": case.created_at.isoformat(),
        "reasons": [{"at": e.at.isoformat(), "reason": e.reason, "facts": e.facts or {}}
                    for e in detail.events if e.kind in ("opened", "hit")],
        "transactions": [_transaction_json(t) for t in detail.transactions],
        "reviewer": None if case.decided_at is None else {
            "decision": case.state, "by": case.decided_by, "at": case.decided_at.isoformat(),
            "note": case.decision_note or ""},
        "timeline": [{"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "reason": e.reason}
                     for e in detail.events],
    }


def report_csv(document: dict[str, Any]) -> str:
    """The report as CSV: one row per transaction of the pattern (one row without a transaction if it has none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    reviewer = document["reviewer"] or {}
    reasons = " | ".join(r["reason"] for r in document["reasons"])
    for t in document["transactions"] or [None]:
        t = t or {}
        subject = document["subject"]
        writer.writerow(_cell(value) for value in (
            document["case_id"], document["scenario"]["kind"], document["state"], subject["player_id"],
            subject["kyc_status"] or "", subject["country"] or "", t.get("type", ""), t.get("id", ""),
            t.get("created_at", ""), t.get("amount", ""), t.get("currency", ""), t.get("method") or "",
            t.get("status", ""), reasons, reviewer.get("by") or "", reviewer.get("at") or "",
            reviewer.get("note") or ""))
    return buffer.getvalue()


def _cell(value: str) -> str:
    """A reviewer's note (or any text) that a spreadsheet would run as a formula is written as text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def _transactions(conn: AsyncConnection, ids: list[str]) -> list[Transaction]:
    if not ids:
        return []
    found = [_deposit(row) for row in await conn.execute(select(payments).where(payments.c.payment_id.in_(ids)))]
    found += [_payout(row) for row in await conn.execute(select(payouts).where(payouts.c.payout_id.in_(ids)))]
    return sorted(found, key=lambda t: (t.created_at, t.id))


def _deposit(row: Any) -> Transaction:
    return Transaction("deposit", row.payment_id, row.created_at, row.amount_minor, row.currency, row.method,
                       row.status, row.credited_minor)


def _payout(row: Any) -> Transaction:
    return Transaction("payout", row.payout_id, row.created_at, row.amount_minor, row.currency, row.method,
                       row.status, None)


def _transaction_json(t: Transaction) -> dict[str, Any]:
    return {"type": t.type, "id": t.id, "created_at": t.created_at.isoformat(),
            "amount": to_decimal_string(t.amount_minor, t.currency), "currency": t.currency, "method": t.method,
            "status": t.status,
            "credited": to_decimal_string(t.credited_minor, t.currency) if t.credited_minor is not None else None}


async def _case(conn: AsyncConnection, case_id: str) -> RiskCase | None:
    row = (await conn.execute(select(risk_cases).where(risk_cases.c.case_id == case_id))).one_or_none()
    return _from_row(RiskCase, row) if row is not None else None


def _from_row(cls: type[R], row: Any) -> R:
    mapping = row._mapping
    return cls(**{f.name: mapping[f.name] for f in fields(cls)})  # type: ignore[arg-type]
