"""The players' checkout under /checkout (README: Checkout): the deposit and withdrawal pages a platform sends its
player to with a signed, short-lived URL from `POST /v1/checkout/sessions` (api/routes/checkout.py).

sessions.py keeps the sessions and signs their URLs; pages.py serves the pages through the same functions as the
JSON API's routes; messages.py says what each status and refusal means to a player; i18n.py picks the language and
formats money (Babel); rendering.py renders, turns refusals into pages and sets the headers. Templates, the
stylesheet, one small script and the translation catalogs sit beside them.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse

from api.checkout import i18n, pages
from api.checkout.rendering import DEFAULT_HEADERS, PREFIX, response_headers
from api.response_headers import PrefixHeaders

STATIC = Path(__file__).parent / "static"
_static = APIRouter(prefix="/checkout/static", include_in_schema=False)


@_static.get("/checkout.css")
async def stylesheet() -> FileResponse:
    return FileResponse(STATIC / "checkout.css", media_type="text/css")


@_static.get("/checkout.js")
async def script() -> FileResponse:
    return FileResponse(STATIC / "checkout.js", media_type="text/javascript")


# A checkout URL's token is a credential for 30 minutes: logs show where it was, never what it was.
_TOKEN_IN_PATH = re.compile(r"^/checkout/(return/)?(?!static/)[^/]+")


def loggable_path(path: str) -> str:
    """The path as the access log may show it: the checkout token replaced by `{token}`."""
    return _TOKEN_IN_PATH.sub(lambda m: f"/checkout/{m.group(1) or ''}{{token}}", path)


def install(app: FastAPI) -> None:
    """The pages, their static files and their headers (the sessions' store is made at start-up: api/app.py)."""
    for code in i18n.LOCALES:  # the catalogs are compiled now, not on a player's first page in each language
        i18n.environment(code)
    app.add_middleware(PrefixHeaders, prefix=PREFIX, headers=response_headers, defaults=DEFAULT_HEADERS)
    app.include_router(_static)  # before the pages, whose /checkout/{token} would take /checkout/static
    app.include_router(pages.router)
