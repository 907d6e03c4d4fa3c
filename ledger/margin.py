"""The margin report: per payment method, PSP and currency, what the house kept of the money players paid in.

Over a period [created_from, created_to), each figure counts the rows whose own time falls in it:

- deposits: payments credited to the player (credited_minor > 0), by the payment's created_at; their credited sum;
- refunds: succeeded refunds the player funded, by the refund's updated_at (when it succeeded). A refund of money
  never credited ('uncredited' funding) gives back nothing the deposits counted, so it is left out;
- chargebacks: lost disputes, by resolved_at; their disputed amount;
- fees: every fee the PSPs kept (psp_fees: captures, refunds, payouts, chargebacks), by booked_at;
- payouts: paid payouts, by the payout's updated_at (when it was paid);
- fx_margin: the spread the house kept on conversions (ledger/fx.py), by booked_at, in the wallet currency: a
  converted deposit's or payout's row is in its payment currency, its FX margin in the wallet currency's row.

net_margin_minor = deposits - refunds - chargebacks - fees - payouts + fx_margin. chargeback_rate = lost disputes / credited
deposits (counts, a decimal string, None without deposits). cost_per_deposit_minor = fees / credited deposits,
rounded half up (None without deposits). A method or PSP is None where the rows do not say (a payout without one).
Aggregate queries only: one GROUP BY per source.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.disputes import LOST
from ledger.fx import fx_conversions
from ledger.models import disputes, payments, payouts, psp_fees, refunds
from ledger.refunds import PLAYER_FUNDED, SUCCEEDED

PAID = "paid"  # a payout's final successful status (workflows.types.PayoutStatus.PAID)
_RATE_PLACES = Decimal("0.000001")
_FIGURES = ("deposits", "refunds", "chargebacks", "fees", "payouts", "fx_margin")


@dataclass(frozen=True, slots=True)
class MarginRow:
    method: str | None
    psp: str | None
    currency: str
    deposits_count: int
    deposits_minor: int
    refunds_count: int
    refunds_minor: int
    chargebacks_count: int
    chargebacks_minor: int
    fees_minor: int
    payouts_count: int
    payouts_minor: int
    fx_margin_minor: int
    net_margin_minor: int
    chargeback_rate: str | None
    cost_per_deposit_minor: int | None


async def margin(engine: AsyncEngine, *, created_from: datetime, created_to: datetime) -> list[MarginRow]:
    """The report's rows, ordered by currency, method and PSP."""
    figures: dict[tuple[Any, Any, str], dict[str, tuple[int, int]]] = defaultdict(dict)
    async with engine.connect() as conn:
        for figure, query in _queries(created_from, created_to).items():
            for method, psp, currency, count, total in await conn.execute(query):
                figures[(method, psp, currency)][figure] = (int(count), int(total or 0))
    rows = [_row(key, values) for key, values in figures.items()]
    return sorted(rows, key=lambda r: (r.currency, r.method or "", r.psp or ""))


def _queries(start: datetime, end: datetime) -> dict[str, Select[Any]]:
    def grouped(method: Any, psp: Any, currency: Any, count: Any, total: Any, when: Any,
                *where: ColumnElement[bool]) -> Select[Any]:
        return (select(method, psp, currency, count, func.sum(total))
                .where(*where, when >= start, when < end).group_by(method, psp, currency))

    p, r, d, f, o, x = payments.c, refunds.c, disputes.c, psp_fees.c, payouts.c, fx_conversions.c
    return {
        "deposits": grouped(p.method, p.psp, p.currency, func.count(), p.credited_minor, p.created_at,
                            p.credited_minor > 0),
        "refunds": grouped(p.method, r.psp, r.currency, func.count(), r.amount_minor, r.updated_at,
                           r.status == SUCCEEDED, r.funding == PLAYER_FUNDED).join_from(
            refunds, payments, p.payment_id == r.payment_id),
        "chargebacks": grouped(p.method, d.psp, d.currency, func.count(), d.amount_minor, d.resolved_at,
                               d.state == LOST).join_from(disputes, payments, p.payment_id == d.payment_id),
        "fees": grouped(f.method, f.psp, f.currency, literal(0), f.fee_minor, f.booked_at),
        "payouts": grouped(o.method, o.psp, o.currency, func.count(), o.amount_minor, o.updated_at,
                           o.status == PAID),
        "fx_margin": grouped(x.method, x.psp, x.to_currency, func.count(), x.margin_minor, x.booked_at),
    }


def _row(key: tuple[Any, Any, str], values: dict[str, tuple[int, int]]) -> MarginRow:
    method, psp, currency = key
    (deposits_count, deposits), (refunds_count, refunded), (chargebacks_count, charged_back), (_, fees), (
        payouts_count, paid), (_, fx_margin) = (values.get(figure, (0, 0)) for figure in _FIGURES)
    rate = cost = None
    if deposits_count:
        ratio = (Decimal(chargebacks_count) / deposits_count).quantize(_RATE_PLACES, ROUND_HALF_UP)
        rate = format(ratio.normalize(), "f")
        cost = (2 * fees + deposits_count) // (2 * deposits_count)  # half up, fees are never negative
    return MarginRow(
        method=method, psp=psp, currency=currency, deposits_count=deposits_count, deposits_minor=deposits,
        refunds_count=refunds_count, refunds_minor=refunded, chargebacks_count=chargebacks_count,
        chargebacks_minor=charged_back, fees_minor=fees, payouts_count=payouts_count, payouts_minor=paid,
        fx_margin_minor=fx_margin, net_margin_minor=deposits - refunded - charged_back - fees - paid + fx_margin,
        chargeback_rate=rate,
        cost_per_deposit_minor=cost,
    )
