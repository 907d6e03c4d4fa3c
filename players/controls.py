"""Player profiles and responsible-gaming controls: KYC status, self-exclusion, closed accounts, deposit limits.

Shared by the API (clients and operators set them) and the screening activity (deposits obey them). The rules are
pure functions over an explicit clock so they can be tested at any moment; the store applies them race-free:
every change is one conditional UPDATE (self-exclusion) or a compare-and-swap on a version column (limits).

A deposit limit is set in one currency but caps deposits in every currency: what a window holds in each currency
is converted into the limit's currency at the euro rates (`Settings.fx_rates_to_eur`), and so is the new deposit,
each rounded up, so rounding never lets a deposit past a limit. A player cannot dodge a limit by switching currency.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from players import audit
from payloop.db import UtcDateTime, insert_if_missing, metadata
from payloop.money import MoneyError, convert_minor_up, to_decimal_string

# Raising or removing a limit waits this long, so a player cannot lift a limit in the heat of the moment.
LIMIT_INCREASE_DELAY = timedelta(hours=24)
# Compare-and-swap attempts before giving up; each failed attempt means another change succeeded meanwhile.
_CAS_ATTEMPTS = 20

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
    # When payloop first saw the player (the risk rules' account age); rows from before migration 0014 have their
    # updated_at then.
    sa.Column("created_at", UtcDateTime, nullable=True),
    # The currency the player's balance is kept in (players/wallets.py); None until set or first deposited in.
    sa.Column("wallet_currency", sa.String(3), nullable=True),
)

player_deposit_limits = sa.Table(
    "player_deposit_limits",
    metadata,
    sa.Column("player_id", sa.String(100), sa.ForeignKey("players.id"), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("period", sa.String(5), primary_key=True),
    # In force until pending_effective_at; from then on pending_amount_minor (NULL = no limit) is.
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("pending_amount_minor", sa.BigInteger),
    sa.Column("pending_effective_at", UtcDateTime),
    # Bumped by every change; writers compare-and-swap on it. Never reset (rows are never deleted), so no ABA.
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
    sa.CheckConstraint("period IN ('day', 'week', 'month')", name="known_period"),
    sa.CheckConstraint("pending_amount_minor IS NULL OR pending_amount_minor >= 0", name="pending_not_negative"),
    sa.CheckConstraint("pending_amount_minor IS NULL OR pending_effective_at IS NOT NULL", name="pending_has_time"),
)


deposit_limit_usage = sa.Table(
    "deposit_limit_usage",
    metadata,
    # One row per deposit screening allowed: it counts against the limits from that moment, not from the
    # credit, and stops counting when the deposit ends without money (released_at).
    sa.Column("payment_id", sa.String(100), primary_key=True),
    sa.Column("player_id", sa.String(100), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("released_at", UtcDateTime),
    sa.Index("ix_deposit_limit_usage_player", "player_id", "currency", "created_at"),
)


class LimitPeriod(str, enum.Enum):
    DAY = "day"  # rolling 24 h
    WEEK = "week"  # rolling 7 days
    MONTH = "month"  # calendar month, UTC


class KycStatus(str, enum.Enum):
    UNVERIFIED = "unverified"
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"


class PlayerRuleError(Exception):
    """A change that the responsible-gaming rules refuse; `code` is the API's stable error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def window_start(period: LimitPeriod, now: datetime) -> datetime:
    if period is LimitPeriod.DAY:
        return now - timedelta(hours=24)
    if period is LimitPeriod.WEEK:
        return now - timedelta(days=7)
    return now.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class LimitState:
    """One deposit limit as seen at a moment: the amount in force (None = no limit) and a pending change."""

    amount_minor: int | None = None
    pending_effective_at: datetime | None = None  # set iff a change is pending
    pending_amount_minor: int | None = None  # the pending value; None with a pending time = removal

    def at(self, now: datetime) -> LimitState:
        """The state at `now`: a pending change whose time has come is in force."""
        if self.pending_effective_at is not None and self.pending_effective_at <= now:
            return LimitState(self.pending_amount_minor)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "amount_minor": self.amount_minor,
            "pending_amount_minor": self.pending_amount_minor,
            "pending_effective_at": _iso(self.pending_effective_at),
        }


def change_limit(current: LimitState, requested: int | None, now: datetime) -> LimitState:
    """The limit after a player asks for `requested` (None = remove) at `now`.

    A first limit or a decrease applies at once and cancels any pending change; an increase or a removal waits
    LIMIT_INCREASE_DELAY while the old value stays in force. Asking again for the same pending value keeps its
    time (a retried request must not restart the wait); asking for another one restarts it.
    """
    current = current.at(now)
    if current.amount_minor is None or (requested is not None and requested <= current.amount_minor):
        return LimitState(requested)
    if current.pending_effective_at is not None and current.pending_amount_minor == requested:
        return current
    return LimitState(current.amount_minor, now + LIMIT_INCREASE_DELAY, requested)


@dataclass(frozen=True)
class DepositLimit:
    currency: str
    period: LimitPeriod
    state: LimitState  # as of the moment it was read; amount_minor is never None here


@dataclass(frozen=True)
class PlayerControls:
    player_id: str
    kyc_status: str = "unverified"
    self_excluded_until: datetime | None = None
    self_excluded_indefinitely: bool = False
    closed: bool = False
    # period -> limit in force in minor units, of the limits set in the currency asked about (screening reads every
    # currency's limits: LimitUsage)
    deposit_limits: dict[LimitPeriod, int] | None = None
    first_seen_at: datetime | None = None  # when payloop first saw the player (None: never before)

    def self_excluded(self, now: datetime) -> bool:
        if self.self_excluded_indefinitely:
            return True
        return self.self_excluded_until is not None and self.self_excluded_until > now


@dataclass(frozen=True)
class PlayerProfile:
    player_id: str
    kyc_status: str
    self_excluded: bool
    self_excluded_until: datetime | None  # None while excluded = indefinitely
    closed: bool
    deposit_limits: list[DepositLimit]
    wallet_currency: str | None = None


@dataclass(frozen=True)
class ScreeningDecision:
    outcome: str  # "allow" | "deny" | "kyc_required" (the KYC threshold: verified KYC first, nothing counted)
    code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class GateVerdict:
    """What a deposit screening's gate (PlayerStore.screen_deposit) says: a refusal, or the euro amount of
    deposits from which a player must be verified (None: no such threshold)."""

    refusal: ScreeningDecision | None = None
    kyc_threshold_eur_minor: int | None = None


# Called inside the screening's transaction with the player's controls; writes in `conn` commit with the count.
DepositGate = Callable[[AsyncConnection, PlayerControls], Awaitable[GateVerdict]]


@dataclass(frozen=True)
class LimitUsage:
    """One deposit limit in force and what its window already holds, per currency, as stored (unconverted)."""

    currency: str  # the limit's
    period: LimitPeriod
    limit_minor: int
    used_minor: Mapping[str, int]  # currency -> minor units of the deposits counting in the window

    def used_in_limit_currency(self, rates: Mapping[str, Decimal]) -> int:
        """The window's deposits in the limit's currency, each currency's sum rounded up; MoneyError
        `fx_rate_missing` when a currency has no rate."""
        return sum(convert_minor_up(minor, currency, self.currency, rates)
                   for currency, minor in self.used_minor.items())


@dataclass(frozen=True)
class LimitHeadroom:
    """What a deposit limit in force still allows in its window, in the limit's currency."""

    currency: str
    period: LimitPeriod
    limit_minor: int
    remaining_minor: int | None  # None: a currency deposited in the window has no rate, so it cannot be told


def screen_deposit(
    controls: PlayerControls,
    amount_minor: int,
    currency: str,
    limits: Sequence[LimitUsage],
    rates: Mapping[str, Decimal],
    now: datetime,
) -> ScreeningDecision:
    """Responsible-gaming screening for one deposit of `amount_minor` `currency`: every limit in force, whatever its
    currency, counts every currency's deposits and this one converted into its own (rounded up). A currency without
    a rate while a limit is set denies (`fx_rate_missing`): the limit cannot be checked."""
    if controls.closed:
        return ScreeningDecision("deny", "account_closed", "the player's account is closed")
    if controls.self_excluded(now):
        return ScreeningDecision("deny", "self_excluded", "the player is self-excluded")
    for limit in sorted(limits, key=lambda lim: (_PERIOD_ORDER[lim.period], lim.currency)):
        try:
            total_minor = limit.used_in_limit_currency(rates) + convert_minor_up(
                amount_minor, currency, limit.currency, rates
            )
        except MoneyError as exc:
            reason = f"the {limit.period.value} limit in {limit.currency} cannot be checked: {exc}"
            return ScreeningDecision("deny", "fx_rate_missing", reason)
        if total_minor > limit.limit_minor:
            shown = f"{to_decimal_string(limit.limit_minor, limit.currency)} {limit.currency}"
            return ScreeningDecision(
                "deny", "deposit_limit_exceeded", f"the deposit would exceed the player's {limit.period.value} limit "
                f"of {shown}",
            )
    return ScreeningDecision("allow")


_PERIOD_ORDER = {period: i for i, period in enumerate(LimitPeriod)}


class PlayerStore:
    """Players exist implicitly: reading an unknown player gives the defaults; the first change creates the row.

    Mutations take `actor`; when given, an audit_log row is written in the same transaction as the change.
    """

    def __init__(self, engine: AsyncEngine, rates: Mapping[str, Decimal]) -> None:
        """`rates`: the euro value of one unit of each currency (payloop.money.parse_rates of
        `Settings.fx_rates_to_eur`), for limits that count deposits in other currencies."""
        self.engine = engine
        self.rates = rates

    async def controls(self, player_id: str, currency: str, now: datetime) -> PlayerControls:
        """The player's flags and the limits set in `currency` in force at `now`."""
        async with self.engine.connect() as conn:
            return await _controls(conn, player_id, currency, now)

    async def screen_deposit(
        self, player_id: str, currency: str, payment_id: str, amount_minor: int, now: datetime,
        *, gate: DepositGate | None = None,
    ) -> ScreeningDecision:
        """Screens a deposit and, when it is allowed, counts it against the limits at once — in one transaction
        serialized per player (whatever the currency), so concurrent deposits cannot slip past a limit together.

        `gate` (the risk engine) runs first in that transaction with the player's controls, so what it writes
        commits with the count: its refusal stands; with its `kyc_threshold_eur_minor`, a player not verified whose
        deposits (every one counted and not released, in euro, with this one) reach it needs KYC first
        ("kyc_required"), under the same lock, so deposits started together cannot pass the threshold together
        either. Idempotent per payment: a deposit counted already is allowed again (the gate still runs: it
        returns what it decided the first time)."""
        usage = deposit_limit_usage.c
        async with self.engine.begin() as conn:
            await lock_player_in(conn, player_id, now)
            counted = (await conn.execute(sa.select(usage.payment_id).where(usage.payment_id == payment_id))).first()
            row = await _player_row(conn, player_id)
            limit_rows = await _limit_rows(conn, player_id)
            controls = _controls_of(player_id, row, [r for r in limit_rows if r.currency == currency], now)
            verdict = await gate(conn, controls) if gate is not None else GateVerdict()
            if counted:
                return ScreeningDecision("allow")  # a retry: this deposit was already screened and counted
            if verdict.refusal is not None:
                return verdict.refusal
            limits = await _limit_usages(conn, player_id, limit_rows, now)
            decision = screen_deposit(controls, amount_minor, currency, limits, self.rates, now)
            if (decision.outcome == "allow" and verdict.kyc_threshold_eur_minor is not None
                    and controls.kyc_status != KycStatus.VERIFIED.value):
                decision = await self._kyc_threshold(conn, player_id, amount_minor, currency,
                                                     verdict.kyc_threshold_eur_minor) or decision
            if decision.outcome == "allow":
                await conn.execute(deposit_limit_usage.insert().values(
                    payment_id=payment_id, player_id=player_id, currency=currency, amount_minor=amount_minor,
                    created_at=now,
                ))
            return decision

    async def _kyc_threshold(
        self, conn: AsyncConnection, player_id: str, amount_minor: int, currency: str, threshold_eur_minor: int
    ) -> ScreeningDecision | None:
        usage = deposit_limit_usage.c
        per_currency = await conn.execute(
            sa.select(usage.currency, sa.func.sum(usage.amount_minor))
            .where(usage.player_id == player_id, usage.released_at.is_(None)).group_by(usage.currency))
        try:
            total = convert_minor_up(amount_minor, currency, "EUR", self.rates) + sum(
                convert_minor_up(int(minor), cur, "EUR", self.rates) for cur, minor in per_currency)
        except MoneyError:
            total = threshold_eur_minor  # a deposit no rate can value counts as reaching it: no gate a rate can skip
        if total < threshold_eur_minor:
            return None
        return ScreeningDecision("kyc_required", "kyc_required",
                                 "the player's deposits reach the amount from which the identity must be verified")

    async def release_deposit(self, payment_id: str, now: datetime) -> None:
        """A deposit that ended without money stops counting against the limits."""
        usage = deposit_limit_usage.c
        async with self.engine.begin() as conn:
            await conn.execute(deposit_limit_usage.update()
                               .where(usage.payment_id == payment_id, usage.released_at.is_(None))
                               .values(released_at=now))

    async def profile(self, player_id: str, now: datetime) -> PlayerProfile:
        async with self.engine.connect() as conn:
            row = await _player_row(conn, player_id)
            limits = await _limit_rows(conn, player_id)
        controls = PlayerControls(player_id) if row is None else PlayerControls(
            player_id, row.kyc_status, row.self_excluded_until, row.self_excluded_indefinitely, row.closed
        )
        excluded = controls.self_excluded(now)
        in_force = [
            DepositLimit(r.currency, LimitPeriod(r.period), state)
            for r in limits
            if (state := _limit_state(r).at(now)).amount_minor is not None
        ]
        in_force.sort(key=lambda lim: (lim.currency, _PERIOD_ORDER[lim.period]))
        return PlayerProfile(
            player_id=player_id,
            kyc_status=controls.kyc_status,
            self_excluded=excluded,
            self_excluded_until=controls.self_excluded_until if excluded else None,
            closed=controls.closed,
            deposit_limits=in_force,
            wallet_currency=None if row is None else row.wallet_currency,
        )

    async def deposit_headroom(self, player_id: str, now: datetime) -> list[LimitHeadroom]:
        """Every deposit limit in force, shortest period first, with what is left of it now (the checkout shows it
        before the player pays; screening decides, under its lock, what a deposit may take)."""
        async with self.engine.connect() as conn:
            usages = await _limit_usages(conn, player_id, await _limit_rows(conn, player_id), now)
        headroom = []
        for usage in sorted(usages, key=lambda u: (_PERIOD_ORDER[u.period], u.currency)):
            try:
                remaining: int | None = max(usage.limit_minor - usage.used_in_limit_currency(self.rates), 0)
            except MoneyError:
                remaining = None
            headroom.append(LimitHeadroom(usage.currency, usage.period, usage.limit_minor, remaining))
        return headroom

    async def kyc_status(self, player_id: str) -> str:
        async with self.engine.connect() as conn:
            row = await _player_row(conn, player_id)
        return KycStatus.UNVERIFIED.value if row is None else row.kyc_status

    async def set_deposit_limit(
        self,
        player_id: str,
        currency: str,
        period: LimitPeriod,
        amount_minor: int | None,
        *,
        now: datetime,
        actor: str | None = None,
    ) -> LimitState:
        """Ask for a limit (None = remove it); returns the limit's state afterwards (see `change_limit`)."""
        if amount_minor is not None and amount_minor < 0:
            raise ValueError("a deposit limit cannot be negative")
        key = {"player_id": player_id, "currency": currency, "period": period.value}
        for _ in range(_CAS_ATTEMPTS):
            async with self.engine.begin() as conn:
                await lock_player_in(conn, player_id, now)
                row = (await conn.execute(sa.select(player_deposit_limits).filter_by(**key))).first()
                before = LimitState() if row is None else _limit_state(row)
                after = change_limit(before, amount_minor, now)
                if not await _write_limit(conn, key, row, after, now):
                    continue  # another change won the race: decide again on its result
                if actor is not None:
                    await audit.record(
                        conn, actor=actor, action="player.deposit_limit.set", subject=subject(player_id), now=now,
                        details={"currency": currency, "period": period.value, "requested_minor": amount_minor,
                                 "before": before.at(now).as_dict(), "after": after.as_dict()},
                    )
                return after
        raise RuntimeError(f"deposit limit of {player_id} kept changing; gave up after {_CAS_ATTEMPTS} attempts")

    async def set_self_exclusion(
        self, player_id: str, until: datetime | None, *, now: datetime, actor: str | None = None
    ) -> None:
        """Self-exclude until `until` (None = indefinitely). It can be extended, never shortened or lifted."""
        if until is not None and until <= now:
            raise PlayerRuleError("self_exclusion_in_past", "a self-exclusion must end in the future")
        stmt = players.update().where(players.c.id == player_id)
        if until is not None:
            # One conditional UPDATE: the rule is checked against the row as it is when written, not as read.
            stmt = stmt.where(
                players.c.self_excluded_indefinitely.is_(False),
                sa.or_(players.c.self_excluded_until.is_(None), players.c.self_excluded_until <= until),
            )
        async with self.engine.begin() as conn:
            await _ensure_player(conn, player_id, now)
            result = await conn.execute(
                stmt.values(self_excluded_until=until, self_excluded_indefinitely=until is None, updated_at=now)
            )
            if result.rowcount != 1:
                raise PlayerRuleError(
                    "self_exclusion_active", "an active self-exclusion cannot be shortened or lifted, only extended"
                )
            if actor is not None:
                await audit.record(conn, actor=actor, action="player.self_exclusion.set", subject=subject(player_id),
                                   details={"until": _iso(until), "indefinite": until is None}, now=now)

    async def set_kyc_status(
        self, player_id: str, status: KycStatus, *, now: datetime, actor: str | None = None, note: str | None = None
    ) -> None:
        await self._set(player_id, now, actor, "player.kyc.set", {"status": status.value, "note": note},
                        kyc_status=status.value)

    async def set_closed(self, player_id: str, closed: bool, *, now: datetime, actor: str | None = None) -> None:
        action = "player.close" if closed else "player.reopen"
        await self._set(player_id, now, actor, action, {"closed": closed}, closed=closed)

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
        """Raw setter for fixtures and data imports: writes the given fields without the rules above."""
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

    async def _set(
        self, player_id: str, now: datetime, actor: str | None, action: str, details: dict[str, Any], **values: Any
    ) -> None:
        async with self.engine.begin() as conn:
            await _ensure_player(conn, player_id, now)
            await conn.execute(players.update().where(players.c.id == player_id).values(updated_at=now, **values))
            if actor is not None:
                await audit.record(conn, actor=actor, action=action, subject=subject(player_id), details=details,
                                   now=now)


def subject(player_id: str) -> str:
    """The audit log's subject for a player."""
    return f"player:{player_id}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()


def _limit_state(row: sa.Row[Any]) -> LimitState:
    return LimitState(row.amount_minor, row.pending_effective_at, row.pending_amount_minor)


async def _controls(conn: AsyncConnection, player_id: str, currency: str, now: datetime) -> PlayerControls:
    return _controls_of(player_id, await _player_row(conn, player_id),
                        await _limit_rows(conn, player_id, currency), now)


def _controls_of(player_id: str, row: sa.Row[Any] | None, limit_rows: Sequence[sa.Row[Any]],
                 now: datetime) -> PlayerControls:
    """The controls of a players row (None: never seen) with its deposit limits of one currency."""
    deposit_limits = {
        LimitPeriod(r.period): amount
        for r in limit_rows
        if (amount := _limit_state(r).at(now).amount_minor) is not None
    }
    if row is None:
        return PlayerControls(player_id=player_id, deposit_limits=deposit_limits)
    return PlayerControls(
        player_id=player_id,
        kyc_status=row.kyc_status,
        self_excluded_until=row.self_excluded_until,
        self_excluded_indefinitely=row.self_excluded_indefinitely,
        closed=row.closed,
        deposit_limits=deposit_limits,
        first_seen_at=row.created_at or row.updated_at,
    )


async def _limit_usages(conn: AsyncConnection, player_id: str, limit_rows: Sequence[sa.Row[Any]], now: datetime
                        ) -> list[LimitUsage]:
    """Every deposit limit of the player (`limit_rows`, in any currency) in force at `now`, with its window's
    deposits per currency (one query per period)."""
    in_force = [
        (r.currency, LimitPeriod(r.period), amount)
        for r in limit_rows
        if (amount := _limit_state(r).at(now).amount_minor) is not None
    ]
    usage = deposit_limit_usage.c
    used_by_period: dict[LimitPeriod, dict[str, int]] = {}
    for period in {period for _, period, _ in in_force}:
        rows = await conn.execute(
            sa.select(usage.currency, sa.func.sum(usage.amount_minor))
            .where(usage.player_id == player_id, usage.released_at.is_(None),
                   usage.created_at >= window_start(period, now))
            .group_by(usage.currency)
        )
        used_by_period[period] = {currency: int(minor) for currency, minor in rows}
    return [LimitUsage(currency, period, amount, used_by_period[period]) for currency, period, amount in in_force]


async def _player_row(conn: AsyncConnection, player_id: str) -> sa.Row[Any] | None:
    return (await conn.execute(sa.select(players).where(players.c.id == player_id))).first()


async def _limit_rows(conn: AsyncConnection, player_id: str, currency: str | None = None) -> list[sa.Row[Any]]:
    query = sa.select(player_deposit_limits).where(player_deposit_limits.c.player_id == player_id)
    if currency is not None:
        query = query.where(player_deposit_limits.c.currency == currency)
    return list(await conn.execute(query))


async def _write_limit(
    conn: AsyncConnection, key: dict[str, str], row: sa.Row[Any] | None, after: LimitState, now: datetime
) -> bool:
    """Store `after` if the row is still the one read (compare-and-swap); False when another writer got there first."""
    if after.amount_minor is None:
        # Only reached when no limit is in force and none is asked for: nothing to store.
        return True
    values = {"amount_minor": after.amount_minor, "pending_amount_minor": after.pending_amount_minor,
              "pending_effective_at": after.pending_effective_at, "updated_at": now}
    if row is None:
        return await insert_if_missing(conn, player_deposit_limits, {**key, **values, "version": 0})
    result = await conn.execute(
        player_deposit_limits.update()
        .filter_by(**key, version=row.version)
        .values(**values, version=row.version + 1)
    )
    return result.rowcount == 1


async def lock_player_in(conn: AsyncConnection, player_id: str, now: datetime) -> None:
    """Serializes changes and screenings of one player: PostgreSQL locks the player's row; SQLite transactions
    already take the write lock up front. Even a change that writes nothing then has its place in the order."""
    await _ensure_player(conn, player_id, now)
    if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE holds the database's write lock already
        await conn.execute(sa.select(players.c.id).where(players.c.id == player_id).with_for_update())


async def _ensure_player(conn: AsyncConnection, player_id: str, now: datetime) -> None:
    await insert_if_missing(conn, players, {"id": player_id, "updated_at": now, "created_at": now})
