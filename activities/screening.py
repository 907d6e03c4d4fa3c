"""The risk engine as the deposit and payout screenings use it: the facts gathered, the rules evaluated, the decision
stored once per payment and stage (a retried screening gets the first decision back, so the history never holds
two), the market's KYC gates; and the AML scenarios, checked as money settles and swept daily."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from players import PlayerStore
from risk import aml, decisions
from risk.config import RiskConfig
from risk.engine import evaluate
from risk.facts import gather_facts, last_declared_country
from risk.geo import IpCountries
from risk.kyc import kyc_gate
from risk.types import Market, PlayerStanding, RiskSubject, StoredDecision
from workflows.types import (
    ActivityName,
    AmlSweepResult,
    AmlTrigger,
    RiskAssessment,
    ScreenDepositInput,
)


class RiskScreening:
    def __init__(
        self,
        engine: AsyncEngine,
        players: PlayerStore,
        config: RiskConfig,
        ip_countries: IpCountries,
        rates: dict[str, Decimal],
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.engine = engine
        self.players = players
        self.config = config
        self.ip_countries = ip_countries
        self.rates = rates
        self.clock = clock

    def all(self) -> list[Callable]:
        return [self.assess_deposit_instrument, self.check_aml, self.sweep_aml]

    async def assess(self, subject: RiskSubject) -> StoredDecision:
        """The payment's decision at its stage, in a transaction of its own."""
        async with self.engine.begin() as conn:
            return await self.assess_in(conn, subject)

    async def assess_in(self, conn: AsyncConnection, subject: RiskSubject,
                        standing: PlayerStanding | None = None) -> StoredDecision:
        """The payment's decision at its stage, gathered and recorded in the caller's transaction; when a try before
        this one recorded it, that one (this one is dropped). `standing`: the player's row, when the caller has
        read it."""
        ip_country = self.ip_countries.country(subject.ip_address) if subject.ip_address else None
        now = self.clock()
        facts = await gather_facts(conn, self.config, subject, ip_country, now, self.rates, standing)
        decision = evaluate(self.config, facts, subject.stage)
        return await decisions.record(conn, subject, ip_country, facts, decision, now)

    async def market(self, stored: StoredDecision, conn: AsyncConnection | None = None) -> Market:
        """The market of the payment's declared country, else of its IP country, else of the country the player's
        latest deposit declared; the default market when none is known."""
        country = _str(stored.facts.get("country")) or _str(stored.facts.get("ip_country"))
        if country is None:
            if conn is not None:
                country = await last_declared_country(conn, stored.player_id)
            else:
                async with self.engine.connect() as own:
                    country = await last_declared_country(own, stored.player_id)
        return self.config.market(country)

    @staticmethod
    def kyc_required(stored: StoredDecision, market: Market, kyc_status: str) -> str | None:
        """Why verified KYC is needed first ("kyc_required": the market's gate; "risk_step_up": the rules'
        verdict), or None. KYC is read fresh each time, so a player verified since passes."""
        if kyc_status == "verified":
            return None
        if kyc_gate(market, kyc_status, stored.operation) == "kyc_required":
            return "kyc_required"
        return "risk_step_up" if stored.decision.action == "step_up_kyc" else None

    @activity.defn(name=ActivityName.ASSESS_DEPOSIT_INSTRUMENT)
    async def assess_deposit_instrument(self, input: ScreenDepositInput) -> RiskAssessment:
        stored = await self.assess(deposit_subject(input, stage="instrument"))
        assessment = assessment_of(stored)
        if assessment.action == "step_up_kyc":
            # The player is at the PSP already: without verified KYC, a person looks at the capture instead.
            if await self.players.kyc_status(input.player_id) == "verified":
                assessment.action = "allow"
        return assessment

    async def check_player(self, player_id: str, after_deposit: str | None = None) -> list[str]:
        """The player's AML scenarios (`after_deposit`: those a deposit just credited can complete); a hit opens a
        case, or joins the player's active one of its kind. The ids of the cases hit."""
        now = self.clock()
        hits = await aml.evaluate(self.engine, self.config, player_id, now, rates=self.rates,
                                  after_deposit=after_deposit)
        return await aml.open_cases(self.engine, hits, now) if hits else []

    @activity.defn(name=ActivityName.CHECK_AML)
    async def check_aml(self, trigger: AmlTrigger) -> list[str]:
        deposit = trigger.subject_id if trigger.operation == "deposit" else None
        return await self.check_player(trigger.player_id, after_deposit=deposit)

    @activity.defn(name=ActivityName.SWEEP_AML)
    async def sweep_aml(self, since_iso: str) -> AmlSweepResult:
        players = await aml.players_active_since(self.engine, datetime.fromisoformat(since_iso))
        result = AmlSweepResult()
        for player_id in players:
            result.cases_hit += len(await self.check_player(player_id))
            result.players_checked += 1
            activity.heartbeat(result.players_checked)
        return result


def deposit_subject(input: ScreenDepositInput, stage: str = "pre") -> RiskSubject:
    return RiskSubject(
        operation="deposit", subject_id=input.payment_id, player_id=input.player_id,
        amount_minor=input.amount_minor, currency=input.currency, method=input.method or None,
        country=input.country, ip_address=input.ip_address, device_id=input.device_id,
        instrument=input.instrument, bin_country=input.bin_country, stage=stage,
    )


def assessment_of(stored: StoredDecision) -> RiskAssessment:
    d = stored.decision
    return RiskAssessment(stored.decision_id, d.action, d.score, d.level)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
