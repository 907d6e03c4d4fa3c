"""`/ops/dead-letters`: the webhook events no workflow took (of one PSP, received in a time range), the replay of
one and of all those the filter shows (README: Corrections), through the JSON routes' functions."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from api.console import actions
from api.console.guard import ActionForm, Session, actor
from api.console.rendering import ConsoleRoute, refusal, render
from api.routes import webhooks
from api.schemas import WebhookBulkReplayRequest

router = APIRouter(prefix="/ops/dead-letters", route_class=ConsoleRoute, include_in_schema=False)

SHOWN = 200  # and what "Replay all (filtered)" replays at once: the dead letters the page shows
EVENT_ROW_ID_MAX = 2**31 - 1  # as the JSON route's EventRowId
FILTERS = ("psp", "from", "to")


@router.get("")
async def dead_letters(request: Request, session: Session) -> HTMLResponse:
    asked = {name: request.query_params[name].strip() for name in FILTERS if request.query_params.get(name, "").strip()}
    try:
        wanted = WebhookBulkReplayRequest.model_validate({**asked, "limit": SHOWN})
    except ValidationError:
        return refusal(request, 422, "Invalid filter", "A PSP is its routing name; from and to are ISO 8601 times "
                       "with a time zone, e.g. 2026-12-05T10:00:00Z.", session)
    events = await request.app.state.webhook_inbox.dead_letters(
        psp=wanted.psp, received_from=wanted.received_from, received_to=wanted.received_to, limit=SHOWN)
    return render(request, "dead_letters.html", session=session, events=events, asked=asked, shown=SHOWN,
                  psps=sorted(p.name for p in request.app.state.routing.psps))


@router.post("/replay")
async def replay_filtered(request: Request, session: Session, form: ActionForm) -> Response:
    """Replays the dead letters the filter shows, as `POST /v1/ops/webhooks/replay` does; back to the same list."""
    asked = {name: str(form[name]).strip() for name in FILTERS if str(form.get(name) or "").strip()}
    back_to = "/ops/dead-letters" + (f"?{urlencode(asked)}" if asked else "")
    # The filter is checked by the JSON route's model: one it refuses is the console's "Invalid form" page.
    return await actions.then_back(request, session, back_to, actions.take(
        request, actor(session), "webhook.replay", "", {**asked, "limit": SHOWN}, None))


@router.post("/{event_row_id}/replay")
async def replay(event_row_id: str, request: Request, session: Session, _form: ActionForm) -> Response:
    if not event_row_id.isdigit() or not 1 <= int(event_row_id) <= EVENT_ROW_ID_MAX:
        return refusal(request, 404, "Webhook not found", "no stored webhook has this id", session)
    await webhooks.replay_dead_letter(request, actor(session), int(event_row_id))
    return RedirectResponse("/ops/dead-letters", status_code=303)
