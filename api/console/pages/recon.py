"""`/ops/recon`: reconciliation cases (open by default), newest first, paged."""

from __future__ import annotations

import re
from typing import get_args

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from api.console.guard import Session
from api.console.rendering import ConsoleRoute, refusal, render
from api.routes import recon

router = APIRouter(prefix="/ops/recon", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
STATES = ("open", "resolved")
CLASSES = get_args(recon.CLASSES)


@router.get("")
async def cases(request: Request, session: Session) -> Response:
    asked = {name: value for name, value in request.query_params.items() if value}
    state = asked.get("state", "open")
    class_ = asked.get("class")
    before = asked.get("before")
    if state not in STATES or (class_ is not None and class_ not in CLASSES) or (
            before is not None and not re.fullmatch(recon.CASE_ID_PATTERN, before)):
        return refusal(request, 422, "Invalid filter", "Pick a state and a class from the lists.", session)
    page = await recon.case_page(request, state=state, class_=class_, before=before, limit=PAGE_SIZE)
    next_query = {"state": state, **({"class": class_} if class_ else {}), "before": page.next_before} \
        if page.next_before else None
    return render(request, "recon.html", session=session, page=page, state=state, class_=class_, states=STATES,
                  classes=CLASSES, next_query=next_query)
