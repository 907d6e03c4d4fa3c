"""Player profiles and responsible-gaming controls: KYC status, self-exclusion, deposit limits.

Shared by the API (operators set them) and the screening activity (deposits obey them). The screening rule
itself is a pure function so it can be tested against any clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payloop.db import UtcDateTime, insert_if_missing, metadata

players = sa.Table(
    "players",
    metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("kyc_status", sa.String(20), nullable=False, server_default="unverified"),
    # Self-exclusion: until a moment, or indefinitely; both empty means not excluded.
    sa.Column("self_excluded_until", UtcDateTime),
    sa.Column("self_excluded_indefinitely", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

player_deposit_limits = sa.Table(
    "player_deposit_limits",
    metadata,
    sa.Column("player_id", sa.String(100), sa.ForeignKey("players.id"), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("period", sa.String(5), primary_key=True),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
    sa.CheckConstraint("period IN ('day', 'week', 'month')", name="known_period"),
)


class LimitPeriod(str, enum.Enum):
    DAY = "day"  # rolling 24 h
    WEEK = "week"  # rolling 7 days
    MONTH = "month"  # calendar month, UTC


def window_start(period: LimitPeriod, now: datetime) -> datetime:
    if period is LimitPeriod.DAY:
        return now - timedelta(hours=24)
    if period is LimitPeriod.WEEK:
        return now - timedelta(days=7)
    return now.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class PlayerControls:
    player_id: str
    kyc_status: str = "unverified"
    self_excluded_until: datetime | None = None
    self_excluded_indefinitely: bool = False
    closed: bool = False
    # period -> limit in minor units, for the currency asked about
    deposit_limits: dict[LimitPeriod, int] | None = None

    def self_excluded(self, now: datetime) -> bool:
        if self.self_excluded_indefinitely:
            return True
        return self.self_excluded_until is not None and self.self_excluded_until > now


@dataclass(frozen=True)
class ScreeningDecision:
    outcome: str  # "allow" | "deny"
    code: str | None = None
    reason: str | None = None


def screen_deposit(
    controls: PlayerControls,
    amount_minor: int,
    deposited_in_window: dict[LimitPeriod, int],
    now: datetime,
) -> ScreeningDecision:
    """Responsible-gaming screening for one deposit; the lowest applicable limit wins."""
    if controls.closed:
        return ScreeningDecision("deny", "account_closed", "the player's account is closed")
    if controls.self_excluded(now):
        return ScreeningDecision("deny", "self_excluded", "the player is self-excluded")
    for period, limit in sorted((controls.deposit_limits or {}).items(), key=lambda kv: kv[1]):
        if deposited_in_window.get(period, 0) + amount_minor > limit:
            return ScreeningDecision(
                "deny", "deposit_limit_exceeded", f"the deposit would exceed the player's {period.value} limit"
            )
    return ScreeningDecision("allow")


class PlayerStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def controls(self, player_id: str, currency: str) -> PlayerControls:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(players).where(players.c.id == player_id))).first()
            limits = (
                await conn.execute(
                    sa.select(player_deposit_limits.c.period, player_deposit_limits.c.amount_minor).where(
                        player_deposit_limits.c.player_id == player_id,
                        player_deposit_limits.c.currency == currency,
                    )
                )
            ).all()
        deposit_limits = {LimitPeriod(period): amount for period, amount in limits}
        if row is None:
            return PlayerControls(player_id=player_id, deposit_limits=deposit_limits)
        return PlayerControls(
            player_id=player_id,
            kyc_status=row.kyc_status,
            self_excluded_until=row.self_excluded_until,
            self_excluded_indefinitely=row.self_excluded_indefinitely,
            closed=row.closed,
            deposit_limits=deposit_limits,
        )

    async def upsert(
        self,
        player_id: str,
        *,
        now: datetime,
        kyc_status: str | None = None,
        self_excluded_until: datetime | None = None,
        self_excluded_indefinitely: bool | None = None,
        closed: bool | None = None,
    ) -> None:
        values = {
            k: v
            for k, v in {
                "kyc_status": kyc_status,
                "self_excluded_until": self_excluded_until,
                "self_excluded_indefinitely": self_excluded_indefinitely,
                "closed": closed,
            }.items()
            if v is not None
        }
        async with self.engine.begin() as conn:
            await _ensure_player(conn, player_id, now)
            await conn.execute(players.update().where(players.c.id == player_id).values(updated_at=now, **values))

    async def set_deposit_limit(
        self, player_id: str, currency: str, period: LimitPeriod, amount_minor: int, *, now: datetime
    ) -> None:
        async with self.engine.begin() as conn:
            await _ensure_player(conn, player_id, now)
            updated = await conn.execute(
                player_deposit_limits.update()
                .where(
                    player_deposit_limits.c.player_id == player_id,
                    player_deposit_limits.c.currency == currency,
                    player_deposit_limits.c.period == period.value,
                )
                .values(amount_minor=amount_minor, updated_at=now)
            )
            if updated.rowcount == 0:
                await insert_if_missing(
                    conn,
                    player_deposit_limits,
                    {"player_id": player_id, "currency": currency, "period": period.value,
                     "amount_minor": amount_minor, "updated_at": now},
                )


async def _ensure_player(conn: AsyncConnection, player_id: str, now: datetime) -> None:
    await insert_if_missing(conn, players, {"id": player_id, "updated_at": now})

