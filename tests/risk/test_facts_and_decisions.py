"""risk/facts.py and risk/decisions.py on SQLite and PostgreSQL: each fact from its table, only the facts asked
for, velocity that never counts the operation itself, and a decision recorded once per stage."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from risk import decisions
from risk.facts import gather_facts
from risk.models import risk_decisions, risk_observations
from risk.types import RiskDecision, RiskSubject, RuleHit, VelocityCount
from tests.risk.data_helpers import ALL_FACTS, NOW, StandInConfig, deposit, dispute, hours, payout, player

RATES = {"EUR": Decimal(1), "GBP": Decimal("1.17")}
COUNTS = tuple(VelocityCount(f"count_{s}_1h", s, 3600) for s in ("player", "device", "instrument", "ip"))


def subject(subject_id: str, player_id: str = "p1", **changes: object) -> RiskSubject:
    base = RiskSubject(operation="deposit", subject_id=subject_id, player_id=player_id, amount_minor=10_000,
                       currency="GBP", method="card", country="DE", ip_address="81.2.69.1", device_id="dev1")
    return replace(base, **changes)  # type: ignore[arg-type]


def decision(action: str = "allow", score: int = 0, stage: str = "pre") -> RiskDecision:
    return RiskDecision(action=action, score=score, level="low", stage=stage,
                        hits=(RuleHit("ip_country_differs", score, "ip_country_differs", "enforce"),) if score else (),
                        shadow_hits=(RuleHit("no_device_id", 5, "no_device_id", "shadow"),))


async def scored(engine: AsyncEngine, s: RiskSubject, config: StandInConfig, at=NOW) -> None:  # noqa: ANN001
    async with engine.begin() as conn:
        facts = await gather_facts(conn, config, s, "GB", at, RATES)
        await decisions.record(conn, s, "GB", facts, decision(stage=s.stage), at)


async def test_player_facts_come_from_the_ledger_and_the_players_table(engine: AsyncEngine) -> None:
    await player(engine, "p1", created_at=NOW - hours(24 * 10 + 1), kyc_status="verified")
    await deposit(engine, "pay_1", "p1", 10_000)
    await deposit(engine, "pay_2", "p1", 5_000, currency="GBP")
    await deposit(engine, "pay_3", "p1", 99_000, credited=False)
    await deposit(engine, "pay_4", "p1", 7_000, currency="XXX")  # no rate: counted, worth nothing in euro
    await deposit(engine, "pay_o", "other", 50_000)
    await payout(engine, "po_1", "p1", 3_000)
    await payout(engine, "po_2", "p1", 4_000, status="failed")
    await dispute(engine, "pay_1", "p1", 10_000)
    async with engine.connect() as conn:
        facts = await gather_facts(conn, StandInConfig(facts=ALL_FACTS), subject("pay_9"), "GB", NOW, RATES)
    assert facts.amount_eur_minor == 11_700 and facts.ip_country == "GB"
    assert (facts.kyc_status, facts.account_age_days) == ("verified", 10)
    assert (facts.lifetime_deposits_eur_minor, facts.lifetime_deposit_count) == (10_000 + 5_850, 3)
    assert (facts.lifetime_payouts_eur_minor, facts.chargebacks) == (3_000, 1)
    assert (facts.players_on_device, facts.players_on_instrument) == (1, None)


async def test_a_player_never_seen_is_new_and_unverified(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        facts = await gather_facts(conn, StandInConfig(facts=ALL_FACTS), subject("pay_9", currency="JPY"), None,
                                   NOW, RATES)
    assert (facts.kyc_status, facts.account_age_days, facts.amount_eur_minor) == ("unverified", 0, None)


async def test_only_the_facts_asked_for_are_gathered(engine: AsyncEngine) -> None:
    await payout(engine, "po_1", "p1", 3_000)
    await dispute(engine, "pay_1", "p1", 10_000)
    async with engine.connect() as conn:
        facts = await gather_facts(conn, StandInConfig(), subject("pay_9"), None, NOW, RATES)
    assert (facts.lifetime_payouts_eur_minor, facts.chargebacks, facts.players_on_device) == (0, 0, None)
    assert facts.velocity == {}


async def test_velocity_counts_each_subject_within_its_window_but_never_the_operation_itself(
        engine: AsyncEngine) -> None:
    config = StandInConfig(velocity_counts=COUNTS)
    await scored(engine, subject("pay_old", instrument="fp1"), config, at=NOW - hours(2))
    await scored(engine, subject("pay_a", instrument="fp1"), config, at=NOW - hours(0.5))
    await scored(engine, subject("pay_b", player_id="p2", device_id="dev2", ip_address="81.2.69.2",
                                 instrument="fp1"), config, at=NOW - hours(0.2))
    await scored(engine, subject("po_1", operation="payout"), config, at=NOW - hours(0.1))  # another kind
    async with engine.connect() as conn:
        facts = await gather_facts(conn, config, subject("pay_a", instrument="fp1"), None, NOW, RATES)
        unknown = await gather_facts(conn, config, subject("pay_z", device_id=None, ip_address=None), None, NOW,
                                     RATES)
    assert facts.velocity == {"count_player_1h": 0, "count_device_1h": 0, "count_instrument_1h": 1,
                              "count_ip_1h": 0}
    assert unknown.velocity == {"count_player_1h": 1, "count_device_1h": None, "count_instrument_1h": None,
                                "count_ip_1h": None}


async def test_players_on_a_device_or_instrument_include_the_player(engine: AsyncEngine) -> None:
    config = StandInConfig(facts=ALL_FACTS)
    await scored(engine, subject("pay_1", player_id="p2", instrument="fp1"), config)
    await scored(engine, subject("pay_2", player_id="p3", device_id="dev9", instrument="fp1"), config)
    async with engine.connect() as conn:
        facts = await gather_facts(conn, config, subject("pay_3", instrument="fp1"), None, NOW, RATES)
    assert (facts.players_on_device, facts.players_on_instrument) == (2, 3)


async def test_a_decision_is_recorded_once_per_stage_with_its_observation(engine: AsyncEngine) -> None:
    s = subject("pay_1")
    config = StandInConfig(facts=ALL_FACTS)
    async with engine.begin() as conn:
        facts = await gather_facts(conn, config, s, "GB", NOW, RATES)
        assert await decisions.stored(conn, "deposit", "pay_1", "pre") is None
        first = await decisions.record(conn, s, "GB", facts, decision("review", 60), NOW)
    async with engine.begin() as conn:
        # A retry with another outcome and moment gets the first decision back, unchanged.
        again = await decisions.record(conn, s, "GB", facts, decision("deny", 100), NOW + hours(1))
        assert await decisions.stored(conn, "deposit", "pay_1", "pre") == first
    assert again == first
    assert (first.decision.action, first.decision.score, first.created_at) == ("review", 60, NOW)
    assert first.decision.hits[0].rule == "ip_country_differs"
    assert first.decision.shadow_hits[0].mode == "shadow"
    assert first.facts["device_known"] is True and "device_id" not in first.facts
    assert "81.2.69.1" not in str(first.facts)
    instrument = replace(s, stage="instrument", instrument="fp1", bin_country="GB")
    async with engine.begin() as conn:
        await decisions.record(conn, instrument, "GB", facts, decision("allow", 0, "instrument"), NOW + hours(1))
        observations = (await conn.execute(select(risk_observations))).all()
        count = (await conn.execute(select(func.count()).select_from(risk_decisions))).scalar_one()
    assert count == 2
    # One observation per operation, at its first stage's moment, with what the later stage learnt.
    assert [(o.subject_id, o.stage, o.instrument, o.created_at) for o in observations] == [
        ("pay_1", "instrument", "fp1", NOW)]
    assert [d.stage for d in await decisions.for_subject(engine, "deposit", "pay_1")] == ["pre", "instrument"]
    assert await decisions.for_subject(engine, "payout", "pay_1") == []
