"""The checkout's responses: its pages rendered in their language, the route class that turns a refused URL or a
Problem into a page (never problem+json, never a stack trace), and the headers of every /checkout response."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from api.checkout import i18n
from api.checkout.messages import N_, form_error, method_name
from payloop.money import to_decimal_string
from api.checkout.sessions import CheckoutRefused, CheckoutSession
from api.problems import Problem

log = logging.getLogger("payloop.api.checkout")
PREFIX = "/checkout"
STATIC_PREFIX = "/checkout/static/"
LANGUAGE_NAMES = {"en": "English", "de": "Deutsch", "fi": "Suomi", "es": "Español"}  # each in its own language
HEADERS = {
    "x-content-type-options": "nosniff",
    # The URL holds the session's token: no page may send it on (to a PSP's page, in a Referer).
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",  # balances and payments stay out of shared and back-button caches
}
# The stylesheet and script hold nothing of anyone's: cached for an hour (and revalidated after).
STATIC_HEADERS = HEADERS | {"cache-control": "public, max-age=3600"}
# Scripts and styles are the checkout's own files only (no inline code, no CDN). Forms post to the checkout only;
# the redirect that follows a deposit form goes to the PSP's page, which `form-action` would block in Chromium, so
# the directive is left out. Who may frame a page: itself and the platform that opened the session (its
# return URL's origin), nobody for a page without a session.
CSP = "default-src 'self'; img-src 'self' data:; base-uri 'none'; object-src 'none'; frame-ancestors {ancestors}"
REFUSALS = {
    403: (N_("This link is not valid"),
          N_("This payment link was changed or is not ours. Go back to the casino and open the cashier again.")),
    410: (N_("This link has expired"),
          N_("Payment links are valid for a short time only. Go back to the casino and open the cashier again.")),
    429: (N_("Too many requests"),
          N_("Please wait a minute, then reload this page.")),
}
PROBLEM_PAGES = {
    404: (N_("Page not found"), N_("This checkout has no such page. Go back to the casino and open the cashier "
                                   "again.")),
}
# Said where the checkout cannot tell more; a form whose payment may have started never ends here (pages._start).
SERVICE_PROBLEM = (N_("Something went wrong"), N_("We could not complete this step. Please try again in a moment."))


# A host as CSP source expressions take it (a name or IPv4 address; an optional port is added apart).
_CSP_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$")


def frame_ancestors(session: CheckoutSession | None) -> str:
    """Who may frame the page: itself and the origin of the session's return URL — rebuilt from its scheme, host and
    port only, so nothing else of the URL (credentials, a `;`) reaches the header. A page without a session (a
    refused link, an error) has no control to click, so any casino's frame may show it."""
    if session is None:
        return "*"
    parts = urlsplit(session.return_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or not _CSP_HOST.fullmatch(parts.hostname):
        return "'self'"
    return f"'self' {parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


def _context(lang: i18n.Language, **context: Any) -> dict[str, Any]:
    return {"lang": lang, "languages": LANGUAGE_NAMES, "form_error": form_error, "to_decimal_string": to_decimal_string,
            "method_name": lambda method: lang.gettext(method_name(method)), **context}


def render(request: Request, template: str, lang: i18n.Language, *, status_code: int = 200,
           session: CheckoutSession | None = None, **context: Any) -> HTMLResponse:
    page = i18n.environment(lang.code).get_template(template).render(_context(lang, **context))
    headers = {"content-security-policy": CSP.format(ancestors=frame_ancestors(session)),
               "content-language": lang.code}
    return HTMLResponse(page, status_code=status_code, headers=headers)


def render_fragment(template: str, lang: i18n.Language, **context: Any) -> str:
    return i18n.environment(lang.code).get_template(template).render(_context(lang, **context))


def _language_of(request: Request) -> i18n.Language:
    code = (i18n.supported(request.query_params.get("lang"))
            or i18n.from_accept_language(request.headers.get("accept-language")) or i18n.DEFAULT_LOCALE)
    return i18n.language(code)


def message_page(request: Request, status_code: int, title: str, detail: str) -> HTMLResponse:
    return render(request, "message.html", _language_of(request), status_code=status_code, title=title,
                  detail=detail)


class GoTo(Exception):
    """Ends a request with a redirect to `url` from deep in a page's code (see CheckoutRoute)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class CheckoutRoute(APIRoute):
    """A checkout page: a URL that opens nothing (tampered 403, expired 410, 429), a Problem of the shared code or
    any failure becomes a page in the player's language with its status — never problem+json, never a trace."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def checkout_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except CheckoutRefused as refused:
                title, detail = REFUSALS[refused.status]
                response = message_page(request, refused.status, title, detail)
                if refused.retry_after_seconds is not None:
                    response.headers["retry-after"] = str(refused.retry_after_seconds)
                return response
            except GoTo as go:
                return RedirectResponse(go.url, status_code=303)
            except Problem as problem:
                title, detail = PROBLEM_PAGES.get(problem.status, SERVICE_PROBLEM)
                return message_page(request, problem.status, title, detail)
            except HTTPException as refused:  # Starlette's own, e.g. a form over its limits (400)
                title, detail = PROBLEM_PAGES.get(refused.status_code, SERVICE_PROBLEM)
                return message_page(request, refused.status_code, title, detail)
            except Exception:
                log.exception("checkout page failed")
                return message_page(request, 500, *SERVICE_PROBLEM)

        return checkout_handler


def response_headers(path: str) -> dict[str, str]:
    """HEADERS on every /checkout response; the static files' let them be cached."""
    return STATIC_HEADERS if path.startswith(STATIC_PREFIX) else HEADERS


# Where a response set no CSP of its own (a redirect, the JSON status, a 404 of the framework): it frames nothing.
DEFAULT_HEADERS = {"content-security-policy": CSP.format(ancestors="'none'")}
