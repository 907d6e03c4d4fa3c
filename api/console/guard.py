"""Who may use the console, and which of their forms count.

- A page needs a live session (api/console/sessions.py) of a client that still has an ops-scoped key: otherwise
  SignInRequired, answered with a redirect to /ops/login.
- An action is a POST form that carries the session's CSRF token (compared in constant time) and comes from a page of
  this origin (Origin, else Referer, names it): otherwise FormRefused (403), and nothing is done. The cookie being
  SameSite=Strict already keeps other sites' forms from riding the session; these two checks do not rely on it.
- Actions are taken as the principal "<client_id> (console)", so their audit entries tell them from the API's.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.datastructures import FormData

from api.auth import Principal
from api.console.sessions import ConsoleSession, SessionStore
from payloop.db import utcnow

SESSION_COOKIE = "payloop_ops_session"
COOKIE_PATH = "/ops"


class SignInRequired(Exception):
    """No live session: the console answers with its sign-in page."""


class FormRefused(Exception):
    """A POST without this session's CSRF token, or from another origin: refused, nothing done."""


def session_store(request: Request) -> SessionStore:
    return request.app.state.console_sessions


def has_ops_key(request: Request, client_id: str) -> bool:
    """Whether the client still holds an ops-scoped key (a key withdrawn from PAYLOOP_API_KEYS ends its sessions)."""
    return any(p.client_id == client_id and "ops" in p.scopes for p in request.app.state.api_keys.values())


async def current_session(request: Request) -> ConsoleSession:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        session = await session_store(request).find(token, utcnow())
        if session is not None and has_ops_key(request, session.client_id):
            request.state.console_session = session  # for a refusal page's menu (rendering.ConsoleRoute)
            return session
    raise SignInRequired()


Session = Annotated[ConsoleSession, Depends(current_session)]


def same_origin(request: Request) -> bool:
    """The request's Origin (or, without one, its Referer) is this console's own origin."""
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    origin = request.headers.get("origin")
    if origin is None:
        referer = urlsplit(request.headers.get("referer", ""))
        origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else None
    return origin is not None and origin.lower() == own


async def checked_form(request: Request, session: Session) -> FormData:
    """The action's form, once its origin and CSRF token are checked."""
    form = await request.form()
    sent = form.get("csrf_token")
    token_ok = isinstance(sent, str) and hmac.compare_digest(sent.encode(), session.csrf_token.encode())
    if not (token_ok and same_origin(request)):
        raise FormRefused()
    return form


ActionForm = Annotated[FormData, Depends(checked_form)]


def actor(session: ConsoleSession) -> Principal:
    """The principal a console action is taken as: audited as "<client_id> (console)"."""
    return Principal(f"{session.client_id} (console)", frozenset({"ops"}))
