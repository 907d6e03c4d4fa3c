"""`GET /v1/ops/margin`: per payment method, PSP and currency, what the house kept of what players paid in."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api.auth import Principal, require_scope
from api.errors import problem_responses, validation_problem
from api.schemas import MarginReport, MarginRowView, QueryMoment
from ledger.margin import MarginRow, margin
from payloop.money import to_decimal_string

ops_router = APIRouter(prefix="/v1/ops/margin", tags=["ops"], responses=problem_responses(503))

# A year and a day: a leap year's report fits; longer spans are several requests (the queries aggregate).
MAX_SPAN = timedelta(days=366)


@ops_router.get("", response_model=MarginReport, responses=problem_responses(422))
async def margin_report(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
    created_from: Annotated[QueryMoment, Query(alias="from", description="ISO 8601 with a time zone, inclusive")],
    created_to: Annotated[QueryMoment, Query(alias="to", description="ISO 8601 with a time zone, exclusive")],
) -> MarginReport:
    """Deposits credited, refunds, chargebacks, PSP fees and payouts over [from, to), and the net margin."""
    if created_from >= created_to:
        raise validation_problem([{"field": "query.from", "code": "range", "message": "from must be before to"}])
    if created_to - created_from > MAX_SPAN:
        raise validation_problem([{"field": "query.to", "code": "range", "message": "at most 366 days after from"}])
    rows = await margin(request.app.state.engine, created_from=created_from, created_to=created_to)
    return MarginReport(**{"from": created_from.isoformat(), "to": created_to.isoformat(),
                           "rows": [_row(row) for row in rows]})


def _row(r: MarginRow) -> MarginRowView:
    def decimal(minor: int) -> str:
        return to_decimal_string(minor, r.currency)

    return MarginRowView(
        method=r.method, psp=r.psp, currency=r.currency,
        deposits_count=r.deposits_count, deposits=decimal(r.deposits_minor),
        refunds_count=r.refunds_count, refunds=decimal(r.refunds_minor),
        chargebacks_count=r.chargebacks_count, chargebacks=decimal(r.chargebacks_minor),
        fees=decimal(r.fees_minor), payouts_count=r.payouts_count, payouts=decimal(r.payouts_minor),
        fx_margin=decimal(r.fx_margin_minor),
        net_margin=decimal(r.net_margin_minor), chargeback_rate=r.chargeback_rate,
        cost_per_deposit=decimal(r.cost_per_deposit_minor) if r.cost_per_deposit_minor is not None else None,
    )
