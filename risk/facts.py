"""The facts the rules read about one deposit or payout (risk.types.RiskFacts), gathered in the screening's
transaction with two statements of indexed look-ups at most, and only those the operation's rules read:
`config.needs(fact, operation)` says which player facts, `config.velocity_counts_for(operation)` which counts.

- Lifetime sums: credited deposits (`payments.credited_minor`) and paid payouts, per currency, each converted to euro
  cents at the configured rates (a currency without a rate counts nothing).
- Velocity: a subject's observed operations of the same kind within the window (risk_observations, written by
  risk/decisions.record), never counting the operation being scored.
- Links: the players seen with the device or instrument, this player included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import column, func, literal, select, table, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.models import disputes, payments, payouts
from payloop.db import UtcDateTime
from payloop.money import MoneyError, to_eur_minor
from risk.models import risk_observations
from risk.types import PlayerStanding, RiskFacts, RiskSubject, VelocityCount

PAID = "paid"
UNVERIFIED = "unverified"
# players/controls.py owns the table: the risk engine reads these columns only.
players = table("players", column("id"), column("kyc_status"), column("created_at", UtcDateTime),
                column("updated_at", UtcDateTime))
# A velocity subject → the observation column holding it.
SUBJECT_COLUMNS = {"player": "player_id", "device": "device_id", "instrument": "instrument", "ip": "ip_address"}


class FactNeeds(Protocol):
    """What the gatherer asks of the rules' configuration (risk.config.RiskConfig)."""

    def needs(self, name: str, operation: str | None = None) -> bool: ...

    def velocity_counts_for(self, operation: str) -> tuple[VelocityCount, ...]: ...


async def gather_facts(conn: AsyncConnection, config: FactNeeds, subject: RiskSubject, ip_country: str | None,
                       now: datetime, rates: Mapping[str, Decimal], standing: PlayerStanding | None = None
                       ) -> RiskFacts:
    """The facts of `subject` at `now`: only those the rules read (the others keep their defaults), in two
    statements at most — the counts, and the lifetime sums per currency. `standing`: the player's row, when the
    caller has read it already."""
    def needs(name: str) -> bool:
        return config.needs(name, subject.operation)

    player = subject.player_id
    counts: dict[str, Any] = {}  # a label → a scalar subquery, all selected at once
    if standing is None and (needs("kyc_status") or needs("account_age_days")):
        counts["kyc_status"] = _player_column(players.c.kyc_status, player)
        counts["created_at"] = _player_column(players.c.created_at, player)
        counts["updated_at"] = _player_column(players.c.updated_at, player)
    if needs("chargebacks"):
        counts["chargebacks"] = (select(func.count()).select_from(disputes)
                                 .where(disputes.c.player_id == player).scalar_subquery())
    if subject.device_id is not None and needs("players_on_device"):
        counts["on_device"] = _others_seen_with("device_id", subject.device_id, player)
    if subject.instrument is not None and needs("players_on_instrument"):
        counts["on_instrument"] = _others_seen_with("instrument", subject.instrument, player)
    velocity_counts = config.velocity_counts_for(subject.operation)
    for i, count in enumerate(velocity_counts):
        if (value := _velocity_subject(subject, count)) is not None:  # an unknown subject: an unknown count
            counts[f"velocity_{i}"] = _velocity(subject, count, value, now)
    found: dict[str, Any] = {}
    if counts:
        row = (await conn.execute(select(*(query.label(label) for label, query in counts.items())))).one()
        found = dict(row._mapping)
    velocity = {count.name: None if (seen := found.get(f"velocity_{i}")) is None else int(seen)
                for i, count in enumerate(velocity_counts)}

    if standing is None and "kyc_status" in found:
        first_seen = found["created_at"] or found["updated_at"]
        standing = PlayerStanding(found["kyc_status"] or UNVERIFIED, first_seen)
    kyc_status, age_days = UNVERIFIED, None
    if standing is not None:
        kyc_status = standing.kyc_status
        first_seen = standing.first_seen_at
        age_days = 0 if first_seen is None else max(0, (now - first_seen) // timedelta(days=1))
    deposits_eur, deposit_count, payouts_eur = await _lifetime(conn, needs, player, rates)
    return RiskFacts(
        operation=subject.operation, amount_minor=subject.amount_minor, currency=subject.currency,
        amount_eur_minor=eur_minor(subject.amount_minor, subject.currency, rates), method=subject.method,
        country=subject.country, ip_country=ip_country, device_id=subject.device_id, instrument=subject.instrument,
        bin_country=subject.bin_country, kyc_status=kyc_status, account_age_days=age_days,
        lifetime_deposits_eur_minor=deposits_eur, lifetime_deposit_count=deposit_count,
        lifetime_payouts_eur_minor=payouts_eur, chargebacks=int(found.get("chargebacks") or 0),
        players_on_device=_with_this_one(found.get("on_device")),
        players_on_instrument=_with_this_one(found.get("on_instrument")), velocity=velocity,
    )


def eur_minor(minor: int, currency: str, rates: Mapping[str, Decimal]) -> int | None:
    """Euro cents of an amount, rounded down; None for a currency without a rate."""
    try:
        return to_eur_minor(minor, currency, dict(rates))
    except MoneyError:
        return None


async def last_declared_country(conn: AsyncConnection, player_id: str) -> str | None:
    """The country the player's latest deposit declared: the market of a payment that declares none (and comes from
    an address without a country), so leaving `meta.country` out does not get around a market's KYC gate."""
    return (await conn.execute(
        select(payments.c.country).where(payments.c.player_id == player_id, payments.c.country.is_not(None))
        .order_by(payments.c.created_at.desc()).limit(1))).scalar_one_or_none()


def facts_json(facts: RiskFacts) -> dict[str, Any]:
    """The facts as stored with a decision: JSON-able, with whether a device was known but not its id."""
    return {
        "operation": facts.operation, "amount_minor": facts.amount_minor, "currency": facts.currency,
        "amount_eur_minor": facts.amount_eur_minor, "method": facts.method, "country": facts.country,
        "ip_country": facts.ip_country, "device_known": facts.device_id is not None,
        "instrument": facts.instrument, "bin_country": facts.bin_country, "kyc_status": facts.kyc_status,
        "account_age_days": facts.account_age_days, "lifetime_deposits_eur_minor": facts.lifetime_deposits_eur_minor,
        "lifetime_deposit_count": facts.lifetime_deposit_count,
        "lifetime_payouts_eur_minor": facts.lifetime_payouts_eur_minor, "chargebacks": facts.chargebacks,
        "players_on_device": facts.players_on_device, "players_on_instrument": facts.players_on_instrument,
        "velocity": dict(facts.velocity),
    }


def _player_column(column: Any, player_id: str) -> Any:
    return select(column).where(players.c.id == player_id).scalar_subquery()


def _others_seen_with(column_name: str, value: str, player_id: str) -> Any:
    """How many other players were seen with this device or instrument."""
    o = risk_observations.c
    return (select(func.count(o.player_id.distinct()))
            .where(o[column_name] == value, o.player_id != player_id).scalar_subquery())


def _with_this_one(others: int | None) -> int | None:
    return None if others is None else int(others) + 1


async def players_seen_with(conn: AsyncConnection, column_name: str, value: str, player_id: str) -> int:
    """How many players were seen with this device or instrument, `player_id` included."""
    others = (await conn.execute(select(_others_seen_with(column_name, value, player_id)))).scalar_one()
    return int(others) + 1


async def _lifetime(conn: AsyncConnection, needs: Callable[[str], bool], player_id: str,
                    rates: Mapping[str, Decimal]) -> tuple[int, int, int]:
    """Credited deposits (euro cents, count) and paid payouts (euro cents), per currency in one statement."""
    parts = []
    if needs("lifetime_deposits_eur") or needs("lifetime_deposit_count"):
        parts.append(select(literal("deposit").label("kind"), payments.c.currency,
                            func.sum(payments.c.credited_minor).label("minor"), func.count().label("n"))
                     .where(payments.c.player_id == player_id, payments.c.credited_minor > 0)
                     .group_by(payments.c.currency))
    if needs("lifetime_payouts_eur"):
        parts.append(select(literal("payout").label("kind"), payouts.c.currency,
                            func.sum(payouts.c.amount_minor).label("minor"), func.count().label("n"))
                     .where(payouts.c.player_id == player_id, payouts.c.status == PAID)
                     .group_by(payouts.c.currency))
    if not parts:
        return 0, 0, 0
    deposits_eur = deposit_count = payouts_eur = 0
    for kind, currency, minor, n in await conn.execute(union_all(*parts) if len(parts) > 1 else parts[0]):
        euro = eur_minor(int(minor), currency, rates) or 0
        if kind == "deposit":
            deposits_eur, deposit_count = deposits_eur + euro, deposit_count + n
        else:
            payouts_eur += euro
    return deposits_eur, deposit_count, payouts_eur


def _velocity_subject(subject: RiskSubject, count: VelocityCount) -> str | None:
    return {"player": subject.player_id, "device": subject.device_id, "instrument": subject.instrument,
            "ip": subject.ip_address}[count.subject]


def _velocity(subject: RiskSubject, count: VelocityCount, value: str, now: datetime) -> Any:
    """The subject's observed operations of the same kind within the count's window, this one not counted."""
    o = risk_observations.c
    return select(func.count()).select_from(risk_observations).where(
        o[SUBJECT_COLUMNS[count.subject]] == value, o.operation == subject.operation,
        o.created_at > now - timedelta(seconds=count.window_seconds), o.created_at <= now,
        o.subject_id != subject.subject_id).scalar_subquery()
