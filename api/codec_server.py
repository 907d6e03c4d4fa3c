"""The codec server (`payloop codec-server`): Temporal's remote codec protocol, so the Temporal UI and the `temporal`
CLI show the payloads payloop/codec.py encrypted — to the people allowed to read them, in their own browser or
terminal. Payloads are decrypted per request and answered with `Cache-Control: no-store`; nothing is kept or logged.

Protocol (as the UI and the CLI speak it): `POST …/decode` and `POST …/encode` with the Payloads protobuf as JSON,
`{"payloads": [{"metadata": {…}, "data": "<base64>"}]}`, and an `X-Namespace` header; only the last path segment
counts, so the endpoint may be mounted under any prefix (e.g. `/default/decode`). A bad body or a payload that
cannot be opened is a 400 (problem+json naming the key id when that is the cause).

Who may call it:
- `Authorization: Bearer <token>`, a token of PAYLOOP_CODEC_SERVER_TOKEN ("new,old" while rotating): the CLI
  (`--codec-auth "Bearer <token>"`) and scripts.
- A session cookie, set by signing in with that token at `/login`: the Temporal UI. The UI calls the codec server
  from the engineer's browser and can add no header of ours (its "pass access token" sends the UI's own OIDC token,
  and only to an https endpoint); with "include cross-origin credentials" (TEMPORAL_CODEC_INCLUDE_CREDENTIALS) it
  sends this server's cookies. The cookie is HttpOnly and SameSite=Strict, so the UI and this server must share a
  site (localhost ports, or ui.example.com / codec.example.com), and holds an expiry signed with the token, not the
  token itself.
CORS grants only the UI's origin (PAYLOOP_TEMPORAL_UI_URL), with credentials; any other web page gets no grant, so
a browser will not hand it an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api import errors
from api.problems import Problem
from payloop.codec import CodecDecodeError, EncryptionCodec, KeyRing
from payloop.logs import AccessLogMiddleware
from payloop.settings import Settings

SESSION_COOKIE = "payloop_codec_session"
SESSION_SECONDS = 8 * 3600  # a working day; then sign in again
MIN_TOKEN_CHARS = 16
# Temporal refuses payloads over 2 MiB by default; base64 in JSON makes that ~2.7 MiB, plus the metadata.
MAX_BODY_BYTES = 4 * 1024 * 1024
_NO_STORE = {"Cache-Control": "no-store"}

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>payloop codec server</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>payloop codec server</h1>
<p>Sign in to read payments' encrypted payloads in the Temporal UI ({ui}).</p>
<form method="post" action="login">
  <label>Codec server token <input type="password" name="token" autocomplete="current-password" required></label>
  <button type="submit">Sign in</button>
</form>
<p>The session lasts {hours} hours. In the UI's codec server settings, the endpoint is this server
(<code>{endpoint}</code>) and "Include cross-origin credentials" must be on.</p>
</body></html>
"""


def parse_tokens(spec: str) -> tuple[str, ...]:
    tokens = tuple(token.strip() for token in spec.split(",") if token.strip())
    if not tokens:
        raise ValueError("PAYLOOP_CODEC_SERVER_TOKEN is empty: give a token (e.g. `openssl rand -hex 32`)")
    if any(len(token) < MIN_TOKEN_CHARS for token in tokens):
        raise ValueError(f"PAYLOOP_CODEC_SERVER_TOKEN: each token needs at least {MIN_TOKEN_CHARS} characters")
    return tokens


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def session_value(token: str, expires_at: int) -> str:
    mac = hmac.new(token.encode(), f"payloop-codec-session:{expires_at}".encode(), hashlib.sha256).hexdigest()
    return f"{expires_at}.{mac}"


def session_valid(cookie: str, tokens: tuple[str, ...], now: float) -> bool:
    expires, _, _mac = cookie.partition(".")
    if not expires.isdigit() or int(expires) <= now:
        return False
    # Every token is tried, in constant time each, so timing tells nothing about which one signed it.
    matches = [hmac.compare_digest(session_value(token, int(expires)), cookie) for token in tokens]
    return any(matches)


def create_codec_app(settings: Settings) -> FastAPI:
    codec = EncryptionCodec(KeyRing.parse(settings.codec_keys))  # a bad ring stops the server at start
    tokens = parse_tokens(settings.codec_server_token)
    ui_origin = origin_of(settings.temporal_ui_url)

    app = FastAPI(title="payloop codec server", docs_url=None, redoc_url=None, openapi_url=None)
    errors.install(app)
    app.add_middleware(CORSMiddleware, allow_origins=[ui_origin], allow_credentials=True, allow_methods=["POST"],
                       allow_headers=["content-type", "x-namespace", "authorization"], max_age=600)
    app.add_middleware(AccessLogMiddleware, logger_name="payloop.codec_server.access")  # the trace id too

    def authenticate(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            if any([hmac.compare_digest(token.encode(), known.encode()) for known in tokens]):
                return
            raise Problem(401, "unauthorized", "Unauthorized", "the codec server token is not valid",
                          headers={"WWW-Authenticate": "Bearer"})
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and session_valid(cookie, tokens, time.time()):
            return
        raise Problem(401, "unauthorized", "Unauthorized",
                      "send Authorization: Bearer <codec server token>, or sign in at /login",
                      headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login", include_in_schema=False)
    async def login_page() -> HTMLResponse:
        page = _LOGIN_PAGE.format(ui=settings.temporal_ui_url, hours=SESSION_SECONDS // 3600,
                                  endpoint=settings.codec_server_url)
        # Nobody may frame the sign-in form (clickjacking), and it loads nothing from elsewhere.
        return HTMLResponse(page, headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                       "frame-ancestors 'none'", **_NO_STORE})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> RedirectResponse:
        token = (await request.form()).get("token")
        if not isinstance(token, str) or not any([hmac.compare_digest(token.encode(), k.encode()) for k in tokens]):
            raise Problem(401, "unauthorized", "Unauthorized", "the codec server token is not valid")
        expires_at = int(time.time()) + SESSION_SECONDS
        response = RedirectResponse(settings.temporal_ui_url, status_code=303)
        response.set_cookie(SESSION_COOKIE, session_value(tokens[0], expires_at), max_age=SESSION_SECONDS,
                            httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
        return response

    @app.post("/{path:path}", include_in_schema=False)
    async def convert(path: str, request: Request) -> JSONResponse:
        operation = path.rstrip("/").rsplit("/", 1)[-1]
        if operation not in ("encode", "decode"):
            raise Problem(404, "not_found", "Not found", "POST …/encode or …/decode")
        authenticate(request)
        namespace = request.headers.get("x-namespace")
        if namespace is not None and namespace != settings.temporal_namespace:
            raise Problem(400, "unknown_namespace", "Unknown namespace",
                          f"this codec server serves namespace {settings.temporal_namespace!r}")
        declared = request.headers.get("content-length", "")
        too_large = Problem(413, "payload_too_large", "Payload too large", f"at most {MAX_BODY_BYTES} bytes")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise too_large  # refused before it is read
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise too_large
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError, ValueError):
            raise Problem(400, "invalid_payloads", "Invalid payloads",
                          'the body must be {"payloads": [...]}, Payloads as protobuf JSON') from None
        try:
            if operation == "decode":
                converted = await codec.decode(payloads.payloads)
            else:
                converted = await codec.encode(payloads.payloads)
        except CodecDecodeError as err:
            raise Problem(400, err.code, "Payload cannot be decoded", str(err), key_id=err.key_id) from None
        return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in converted]}, headers=_NO_STORE)

    return app
