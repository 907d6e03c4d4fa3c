"""Scoring one deposit or payout against the rules file: pure, no I/O, and cheap (it runs on every deposit) —
the conditions were compiled when the file was loaded (risk/config.py)."""

from __future__ import annotations

from risk.config import Levels, RiskConfig, Thresholds
from risk.types import RiskDecision, RiskFacts, RuleHit


def evaluate(config: RiskConfig, facts: RiskFacts, stage: str = "pre") -> RiskDecision:
    """The enforced rules' hits decide the action and the level; the shadow rules' hits are recorded with the
    action they would have led to, never acted on (a new rule runs in shadow until its hits look right)."""
    hits: list[RuleHit] = []
    shadow_hits: list[RuleHit] = []
    for rule in config.rules_by_operation.get(facts.operation, ()):
        if rule.matches(facts):
            hit = RuleHit(rule.name, rule.score, rule.reason, rule.mode)
            (hits if rule.mode == "enforce" else shadow_hits).append(hit)
    score = sum(hit.score for hit in hits)
    shadow_score = score + sum(hit.score for hit in shadow_hits)
    return RiskDecision(
        action=action_of(config.thresholds, score),
        score=score,
        level=level_of(config.levels, score),
        hits=tuple(hits),
        shadow_hits=tuple(shadow_hits),
        shadow_action=action_of(config.thresholds, shadow_score),
        stage=stage,
    )


def action_of(thresholds: Thresholds, score: int) -> str:
    """The highest threshold the score reaches; below step_up_kyc: allow."""
    if score >= thresholds.deny:
        return "deny"
    if score >= thresholds.review:
        return "review"
    if score >= thresholds.step_up_kyc:
        return "step_up_kyc"
    return "allow"


def level_of(levels: Levels, score: int) -> str:
    if score >= levels.high:
        return "high"
    if score >= levels.medium:
        return "medium"
    return "low"
