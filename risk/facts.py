"""The facts the rules read about one deposit or payout (risk.types.RiskFacts), gathered in the screening's
connection with a handful of indexed queries, and only those the rules file reads: `config.needs(fact)` says which
player facts, `config.velocity_counts` which counts.

- Lifetime sums: credited deposits (`payments.credited_minor`) and paid payouts, per currency, each converted to euro
  cents at the configured rates (a currency without a rate counts nothing).
- Velocity: a subject's observed operations of the same kind within the window (risk_observations, written by
  risk/decisions.record), never counting the operation being scored.
- Links: the players seen with the device or instrument, this player included.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import column, func, select, table
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.models import disputes, payments, payouts
from payloop.db import UtcDateTime
from payloop.money import MoneyError, to_eur_minor
from risk.models import risk_observations
from risk.types import RiskFacts, RiskSubject, VelocityCount

PAID = "paid"
UNVERIFIED = "unverified"
# players/controls.py owns the table: the risk engine reads these columns only.
players = table("players", column("id"), column("kyc_status"), column("created_at", UtcDateTime),
                column("updated_at", UtcDateTime))
# A velocity subject → the observation column holding it.
SUBJECT_COLUMNS = {"player": "player_id", "device": "device_id", "instrument": "instrument", "ip": "ip_address"}


class FactNeeds(Protocol):
    """What the gatherer asks of the rules' configuration (risk.config.RiskConfig)."""

    velocity_counts: tuple[VelocityCount, ...]

    def needs(self, name: str) -> bool: ...


async def gather_facts(conn: AsyncConnection, config: FactNeeds, subject: RiskSubject, ip_country: str | None,
                       now: datetime, rates: Mapping[str, Decimal]) -> RiskFacts:
    """The facts of `subject` at `now`: only those the rules read (the others keep their defaults)."""
    needs = config.needs
    player = subject.player_id
    kyc_status, age_days = UNVERIFIED, None
    if needs("kyc_status") or needs("account_age_days"):
        kyc_status, age_days = await _player(conn, player, now)
    deposits_eur, deposit_count = 0, 0
    if needs("lifetime_deposits_eur") or needs("lifetime_deposit_count"):
        deposits_eur, deposit_count = await _lifetime_deposits(conn, player, rates)
    payouts_eur = await _lifetime_payouts(conn, player, rates) if needs("lifetime_payouts_eur") else 0
    chargebacks = await _chargebacks(conn, player) if needs("chargebacks") else 0
    on_device = on_instrument = None
    if subject.device_id is not None and needs("players_on_device"):
        on_device = await players_seen_with(conn, "device_id", subject.device_id, player)
    if subject.instrument is not None and needs("players_on_instrument"):
        on_instrument = await players_seen_with(conn, "instrument", subject.instrument, player)
    velocity = {count.name: await _velocity(conn, subject, count, now) for count in config.velocity_counts}
    return RiskFacts(
        operation=subject.operation, amount_minor=subject.amount_minor, currency=subject.currency,
        amount_eur_minor=eur_minor(subject.amount_minor, subject.currency, rates), method=subject.method,
        country=subject.country, ip_country=ip_country, device_id=subject.device_id, instrument=subject.instrument,
        bin_country=subject.bin_country, kyc_status=kyc_status, account_age_days=age_days,
        lifetime_deposits_eur_minor=deposits_eur, lifetime_deposit_count=deposit_count,
        lifetime_payouts_eur_minor=payouts_eur, chargebacks=chargebacks, players_on_device=on_device,
        players_on_instrument=on_instrument, velocity=velocity,
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


async def _player(conn: AsyncConnection, player_id: str, now: datetime) -> tuple[str, int]:
    """KYC status and whole days since payloop first saw the player (a player never seen: 0, seen now)."""
    row = (await conn.execute(select(players.c.kyc_status, players.c.created_at, players.c.updated_at)
                              .where(players.c.id == player_id))).one_or_none()
    if row is None:
        return UNVERIFIED, 0
    first_seen = row.created_at or row.updated_at
    return row.kyc_status, max(0, (now - first_seen) // timedelta(days=1))


async def _lifetime_deposits(conn: AsyncConnection, player_id: str, rates: Mapping[str, Decimal]
                             ) -> tuple[int, int]:
    rows = await conn.execute(
        select(payments.c.currency, func.sum(payments.c.credited_minor), func.count())
        .where(payments.c.player_id == player_id, payments.c.credited_minor > 0).group_by(payments.c.currency))
    total, count = 0, 0
    for currency, minor, n in rows:
        total += eur_minor(int(minor), currency, rates) or 0
        count += n
    return total, count


async def _lifetime_payouts(conn: AsyncConnection, player_id: str, rates: Mapping[str, Decimal]) -> int:
    rows = await conn.execute(
        select(payouts.c.currency, func.sum(payouts.c.amount_minor))
        .where(payouts.c.player_id == player_id, payouts.c.status == PAID).group_by(payouts.c.currency))
    return sum(eur_minor(int(minor), currency, rates) or 0 for currency, minor in rows)


async def _chargebacks(conn: AsyncConnection, player_id: str) -> int:
    return int((await conn.execute(select(func.count()).select_from(disputes)
                                   .where(disputes.c.player_id == player_id))).scalar_one())


async def players_seen_with(conn: AsyncConnection, column_name: str, value: str, player_id: str) -> int:
    """How many players were seen with this device or instrument, `player_id` included."""
    o = risk_observations.c
    others = (await conn.execute(select(func.count(o.player_id.distinct()))
                                 .where(o[column_name] == value, o.player_id != player_id))).scalar_one()
    return int(others) + 1


async def _velocity(conn: AsyncConnection, subject: RiskSubject, count: VelocityCount, now: datetime) -> int | None:
    value = {"player": subject.player_id, "device": subject.device_id, "instrument": subject.instrument,
             "ip": subject.ip_address}[count.subject]
    if value is None:
        return None
    o = risk_observations.c
    seen = await conn.execute(select(func.count()).select_from(risk_observations).where(
        o[SUBJECT_COLUMNS[count.subject]] == value, o.operation == subject.operation,
        o.created_at > now - timedelta(seconds=count.window_seconds), o.created_at <= now,
        o.subject_id != subject.subject_id))
    return int(seen.scalar_one())
