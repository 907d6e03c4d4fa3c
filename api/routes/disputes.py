"""`GET /v1/ops/disputes`: chargebacks as the ledger records them, newest first, with their workflows."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from api import engine
from api.auth import Principal, require_scope
from api.errors import problem_responses, validation_problem
from api.schemas import DisputeItem, DisputePage
from ledger.disputes import DisputeRecord, list_disputes
from payloop.money import to_decimal_string
from payloop.settings import Settings
from workflows.dispute import DisputeWorkflow

ops_router = APIRouter(prefix="/v1/ops/disputes", tags=["ops"], responses=problem_responses(503))

# A PSP's dispute id, as webhooks may carry it (it becomes part of a workflow id and a ledger key): fullmatch.
DISPUTE_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
# A page cursor is the last dispute's `<psp>:<dispute_id>` (PSP names have no ":").
_CURSOR_PATTERN = rf"^[a-z][a-z0-9_]{{0,39}}:{DISPUTE_ID_RE.pattern}$"


@ops_router.get("", response_model=DisputePage, responses=problem_responses(422))
async def list_chargebacks(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("ops"))],
    state: Literal["opened", "won", "lost"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    before: Annotated[str | None, Query(pattern=_CURSOR_PATTERN, description="the previous page's next_before")] = None,
) -> DisputePage:
    try:
        # One more than asked: whether there is a next page is known without a request that finds it empty.
        records = await list_disputes(request.app.state.engine, state=state, limit=limit + 1, before=before)
    except LookupError:
        raise validation_problem([{"field": "query.before", "code": "unknown", "message": "no dispute has this key"}],
                                 "before names no dispute") from None
    page = records[:limit]
    settings = request.app.state.settings
    last = page[-1] if len(records) > limit else None
    return DisputePage(disputes=[_item(settings, record) for record in page],
                       next_before=f"{last.psp}:{last.dispute_id}" if last is not None else None)


def _item(settings: Settings, d: DisputeRecord) -> DisputeItem:
    def decimal(minor: int) -> str:
        return to_decimal_string(minor, d.currency)

    return DisputeItem(
        psp=d.psp, dispute_id=d.dispute_id, payment_id=d.payment_id, player_id=d.player_id, state=d.state,
        amount=decimal(d.amount_minor), currency=d.currency, held=decimal(d.held_minor),
        shortfall=decimal(d.shortfall_minor), fee=decimal(d.fee_minor) if d.fee_minor is not None else None,
        reason_code=d.reason_code, opened_at=d.opened_at.isoformat(),
        resolved_at=d.resolved_at.isoformat() if d.resolved_at is not None else None,
        temporal_ui_url=engine.ui_url(settings, DisputeWorkflow.workflow_id(d.psp, d.dispute_id)),
    )
