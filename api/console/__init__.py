"""The ops console: a small server-rendered web console under /ops (README: Ops console).

Sign-in with an ops-scoped API key (pages/login.py) opens a server-side session (sessions.py); guard.py decides which
requests count; rendering.py holds the templates, the security headers and the route class of every page. Each area
is one module of pages/ and reads and acts through the same functions as the JSON API's routes, never queries of its
own.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse

from api.console.pages import alerts, dead_letters, incidents, login, overview, payments, psps, recon, reviews
from api.console.rendering import PREFIX, SECURITY_HEADERS, STATIC
from api.response_headers import PrefixHeaders

_static = APIRouter(prefix="/ops/static", include_in_schema=False)


@_static.get("/console.css")
async def stylesheet() -> FileResponse:
    return FileResponse(STATIC / "console.css", media_type="text/css")


def install(app: FastAPI) -> None:
    """The console's routes and the security headers of its responses (the sessions' store is made at start-up,
    with the database: api/app.py)."""
    app.add_middleware(PrefixHeaders, prefix=PREFIX, headers=lambda _path: SECURITY_HEADERS)
    for module in (login, overview, incidents, alerts, payments, reviews, dead_letters, recon, psps):
        app.include_router(module.router)
    app.include_router(_static)
