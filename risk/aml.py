"""AML monitoring: five scenarios over one player's recent money, each a CaseHit that opens a case of its kind or
joins the player's active one (risk/cases.py reviews them).

- cdd_threshold: the player's credited deposits, or payouts paid or on their way, within `cdd_window_hours` sum
  (per direction, in euro) to the customer-due-diligence threshold or more: single or linked operations.
- structuring: `structuring_min_operations` operations or more of one direction within the window, each just below
  the threshold (within `structuring_margin_percent` of it): amounts kept under the line on purpose.
- rapid_in_out: a payout within `rapid_in_out_window_hours` of the last credited deposit, with the turnover staked
  since that deposit below `rapid_in_out_min_turnover_percent` of it: money passed through the casino, not played.
  Measured in the wallet currency: a deposit converted into it counts as what it credited there.
- unusual_route: a payout paid (or sent to the PSP) by a method the player never deposited with.
- shared_instrument: a device or instrument the player used seen with `shared_instrument_min_players` players or
  more (this one included).

A payout in flight — the one being screened among them — is not in the payouts table yet (the withdrawal records it
at its end): its screening's observation (risk_observations) stands in for it. Amounts in another currency convert at `rates`
(default: euro only; an amount without a rate counts nothing).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import func, select, union, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.fx import fx_conversions
from ledger.games import turnover_since
from ledger.models import payments, payouts
from payloop.db import insert_if_missing
from payloop.money import to_decimal_string
from risk.facts import eur_minor, players_seen_with
from risk.models import risk_case_events, risk_cases, risk_observations
from risk.types import CASE_ACTIVE_STATES, AmlSettings, CaseHit

DEPOSIT, PAYOUT = "deposit", "payout"
# A payout that moved money or is on its way ("paid or pending"): every status but the three failed ends.
PAYOUT_LIVE = ("pending", "kyc_required", "in_review", "processing", "paid")
PAYOUT_SENT = ("processing", "paid")  # unusual_route: the money left (or is leaving) by that method
EURO_ONLY: Mapping[str, Decimal] = {"EUR": Decimal(1)}
SUBJECTS_IN_A_HIT = 50  # the newest operations a shared_instrument hit names


class HasAml(Protocol):
    aml: AmlSettings


@dataclass(frozen=True, slots=True)
class _Op:
    subject_id: str
    direction: str  # deposit | payout
    eur_minor: int | None
    currency: str | None
    minor: int
    method: str | None
    created_at: datetime


async def evaluate(engine: AsyncEngine, config: HasAml, player_id: str, now: datetime,
                   *, rates: Mapping[str, Decimal] = EURO_ONLY, after_deposit: str | None = None) -> list[CaseHit]:
    """Every scenario's hits for the player at `now` (none: a clean player). `after_deposit`: the id of a deposit
    just credited, and only what it can complete is checked — the deposits' thresholds and structuring, and its
    own device and instrument: a deposit makes no payout pattern (and the daily sweep checks everything)."""
    aml = config.aml
    hours = max(aml.cdd_window_hours, aml.structuring_window_hours, aml.rapid_in_out_window_hours)
    since = now - timedelta(hours=hours)
    async with engine.connect() as conn:
        if after_deposit is not None:
            ops = await _recent_deposits(conn, player_id, since, now, rates)
            shared = await _shared(conn, player_id, aml.shared_instrument_min_players, subject_id=after_deposit)
            return [*_cdd(aml, player_id, ops, now), *_structuring(aml, player_id, ops, now), *shared]
        ops = await _recent_ops(conn, player_id, since, now, rates)
        last_deposit = await _last_credited_deposit(conn, player_id, now)
        unusual = await _unusual_route(conn, player_id)
        shared = await _shared(conn, player_id, aml.shared_instrument_min_players)
    hits = [*_cdd(aml, player_id, ops, now), *_structuring(aml, player_id, ops, now)]
    if last_deposit is not None:
        hits += await _rapid_in_out(engine, aml, player_id, last_deposit, ops, now)
    if unusual:
        hits.append(CaseHit("unusual_route", player_id,
                            f"paid out by {', '.join(sorted({m for _, m in unusual}))}, a method the player never "
                            "deposited with", tuple(i for i, _ in unusual),
                            {"methods": sorted({m for _, m in unusual})}))
    return hits + shared


def hit_key(hit: CaseHit) -> str:
    """A hit's identity: the same pattern found again (the next deposit's check, the daily re-check) is not new."""
    pattern = hit.key or ",".join(sorted(hit.subject_ids))
    return hashlib.sha256(f"{hit.kind}|{hit.player_id}|{pattern}".encode()).hexdigest()


async def open_cases(engine: AsyncEngine, hits: Sequence[CaseHit], now: datetime) -> list[str]:
    """Each hit opens a case of its kind for its player, or joins the active one as a timeline event; a pattern
    already on any case's timeline (a decided one too) changes nothing. The ids of the cases the hits are on."""
    case_ids: list[str] = []
    for hit in hits:
        async with engine.begin() as conn:
            case_id = await _place(conn, hit, now)
        if case_id not in case_ids:
            case_ids.append(case_id)
    return case_ids


async def has_active_case(engine: AsyncEngine, player_id: str) -> bool:
    """An open or escalated case: the player's payouts go to review."""
    async with engine.connect() as conn:
        found = await conn.execute(select(risk_cases.c.case_id).where(
            risk_cases.c.player_id == player_id, risk_cases.c.state.in_(CASE_ACTIVE_STATES)).limit(1))
        return found.first() is not None


async def players_active_since(engine: AsyncEngine, since: datetime) -> list[str]:
    """The players with a deposit or payout since `since` (the daily re-check evaluates them)."""
    query = union(select(payments.c.player_id).where(payments.c.created_at >= since),
                  select(payouts.c.player_id).where(payouts.c.updated_at >= since))
    async with engine.connect() as conn:
        return sorted((await conn.execute(query)).scalars())


# ---- the scenarios ----------------------------------------------------------------------------------------------


def _cdd(aml: AmlSettings, player_id: str, ops: list[_Op], now: datetime) -> list[CaseHit]:
    since = now - timedelta(hours=aml.cdd_window_hours)
    hits = []
    for direction in (DEPOSIT, PAYOUT):
        linked = [op for op in ops if op.direction == direction and op.created_at >= since and op.eur_minor]
        total = sum(op.eur_minor or 0 for op in linked)
        if linked and total >= aml.cdd_threshold_eur_minor:
            hits.append(CaseHit("cdd_threshold", player_id,
                                f"{direction}s of {_eur(total)} EUR within {aml.cdd_window_hours} h reach the "
                                f"due-diligence threshold of {_eur(aml.cdd_threshold_eur_minor)} EUR",
                                _ids(linked), {"direction": direction, "sum_eur_minor": total,
                                               "threshold_eur_minor": aml.cdd_threshold_eur_minor,
                                               "window_hours": aml.cdd_window_hours, "operations": len(linked)}))
    return hits


def _structuring(aml: AmlSettings, player_id: str, ops: list[_Op], now: datetime) -> list[CaseHit]:
    since = now - timedelta(hours=aml.structuring_window_hours)
    top = aml.structuring_threshold_eur_minor
    low = top * (100 - aml.structuring_margin_percent) // 100
    hits = []
    for direction in (DEPOSIT, PAYOUT):
        below = [op for op in ops if op.direction == direction and op.created_at >= since
                 and op.eur_minor is not None and low <= op.eur_minor < top]
        if len(below) >= aml.structuring_min_operations:
            hits.append(CaseHit("structuring", player_id,
                                f"{len(below)} {direction}s within {aml.structuring_window_hours} h each just below "
                                f"{_eur(top)} EUR (from {_eur(low)} EUR)", _ids(below),
                                {"direction": direction, "operations": len(below), "low_eur_minor": low,
                                 "threshold_eur_minor": top, "window_hours": aml.structuring_window_hours}))
    return hits


async def _rapid_in_out(engine: AsyncEngine, aml: AmlSettings, player_id: str, deposit: _Op, ops: list[_Op],
                        now: datetime) -> list[CaseHit]:
    window = timedelta(hours=aml.rapid_in_out_window_hours)
    soon = [op for op in ops if op.direction == PAYOUT and op.created_at >= now - window
            and deposit.created_at <= op.created_at <= deposit.created_at + window]
    if not soon or deposit.currency is None:
        return []
    turnover = await turnover_since(engine, player_id, deposit.currency, deposit.created_at)
    if turnover * 100 >= aml.rapid_in_out_min_turnover_percent * deposit.minor:
        return []
    return [CaseHit("rapid_in_out", player_id,
                    f"paid out within {aml.rapid_in_out_window_hours} h of a deposit of "
                    f"{to_decimal_string(deposit.minor, deposit.currency)} "
                    f"{deposit.currency} with {turnover * 100 // max(deposit.minor, 1)}% of it staked since "
                    f"(under {aml.rapid_in_out_min_turnover_percent}%)",
                    (deposit.subject_id, *_ids(soon)),
                    {"deposit_id": deposit.subject_id, "deposit_minor": deposit.minor, "currency": deposit.currency,
                     "turnover_minor": turnover, "min_turnover_percent": aml.rapid_in_out_min_turnover_percent,
                     "window_hours": aml.rapid_in_out_window_hours})]


async def _unusual_route(conn: AsyncConnection, player_id: str) -> list[tuple[str, str]]:
    """(payout id, method) of the payouts sent by a method no credited deposit of the player used."""
    deposited = select(payments.c.method).where(payments.c.player_id == player_id, payments.c.credited_minor > 0)
    rows = await conn.execute(select(payouts.c.payout_id, payouts.c.method).where(
        payouts.c.player_id == player_id, payouts.c.status.in_(PAYOUT_SENT), payouts.c.method.is_not(None),
        payouts.c.method.not_in(deposited)).order_by(payouts.c.created_at, payouts.c.payout_id))
    return [(row.payout_id, row.method) for row in rows]


async def _shared(conn: AsyncConnection, player_id: str, min_players: int, subject_id: str | None = None
                  ) -> list[CaseHit]:
    """The player's instruments and devices (with `subject_id`: that operation's) seen with enough players."""
    o = risk_observations.c
    used = select(o.instrument, o.device_id).distinct().where(o.player_id == player_id)
    if subject_id is not None:
        used = used.where(o.subject_id == subject_id)
    rows = (await conn.execute(used)).all()
    hits = []
    for link, column in (("instrument", "instrument"), ("device", "device_id")):
        values = {value for row in rows if (value := getattr(row, column)) is not None}
        for value in sorted(values):
            seen = await players_seen_with(conn, column, value, player_id)
            if seen < min_players:
                continue
            ids = (await conn.execute(select(o.subject_id).where(o.player_id == player_id, o[column] == value)
                                      .order_by(o.created_at.desc()).limit(SUBJECTS_IN_A_HIT))).scalars().all()
            hits.append(CaseHit("shared_instrument", player_id,
                                f"the player's {link} is seen with {seen} players (from {min_players} on)",
                                tuple(ids), {"link": link, link: value, "players": seen, "min_players": min_players},
                                key=f"{link}:{value}:{seen}"))
    return hits


# ---- reading and writing ----------------------------------------------------------------------------------------


async def _recent_ops(conn: AsyncConnection, player_id: str, since: datetime, now: datetime,
                      rates: Mapping[str, Decimal]) -> list[_Op]:
    """The player's credited deposits and live payouts created since `since`, those in flight included."""
    po = payouts.c
    ops = await _recent_deposits(conn, player_id, since, now, rates)
    paid = await conn.execute(select(po.payout_id, po.currency, po.amount_minor, po.method, po.created_at).where(
        po.player_id == player_id, po.status.in_(PAYOUT_LIVE), po.created_at >= since, po.created_at <= now))
    ops += [_Op(r.payout_id, PAYOUT, eur_minor(r.amount_minor, r.currency, rates), r.currency, r.amount_minor,
                r.method, r.created_at) for r in paid]
    # Payouts in flight (the trigger among them) have no payouts row until they end: their screening's observation
    # stands in, so payouts asked for together are linked before any of them has left.
    o = risk_observations.c
    in_flight = await conn.execute(select(o.subject_id, o.amount_eur_minor, o.method, o.created_at).where(
        o.operation == PAYOUT, o.player_id == player_id, o.created_at >= since, o.amount_eur_minor.is_not(None),
        ~select(po.payout_id).where(po.payout_id == o.subject_id).exists()))
    ops += [_Op(r.subject_id, PAYOUT, r.amount_eur_minor, "EUR", r.amount_eur_minor, r.method, min(r.created_at, now))
            for r in in_flight]
    return sorted(ops, key=lambda op: (op.created_at, op.subject_id))


async def _recent_deposits(conn: AsyncConnection, player_id: str, since: datetime, now: datetime,
                           rates: Mapping[str, Decimal]) -> list[_Op]:
    p = payments.c
    deposits = await conn.execute(select(p.payment_id, p.currency, p.credited_minor, p.method, p.created_at).where(
        p.player_id == player_id, p.created_at >= since, p.created_at <= now, p.credited_minor > 0))
    ops = [_Op(r.payment_id, DEPOSIT, eur_minor(r.credited_minor, r.currency, rates), r.currency, r.credited_minor,
               r.method, r.created_at) for r in deposits]
    return sorted(ops, key=lambda op: (op.created_at, op.subject_id))


async def _last_credited_deposit(conn: AsyncConnection, player_id: str, now: datetime) -> _Op | None:
    """The player's last credited deposit, in the currency and amount its credit reached the wallet: a deposit
    converted into the wallet's currency (ledger/fx.py) is measured as what was credited there, where the player
    plays it."""
    p, fx = payments.c, fx_conversions.c
    row = (await conn.execute(
        select(p.payment_id, p.method, p.created_at, func.coalesce(fx.to_currency, p.currency).label("currency"),
               func.coalesce(fx.to_minor, p.credited_minor).label("credited_minor"))
        .outerjoin(fx_conversions, (fx.reference == p.payment_id) & (fx.kind == DEPOSIT))
        .where(p.player_id == player_id, p.credited_minor > 0, p.created_at <= now)
        .order_by(p.created_at.desc(), p.payment_id.desc()).limit(1))).one_or_none()
    if row is None:
        return None
    return _Op(row.payment_id, DEPOSIT, None, row.currency, row.credited_minor, row.method, row.created_at)


async def _place(conn: AsyncConnection, hit: CaseHit, now: datetime) -> str:
    """The case the hit is on: the one whose timeline holds its pattern, else the player's active case of its kind
    (joined), else a new one."""
    key = hit_key(hit)
    e, c = risk_case_events.c, risk_cases.c
    known = (await conn.execute(select(e.case_id).where(e.hit_key == key))).scalar_one_or_none()
    if known is not None:
        return str(known)
    active = select(c.case_id, c.subject_ids, c.hits).where(
        c.player_id == hit.player_id, c.kind == hit.kind, c.state.in_(CASE_ACTIVE_STATES)).with_for_update()
    row = (await conn.execute(active)).one_or_none()
    opened = False
    if row is None:
        opened = await insert_if_missing(conn, risk_cases, {
            "case_id": "rk_" + secrets.token_hex(8), "player_id": hit.player_id, "kind": hit.kind, "state": "open",
            "reason": hit.reason[:1000], "subject_ids": list(hit.subject_ids), "facts": _facts(hit), "hits": 1,
            "created_at": now, "updated_at": now})
        row = (await conn.execute(active)).one()  # ours, or the one a concurrent hit opened first
    if not await insert_if_missing(conn, risk_case_events, {
            "case_id": row.case_id, "kind": "opened" if opened else "hit", "at": now,
            "reason": hit.reason[:2000], "subject_ids": list(hit.subject_ids), "facts": _facts(hit),
            "hit_key": key}):
        return str(row.case_id)  # a concurrent check placed the same pattern
    if not opened:
        await conn.execute(update(risk_cases).where(c.case_id == row.case_id).values(
            subject_ids=_merged(row.subject_ids, hit.subject_ids), facts=_facts(hit), hits=row.hits + 1,
            updated_at=now))
    return str(row.case_id)


def _facts(hit: CaseHit) -> dict[str, Any]:
    return dict(hit.facts)


def _merged(first: Iterable[str], then: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*first, *then]))


def _ids(ops: Iterable[_Op]) -> tuple[str, ...]:
    return tuple(op.subject_id for op in ops)


def _eur(minor: int) -> str:
    return to_decimal_string(minor, "EUR")
