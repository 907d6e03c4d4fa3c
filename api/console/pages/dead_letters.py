"""`/ops/dead-letters`: the webhook events no workflow took, and the replay of one."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from api.console.guard import ActionForm, Session, actor
from api.console.rendering import ConsoleRoute, refusal, render
from api.routes import webhooks

router = APIRouter(prefix="/ops/dead-letters", route_class=ConsoleRoute, include_in_schema=False)

SHOWN = 200
EVENT_ROW_ID_MAX = 2**31 - 1  # as the JSON route's EventRowId


@router.get("")
async def dead_letters(request: Request, session: Session) -> HTMLResponse:
    events = await request.app.state.webhook_inbox.events("dead_letter", SHOWN)
    return render(request, "dead_letters.html", session=session, events=events)


@router.post("/{event_row_id}/replay")
async def replay(event_row_id: str, request: Request, session: Session, _form: ActionForm) -> Response:
    if not event_row_id.isdigit() or not 1 <= int(event_row_id) <= EVENT_ROW_ID_MAX:
        return refusal(request, 404, "Webhook not found", "no stored webhook has this id", session)
    await webhooks.replay_dead_letter(request, actor(session), int(event_row_id))
    return RedirectResponse("/ops/dead-letters", status_code=303)
