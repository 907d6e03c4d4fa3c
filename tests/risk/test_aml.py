"""risk/aml.py on SQLite and PostgreSQL: every scenario fires on its pattern and not on a clean player; hits open
one active case per player and kind, join it as timeline events, and a pattern seen again changes nothing."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.fx import FxConversion, record_conversion
from risk import aml, decisions
from risk.facts import gather_facts
from risk.models import risk_case_events, risk_cases
from risk.types import AmlSettings, CaseHit, RiskDecision, RiskSubject
from tests.risk.data_helpers import NOW, StandInConfig, bet, deposit, hours, payout

CONFIG = StandInConfig(aml=AmlSettings())  # CDD 2000.00 EUR / 24 h; structuring 1800.00–1999.99 x3 / 72 h; …
RATES = {"EUR": Decimal(1), "GBP": Decimal("1.17")}


async def kinds(engine: AsyncEngine, player: str) -> dict[str, CaseHit]:
    hits = await aml.evaluate(engine, CONFIG, player, NOW, rates=RATES)
    return {hit.kind: hit for hit in hits}


async def observe(engine: AsyncEngine, subject: RiskSubject, at=NOW) -> None:  # noqa: ANN001
    async with engine.begin() as conn:
        facts = await gather_facts(conn, CONFIG, subject, None, at, RATES)
        await decisions.record(conn, subject, None, facts, RiskDecision("allow", 0, "low"), at)


async def clean_player(engine: AsyncEngine) -> None:
    """Played what they deposited, paid out by their deposit method, below every threshold, alone on their card."""
    await deposit(engine, "pay_c1", "clean", 50_000, at=NOW - hours(30))
    await bet(engine, "b_c1", "clean", 60_000, at=NOW - hours(29))
    await payout(engine, "po_c1", "clean", 40_000, at=NOW - hours(2))
    await observe(engine, RiskSubject("deposit", "pay_c1", "clean", 50_000, "EUR", device_id="dev_c",
                                      instrument="fp_c"), at=NOW - hours(30))


async def test_a_clean_player_has_no_hit(engine: AsyncEngine) -> None:
    await clean_player(engine)
    assert await kinds(engine, "clean") == {}
    assert await kinds(engine, "nobody") == {}


async def test_cdd_threshold_fires_on_linked_deposits_and_on_payouts_per_direction(engine: AsyncEngine) -> None:
    await clean_player(engine)
    await deposit(engine, "pay_1", "p1", 120_000, at=NOW - hours(23))
    await deposit(engine, "pay_2", "p1", 69_300, currency="GBP", at=NOW - hours(1))  # 810.81 EUR
    await deposit(engine, "pay_3", "p1", 500_000, at=NOW - hours(25))  # outside the window
    await deposit(engine, "pay_4", "p1", 500_000, at=NOW - hours(1), credited=False)
    hit = (await kinds(engine, "p1"))["cdd_threshold"]
    assert set(hit.subject_ids) == {"pay_1", "pay_2"}
    assert hit.facts["sum_eur_minor"] == 120_000 + 81_081 and hit.facts["direction"] == "deposit"
    await payout(engine, "po_1", "p2", 150_000, at=NOW - hours(3), status="pending")
    await payout(engine, "po_2", "p2", 40_000, at=NOW - hours(2))
    await payout(engine, "po_3", "p2", 90_000, at=NOW - hours(2), status="failed")
    assert "cdd_threshold" not in await kinds(engine, "p2")  # 1900.00
    # A payout being screened is not in the payouts table yet: its observation stands in for it.
    await observe(engine, RiskSubject("payout", "po_4", "p2", 10_000, "EUR"), at=NOW)
    hit = (await kinds(engine, "p2"))["cdd_threshold"]
    assert set(hit.subject_ids) == {"po_1", "po_2", "po_4"} and hit.facts["direction"] == "payout"
    # Two payouts in flight together, neither recorded yet, are linked before either leaves.
    await observe(engine, RiskSubject("payout", "po_5", "p3", 150_000, "EUR"), at=NOW - hours(1))
    assert "cdd_threshold" not in await kinds(engine, "p3")
    await observe(engine, RiskSubject("payout", "po_6", "p3", 60_000, "EUR"), at=NOW)
    assert set((await kinds(engine, "p3"))["cdd_threshold"].subject_ids) == {"po_5", "po_6"}


async def test_structuring_fires_on_operations_just_below_the_threshold(engine: AsyncEngine) -> None:
    await clean_player(engine)
    for n, amount in enumerate((199_999, 180_000, 195_000)):
        await deposit(engine, f"pay_{n}", "p1", amount, at=NOW - hours(70 - n * 24))
    assert set((await kinds(engine, "p1"))["structuring"].subject_ids) == {"pay_0", "pay_1", "pay_2"}
    for n, amount in enumerate((199_999, 179_999, 195_000, 200_000)):  # two below 1800.00 or at the threshold
        await deposit(engine, f"pay_q{n}", "p2", amount, at=NOW - hours(n))
    await deposit(engine, "pay_q9", "p2", 190_000, at=NOW - hours(73))  # outside the window
    assert "structuring" not in await kinds(engine, "p2")


async def test_rapid_in_out_fires_on_a_payout_soon_after_a_deposit_barely_played(engine: AsyncEngine) -> None:
    await clean_player(engine)
    await deposit(engine, "pay_1", "p1", 100_000, at=NOW - hours(5))
    await bet(engine, "b_1", "p1", 99_999, at=NOW - hours(4))
    await bet(engine, "b_0", "p1", 50_000, at=NOW - hours(6))  # before the deposit
    await payout(engine, "po_1", "p1", 90_000, at=NOW - hours(1), status="processing")
    hit = (await kinds(engine, "p1"))["rapid_in_out"]
    assert hit.subject_ids == ("pay_1", "po_1") and hit.facts["turnover_minor"] == 99_999
    await bet(engine, "b_2", "p1", 1, at=NOW - hours(3))  # now played through: 100 %
    assert "rapid_in_out" not in await kinds(engine, "p1")
    # The screened payout, before any is recorded.
    await deposit(engine, "pay_2", "p2", 100_000, at=NOW - hours(2))
    assert "rapid_in_out" not in await kinds(engine, "p2")
    await observe(engine, RiskSubject("payout", "po_9", "p2", 80_000, "EUR"))
    assert (await kinds(engine, "p2"))["rapid_in_out"].subject_ids == ("pay_2", "po_9")


async def test_rapid_in_out_measures_a_converted_deposit_in_the_wallet_currency(engine: AsyncEngine) -> None:
    # A USD 100.00 deposit credited to a EUR wallet as 89.55, then played in EUR.
    await deposit(engine, "pay_fx", "p1", 10_000, currency="USD", at=NOW - hours(5))
    async with engine.begin() as conn:
        await record_conversion(conn, FxConversion(
            reference="pay_fx", kind="deposit", player_id="p1", from_currency="USD", from_minor=10_000,
            to_currency="EUR", to_minor=8_955, mid_minor=9_000, margin_minor=45, rate="0.9000", spread_bps=50,
            source="sandbox-fx", rate_id="fxq_1", expires_at="2026-12-01T12:01:00+00:00"), NOW - hours(5))
    await bet(engine, "b_1", "p1", 8_954, at=NOW - hours(4))
    await payout(engine, "po_1", "p1", 5_000, currency="USD", at=NOW - hours(1), status="processing")
    hit = (await kinds(engine, "p1"))["rapid_in_out"]  # 8954 of 8955 EUR staked: just under
    assert (hit.facts["currency"], hit.facts["deposit_minor"], hit.facts["turnover_minor"]) == ("EUR", 8_955, 8_954)
    await bet(engine, "b_2", "p1", 1, at=NOW - hours(3))
    assert "rapid_in_out" not in await kinds(engine, "p1")


async def test_unusual_route_fires_on_a_payout_by_a_method_never_deposited_with(engine: AsyncEngine) -> None:
    await clean_player(engine)
    await deposit(engine, "pay_1", "p1", 10_000, method="card", at=NOW - hours(100))
    await deposit(engine, "pay_2", "p1", 10_000, method="ewallet", at=NOW - hours(100), credited=False)
    await payout(engine, "po_1", "p1", 5_000, method="card", at=NOW - hours(90))
    await payout(engine, "po_2", "p1", 5_000, method="ewallet", at=NOW - hours(50))
    await payout(engine, "po_3", "p1", 5_000, method="bank", at=NOW - hours(40), status="rejected")
    hit = (await kinds(engine, "p1"))["unusual_route"]
    assert hit.subject_ids == ("po_2",) and hit.facts == {"methods": ["ewallet"]}


async def test_shared_instrument_fires_on_a_card_or_device_seen_with_other_players(engine: AsyncEngine) -> None:
    await clean_player(engine)
    await observe(engine, RiskSubject("deposit", "pay_1", "p1", 1_000, "EUR", device_id="dev1", instrument="fp1"))
    assert "shared_instrument" not in await kinds(engine, "p1")
    await observe(engine, RiskSubject("deposit", "pay_2", "p2", 1_000, "EUR", device_id="dev2", instrument="fp1"))
    await observe(engine, RiskSubject("payout", "po_3", "p3", 1_000, "EUR", device_id="dev1"))
    hits = [h for h in await aml.evaluate(engine, CONFIG, "p1", NOW) if h.kind == "shared_instrument"]
    assert sorted((h.facts["link"], h.facts["players"], h.subject_ids) for h in hits) == [
        ("device", 2, ("pay_1",)), ("instrument", 2, ("pay_1",))]
    assert "shared_instrument" not in await kinds(engine, "clean")


async def test_after_a_deposit_only_what_a_deposit_can_complete_is_checked(engine: AsyncEngine) -> None:
    """The check after a credit: the deposits' CDD threshold and structuring, and that deposit's own device and
    instrument; payout patterns and the player's other devices wait for the daily re-check."""
    await deposit(engine, "pay_1", "p1", 100_000, method="card", at=NOW - hours(5))
    await payout(engine, "po_1", "p1", 250_000, method="ewallet", at=NOW - hours(1))  # CDD, unusual, rapid
    await observe(engine, RiskSubject("deposit", "pay_1", "p1", 100_000, "EUR", device_id="dev_old"))
    await observe(engine, RiskSubject("deposit", "pay_x", "p2", 1_000, "EUR", device_id="dev_old"))
    everything = {hit.kind for hit in await aml.evaluate(engine, CONFIG, "p1", NOW, rates=RATES)}
    assert everything == {"cdd_threshold", "unusual_route", "rapid_in_out", "shared_instrument"}

    await deposit(engine, "pay_2", "p1", 100_000, method="card", at=NOW)  # 2,000.00 EUR of deposits in 24 h
    await observe(engine, RiskSubject("deposit", "pay_2", "p1", 100_000, "EUR", device_id="dev_new"))
    hits = await aml.evaluate(engine, CONFIG, "p1", NOW, rates=RATES, after_deposit="pay_2")
    assert [(hit.kind, hit.facts["direction"], set(hit.subject_ids)) for hit in hits] == [
        ("cdd_threshold", "deposit", {"pay_1", "pay_2"})]
    await observe(engine, RiskSubject("deposit", "pay_y", "p3", 1_000, "EUR", device_id="dev_new"))
    await observe(engine, RiskSubject("deposit", "pay_z", "p4", 1_000, "EUR", device_id="dev_new"))
    shared = [hit for hit in await aml.evaluate(engine, CONFIG, "p1", NOW, rates=RATES, after_deposit="pay_2")
              if hit.kind == "shared_instrument"]
    assert [(hit.facts["device"], hit.facts["players"]) for hit in shared] == [("dev_new", 3)]


async def test_hits_open_one_active_case_per_player_and_kind_and_join_it(engine: AsyncEngine) -> None:
    first = CaseHit("structuring", "p1", "three just below", ("pay_1", "pay_2", "pay_3"), {"operations": 3})
    [case_id] = await aml.open_cases(engine, [first], NOW)
    assert case_id.startswith("rk_") and await aml.has_active_case(engine, "p1")
    assert not await aml.has_active_case(engine, "p2")
    # The same pattern again (the daily re-check) changes nothing; a new one joins the case.
    assert await aml.open_cases(engine, [first], NOW + hours(1)) == [case_id]
    grown = replace(first, subject_ids=("pay_1", "pay_2", "pay_3", "pay_4"), facts={"operations": 4})
    other_kind = CaseHit("cdd_threshold", "p1", "linked deposits", ("pay_1",))
    ids = await aml.open_cases(engine, [grown, other_kind], NOW + hours(2))
    assert ids[0] == case_id and ids[1] != case_id
    async with engine.connect() as conn:
        case = (await conn.execute(select(risk_cases).where(risk_cases.c.case_id == case_id))).one()
        events = (await conn.execute(select(risk_case_events.c.kind).where(risk_case_events.c.case_id == case_id)
                                     .order_by(risk_case_events.c.event_id))).scalars().all()
        active = (await conn.execute(select(func.count()).select_from(risk_cases))).scalar_one()
    assert (case.state, case.hits, case.facts) == ("open", 2, {"operations": 4})
    assert case.subject_ids == ["pay_1", "pay_2", "pay_3", "pay_4"]
    assert events == ["opened", "hit"] and active == 2


async def test_concurrent_hits_of_one_kind_share_one_case(engine: AsyncEngine) -> None:
    import asyncio

    hits = [CaseHit("cdd_threshold", "p1", f"hit {n}", (f"pay_{n}",)) for n in range(6)]
    results = await asyncio.gather(*(aml.open_cases(engine, [hit], NOW) for hit in hits))
    assert len({case_id for ids in results for case_id in ids}) == 1
    async with engine.connect() as conn:
        case = (await conn.execute(select(risk_cases))).one()
    assert case.hits == 6 and sorted(case.subject_ids) == [f"pay_{n}" for n in range(6)]


async def test_the_daily_recheck_finds_the_players_with_recent_money(engine: AsyncEngine) -> None:
    await deposit(engine, "pay_1", "p1", 1_000, at=NOW - hours(2))
    await deposit(engine, "pay_2", "p2", 1_000, at=NOW - hours(48))
    await payout(engine, "po_1", "p3", 1_000, at=NOW - hours(1))
    assert await aml.players_active_since(engine, NOW - hours(24)) == ["p1", "p3"]
