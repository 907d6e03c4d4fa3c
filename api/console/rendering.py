"""Server-rendered pages: the Jinja2 templates (autoescaped), the route class every console page uses (a refusal of
the shared code becomes a page, not problem+json) and the security headers of every /ops response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from api.console import flash
from api.console.guard import FormRefused, SignInRequired
from api.console.sessions import ConsoleSession
from api.problems import Problem

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PREFIX = "/ops"
# The menu: (path, label). An area added later is one line here, a template and a page module.
NAV = (
    ("/ops", "Overview"),
    ("/ops/incidents", "Incidents"),
    ("/ops/alerts", "Alerts"),
    ("/ops/payments", "Payments"),
    ("/ops/reviews", "Review queues"),
    ("/ops/dead-letters", "Dead letters"),
    ("/ops/recon", "Reconciliation"),
    ("/ops/psps", "PSP health"),
    ("/ops/methods", "Methods"),
)
SECURITY_HEADERS = {
    # Everything the console loads is its own (one CSS file); no script at all, so no inline one either.
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",  # frame-ancestors for browsers that predate it
    "cache-control": "no-store",  # payment data stays out of shared and back-button caches
}

_environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                  undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(request: Request, template: str, *, session: ConsoleSession | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """The page, with the message the last action of this session left (shown once)."""
    message = flash.take(request, session)
    page = _environment.get_template(template).render(nav=NAV, path=request.url.path, session=session,
                                                      flash=message, **context)
    response = HTMLResponse(page, status_code=status_code)
    flash.forget(response, request)
    return response


def refusal(request: Request, status_code: int, title: str, detail: str,
            session: ConsoleSession | None = None) -> HTMLResponse:
    return render(request, "message.html", session=session, status_code=status_code, title=title, detail=detail)


class ConsoleRoute(APIRoute):
    """A console page: no session → the sign-in page; a refused form → 403; a Problem the shared code raised (not
    found, not in review …) or a form the API's models refuse → a page saying so, with the same status."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return RedirectResponse(f"{PREFIX}/login", status_code=303)
            except FormRefused:
                return refusal(request, 403, "Form refused", "The form was not sent from this console's own page "
                               "in this session. Nothing was changed; open the page again and resend it.")
            except Problem as problem:
                return refusal(request, problem.status, problem.title, problem.detail or problem.title,
                               signed_in(request))
            except ValidationError as err:
                fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in err.errors())
                return refusal(request, 422, "Invalid form", fields, signed_in(request))

        return console_handler


def signed_in(request: Request) -> ConsoleSession | None:
    """The session the guard found for this request, if it got that far (a refusal page then keeps the menu)."""
    return getattr(request.state, "console_session", None)
