"""What the risk tests build on: a stand-in for risk.config.RiskConfig, and payments, payouts, disputes, bets and
players written straight into their tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.games import game_transactions
from ledger.models import disputes, payments, payouts
from risk.facts import players
from risk.types import AmlSettings, VelocityCount

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


@dataclass(frozen=True)
class StandInConfig:
    """What the gatherer and AML read of a RiskConfig: the AML settings, the counts, and which facts rules read."""

    aml: AmlSettings = AmlSettings()
    velocity_counts: tuple[VelocityCount, ...] = ()
    facts: frozenset[str] = field(default_factory=frozenset)

    def needs(self, name: str, operation: str | None = None) -> bool:
        return name in self.facts

    def velocity_counts_for(self, operation: str) -> tuple[VelocityCount, ...]:
        return self.velocity_counts


ALL_FACTS = frozenset({"kyc_status", "account_age_days", "lifetime_deposits_eur", "lifetime_deposit_count",
                       "lifetime_payouts_eur", "chargebacks", "players_on_device", "players_on_instrument"})


async def deposit(engine: AsyncEngine, payment_id: str, player: str, amount_minor: int, *, at: datetime = NOW,
                  currency: str = "EUR", method: str = "card", credited: bool = True) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(payments).values(
            payment_id=payment_id, client_id="c1", player_id=player, method=method, currency=currency,
            amount_minor=amount_minor, status="credited" if credited else "failed", created_at=at, updated_at=at,
            captured_minor=amount_minor if credited else 0, credited_minor=amount_minor if credited else 0))


async def payout(engine: AsyncEngine, payout_id: str, player: str, amount_minor: int, *, at: datetime = NOW,
                 currency: str = "EUR", method: str | None = "card", status: str = "paid") -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(payouts).values(
            payout_id=payout_id, client_id="c1", player_id=player, method=method, currency=currency,
            amount_minor=amount_minor, status=status, created_at=at, updated_at=at))


async def dispute(engine: AsyncEngine, payment_id: str, player: str, amount_minor: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(disputes).values(
            psp="card", dispute_id=f"dp_{payment_id}", payment_id=payment_id, player_id=player, currency="EUR",
            amount_minor=amount_minor, held_minor=amount_minor, shortfall_minor=0, state="opened", opened_at=NOW))


async def bet(engine: AsyncEngine, transaction_id: str, player: str, amount_minor: int, *, at: datetime = NOW,
              currency: str = "EUR") -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(game_transactions).values(
            transaction_id=transaction_id, kind="bet", player_id=player, currency=currency,
            amount_minor=amount_minor, round_id=f"r_{transaction_id}", game_id="slots", transfer_id=f"t_{transaction_id}",
            created_at=at))


async def player(engine: AsyncEngine, player_id: str, *, created_at: datetime, kyc_status: str = "verified"
                 ) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(players).values(id=player_id, kyc_status=kyc_status, updated_at=NOW,
                                                  created_at=created_at))


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def row(values: Any) -> dict[str, Any]:
    return dict(values._mapping)
