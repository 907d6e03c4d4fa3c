"""The deposit screening activity on SQLite and PostgreSQL: the risk decision (with its observation) and the
deposit's count against the limits are written in one transaction, so a screening that fails half-way leaves
neither, and a retry gets the first decision back without counting twice."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.deposit import DepositActivities
from activities.screening import RiskScreening
from ledger import Ledger
from payloop.settings import Settings
from players import PlayerStore
from players.controls import deposit_limit_usage
from psp.routing import load_routing
from psp.routing.health import HealthStore
from risk.config import parse_risk
from risk.geo import IpCountries
from risk.models import risk_decisions, risk_observations
from workflows.types import ScreenDepositInput

NOW = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)
RATES = {"EUR": Decimal(1)}
RULES = """\
thresholds: {step_up_kyc: 40, review: 60, deny: 100}
levels: {medium: 30, high: 60}
rules:
  - name: blocked_country
    description: "A country the casino does not serve."
    when:
      country: XX
    score: 100
"""


class Crash(Exception):
    pass


def screening(engine: AsyncEngine, players: PlayerStore | None = None) -> DepositActivities:
    players = players or PlayerStore(engine, RATES)
    risk = RiskScreening(engine, players, parse_risk(RULES), IpCountries.load(None), RATES, clock=lambda: NOW)
    routing = load_routing(Settings())
    return DepositActivities(Ledger(engine), players, risk, {}, routing, HealthStore(engine, routing),
                             clock=lambda: NOW)


async def written(engine: AsyncEngine, payment_id: str) -> tuple[int, ...]:
    """(decisions, observations, limit counts) of the payment."""
    counts = []
    async with engine.connect() as conn:
        for column in (risk_decisions.c.subject_id, risk_observations.c.subject_id, deposit_limit_usage.c.payment_id):
            query = sa.select(sa.func.count()).select_from(column.table).where(column == payment_id)
            counts.append((await conn.execute(query)).scalar_one())
    return tuple(counts)


async def test_the_decision_and_the_count_commit_together(engine: AsyncEngine) -> None:
    allowed = ScreenDepositInput("pay_ok", "p1", 1_000, "EUR", method="card", country="DE")
    first = await screening(engine).screen_deposit(allowed)
    assert first.outcome == "allow" and first.risk is not None and first.risk.action == "allow"
    assert await written(engine, "pay_ok") == (1, 1, 1)
    # A retry (the activity's result was lost) gets the same decision and counts nothing more.
    assert await screening(engine).screen_deposit(allowed) == first
    assert await written(engine, "pay_ok") == (1, 1, 1)

    denied = await screening(engine).screen_deposit(ScreenDepositInput("pay_xx", "p1", 1_000, "EUR", country="XX"))
    assert (denied.outcome, denied.code, denied.risk.action if denied.risk else None) == (
        "deny", "risk_denied", "deny")
    assert await written(engine, "pay_xx") == (1, 1, 0)  # decided and observed, never counted


async def test_a_screening_that_fails_after_the_risk_decision_leaves_nothing(engine: AsyncEngine) -> None:
    players = PlayerStore(engine, RATES)
    activities = screening(engine, players)
    real = players.screen_deposit

    async def crash_after_the_gate(*args, gate, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        async def gate_then_crash(conn, controls):  # noqa: ANN001, ANN202
            await gate(conn, controls)  # the decision and its observation are written in the transaction
            raise Crash
        return await real(*args, gate=gate_then_crash, **kwargs)

    players.screen_deposit = crash_after_the_gate  # type: ignore[method-assign]
    deposit = ScreenDepositInput("pay_crash", "p2", 1_000, "EUR", country="DE")
    with pytest.raises(Crash):
        await activities.screen_deposit(deposit)
    assert await written(engine, "pay_crash") == (0, 0, 0)
    players.screen_deposit = real  # type: ignore[method-assign]
    assert (await activities.screen_deposit(deposit)).outcome == "allow"
    assert await written(engine, "pay_crash") == (1, 1, 1)
