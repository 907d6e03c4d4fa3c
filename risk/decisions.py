"""The record of what the rules decided: one row per (operation, subject, stage), written once.

A screening activity retried after it recorded its decision must not score again (the facts moved on: its own
observation now counts in the velocity): it asks `stored(...)` first and takes that decision. `record` writes the
decision and the operation's observation (risk_observations: what velocity and links count) in the caller's
transaction; a second `record` of the same stage returns the first decision unchanged and writes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payloop.db import insert_if_missing
from risk.facts import facts_json
from risk.models import risk_decisions, risk_observations
from risk.types import RiskDecision, RiskFacts, RiskSubject, RuleHit, StoredDecision

STAGE_ORDER = {"pre": 0, "instrument": 1}


def decision_id_for(operation: str, subject_id: str, stage: str) -> str:
    return "rd_" + hashlib.sha256(f"{operation}:{subject_id}:{stage}".encode()).hexdigest()[:16]


async def record(conn: AsyncConnection, subject: RiskSubject, ip_country: str | None, facts: RiskFacts,
                 decision: RiskDecision, now: datetime) -> StoredDecision:
    """Store the decision of `subject` at its stage and its observation, in the caller's transaction; if that
    stage was recorded already, the stored decision (this one is dropped, nothing is written)."""
    decision_id = decision_id_for(subject.operation, subject.subject_id, subject.stage)
    recorded_facts = facts_json(facts) | {"ip_country": ip_country}
    inserted = await insert_if_missing(conn, risk_decisions, {
        "decision_id": decision_id, "operation": subject.operation, "subject_id": subject.subject_id,
        "stage": subject.stage, "player_id": subject.player_id, "action": decision.action, "score": decision.score,
        "level": decision.level, "hits": _hits_json(decision.hits), "shadow_hits": _hits_json(decision.shadow_hits),
        "shadow_action": decision.shadow_action, "facts": recorded_facts, "created_at": now,
    })
    if not inserted:  # a try before this one recorded it: that one stands
        stored_ = await stored(conn, subject.operation, subject.subject_id, subject.stage)
        assert stored_ is not None
        return stored_
    await _observe(conn, subject, facts, now)
    return StoredDecision(decision_id=decision_id, operation=subject.operation, subject_id=subject.subject_id,
                          player_id=subject.player_id, stage=subject.stage,
                          decision=replace(decision, stage=subject.stage), facts=recorded_facts, created_at=now)


async def stored(conn: AsyncConnection, operation: str, subject_id: str, stage: str) -> StoredDecision | None:
    row = (await conn.execute(select(risk_decisions).where(
        risk_decisions.c.decision_id == decision_id_for(operation, subject_id, stage)))).one_or_none()
    return _stored(row) if row is not None else None


async def for_subject(engine: AsyncEngine, operation: str, subject_id: str) -> list[StoredDecision]:
    """The decisions of one deposit or payout, stage by stage ("pre" first)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(risk_decisions).where(risk_decisions.c.operation == operation,
                                                               risk_decisions.c.subject_id == subject_id))
        decisions = [_stored(row) for row in rows]
    return sorted(decisions, key=lambda d: STAGE_ORDER.get(d.stage, len(STAGE_ORDER)))


async def _observe(conn: AsyncConnection, subject: RiskSubject, facts: RiskFacts, now: datetime) -> None:
    """One observation per operation, from its first recorded stage (its moment); a later stage adds what it
    learnt (the instrument) to it."""
    o = risk_observations.c
    inserted = await insert_if_missing(conn, risk_observations, {
        "operation": subject.operation, "subject_id": subject.subject_id, "stage": subject.stage,
        "player_id": subject.player_id, "device_id": subject.device_id, "ip_address": subject.ip_address,
        "instrument": subject.instrument, "amount_eur_minor": facts.amount_eur_minor, "method": subject.method,
        "created_at": now,
    })
    if not inserted:
        learnt: dict[str, Any] = {"stage": subject.stage}
        for name in ("device_id", "ip_address", "instrument"):
            if (value := getattr(subject, name)) is not None:
                learnt[name] = value
        await conn.execute(update(risk_observations).where(
            o.operation == subject.operation, o.subject_id == subject.subject_id).values(**learnt))


def _hits_json(hits: tuple[RuleHit, ...]) -> list[dict[str, Any]]:
    return [asdict(hit) for hit in hits]


def _hits(items: list[Mapping[str, Any]]) -> tuple[RuleHit, ...]:
    return tuple(RuleHit(rule=h["rule"], score=h["score"], reason=h["reason"], mode=h["mode"]) for h in items)


def _stored(row: Any) -> StoredDecision:
    return StoredDecision(
        decision_id=row.decision_id, operation=row.operation, subject_id=row.subject_id, player_id=row.player_id,
        stage=row.stage, facts=row.facts, created_at=row.created_at,
        decision=RiskDecision(action=row.action, score=row.score, level=row.level, hits=_hits(row.hits),
                              shadow_hits=_hits(row.shadow_hits), shadow_action=row.shadow_action, stage=row.stage),
    )
