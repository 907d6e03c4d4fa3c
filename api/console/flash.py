"""The one-shot message a console action leaves for the page it redirects to ("Circuit of card forced open", or
the refusal "Payout is not deferred: …"): a cookie the next page rendered shows once and deletes.

The console has no script, so the message cannot travel in the page; and a message in the URL could be forged by
anyone who sends an operator a link. The cookie is HttpOnly, SameSite=Strict, scoped to /ops and carries an HMAC
keyed with the session's CSRF token, so a message shows only in the session of the action that left it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

from fastapi import Request, Response

from api.console.guard import COOKIE_PATH
from api.console.sessions import ConsoleSession

FLASH_COOKIE = "payloop_ops_flash"
MESSAGE_CHARS_MAX = 600  # a cookie stays well under the browsers' 4 KB


@dataclass(frozen=True)
class Flash:
    kind: Literal["done", "refused"]
    text: str


def leave(response: Response, request: Request, session: ConsoleSession, flash: Flash) -> Response:
    """Sets the message for the next page of this session."""
    payload = base64.urlsafe_b64encode(json.dumps({"kind": flash.kind, "text": flash.text[:MESSAGE_CHARS_MAX]})
                                       .encode()).decode()
    response.set_cookie(FLASH_COOKIE, f"{payload}.{_mac(session, payload)}", httponly=True, samesite="strict",
                        path=COOKIE_PATH, secure=request.app.state.settings.console_cookie_secure)
    return response


def take(request: Request, session: ConsoleSession | None) -> Flash | None:
    """The message left for this session, if any (the caller deletes the cookie with `forget`)."""
    value = request.cookies.get(FLASH_COOKIE)
    if session is None or not value or "." not in value:
        return None
    payload, mac = value.rsplit(".", 1)
    if not hmac.compare_digest(mac, _mac(session, payload)):
        return None
    try:
        found = json.loads(base64.urlsafe_b64decode(payload))
        return Flash(kind="refused" if found["kind"] == "refused" else "done", text=str(found["text"]))
    except (ValueError, KeyError, TypeError):
        return None


def forget(response: Response, request: Request) -> None:
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                               secure=request.app.state.settings.console_cookie_secure)


def _mac(session: ConsoleSession, payload: str) -> str:
    return hmac.new(session.csrf_token.encode(), payload.encode(), hashlib.sha256).hexdigest()
