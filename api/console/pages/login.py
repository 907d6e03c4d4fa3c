"""Sign-in with an ops-scoped API key (`/ops/login`) and sign-out (`POST /ops/logout`)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from api.auth import principal_for
from api.rate_limits import RateLimits
from api.console.guard import COOKIE_PATH, SESSION_COOKIE, ActionForm, FormRefused, same_origin, session_store
from api.console.rendering import ConsoleRoute, render
from payloop.db import utcnow

log = logging.getLogger("payloop.api.console")
router = APIRouter(prefix="/ops", route_class=ConsoleRoute, include_in_schema=False)

# The one answer to any key that does not sign in: whether it exists, or lacks the scope, is not said.
NOT_SIGNED_IN = "This key cannot sign in to the ops console."


@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", session=None, message=None)


@router.post("/login")
async def login(request: Request) -> Response:
    # A sign-in form posted from another site would sign the browser in to the attacker's session (login CSRF).
    if not same_origin(request):
        raise FormRefused()
    limits: RateLimits = request.app.state.rate_limits
    # Every attempt counts, before the key is looked at: the form is an oracle for API keys otherwise.
    if (refusal := await limits.check_console_login(request.client.host if request.client else "unknown")):
        log.warning("ops console sign-in refused: over %s from its address; retry after %d s", refusal.limit,
                    refusal.retry_after_seconds)
        response = render(request, "login.html", session=None, status_code=429,
                          message=f"Too many sign-in attempts from your address. Try again in "
                                  f"{refusal.retry_after_seconds} s.")
        response.headers["Retry-After"] = str(refusal.retry_after_seconds)
        return response
    api_key = (await request.form()).get("api_key")
    principal = principal_for(api_key, request.app.state.api_keys) if isinstance(api_key, str) and api_key else None
    if principal is None or "ops" not in principal.scopes:
        limits.console_sign_ins_refused["key"] += 1
        # Nothing of the key: not even whether it exists or which client's it is.
        log.warning("ops console sign-in refused: the key cannot sign in")
        return render(request, "login.html", session=None, message=NOT_SIGNED_IN, status_code=401)
    token, _session = await session_store(request).open(principal.client_id, utcnow())
    settings = request.app.state.settings
    response = RedirectResponse("/ops", status_code=303)
    # The browser forgets it at the absolute expiry; the server ends the session then, or when idle, regardless.
    response.set_cookie(SESSION_COOKIE, token, max_age=settings.console_session_absolute_seconds, httponly=True,
                        samesite="strict", path=COOKIE_PATH, secure=settings.console_cookie_secure)
    return response


@router.post("/logout")
async def logout(request: Request, _form: ActionForm) -> Response:
    await session_store(request).end(request.cookies[SESSION_COOKIE])
    response = RedirectResponse("/ops/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=request.app.state.settings.console_cookie_secure)
    return response
