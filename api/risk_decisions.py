"""A payment's or payout's risk decisions as ops see them: every stage, with the rule hits (clients see only the
risk level, never which rule fired)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from api.schemas import RiskDecisionView, RiskHitView
from risk import decisions
from risk.types import RuleHit


async def risk_views(engine: AsyncEngine, operation: str, subject_id: str) -> list[RiskDecisionView]:
    return [
        RiskDecisionView(
            decision_id=stored.decision_id, stage=stored.stage, action=stored.decision.action,
            score=stored.decision.score, level=stored.decision.level, hits=_hits(stored.decision.hits),
            shadow_hits=_hits(stored.decision.shadow_hits), shadow_action=stored.decision.shadow_action,
            created_at=stored.created_at.isoformat(),
        )
        for stored in await decisions.for_subject(engine, operation, subject_id)
    ]


def _hits(hits: tuple[RuleHit, ...]) -> list[RiskHitView]:
    return [RiskHitView(rule=h.rule, score=h.score, reason=h.reason, mode=h.mode) for h in hits]
