"""The codec server (`payloop codec-server`) over real HTTP, as the Temporal UI and the `temporal` CLI call it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from api.codec_server import SESSION_COOKIE, create_codec_app, session_value
from payloop.codec import ENCODING, KEY_ID_KEY, EncryptionCodec, KeyRing
from payloop.settings import Settings
from payloop.temporal import temporal_cli_path
from tests.e2e.conftest import CODEC_KEYS, Stack, free_port, serve

TOKEN = "codec-test-token-0123456789"
UI_ORIGIN = "http://localhost:18233"


@contextlib.asynccontextmanager
async def codec_server(**overrides: Any) -> AsyncIterator[tuple[Settings, httpx.AsyncClient]]:
    settings = Settings(codec_keys=CODEC_KEYS, codec_server_token=f"{TOKEN},older-token-0123456789",
                        codec_server_port=free_port(), temporal_ui_url=f"{UI_ORIGIN}", **overrides)
    url = f"http://127.0.0.1:{settings.codec_server_port}"
    async with serve(create_codec_app(settings), settings.codec_server_port), \
            httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield settings, http


def as_json(payloads: list[Payload]) -> dict[str, Any]:
    """The body the UI sends: Payloads as protobuf JSON (bytes in base64)."""
    return {"payloads": [{"metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                          "data": base64.b64encode(p.data).decode()} for p in payloads]}


def from_json(body: dict[str, Any]) -> list[Payload]:
    return [Payload(metadata={k: base64.b64decode(v) for k, v in p.get("metadata", {}).items()},
                    data=base64.b64decode(p.get("data", ""))) for p in body["payloads"]]


BEARER = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}


async def test_encode_then_decode_round_trips_over_http() -> None:
    plain = await DataConverter.default.encode([{"player_id": "p-42", "return_url": "https://casino.example/x"}, 7])
    async with codec_server() as (_settings, http):
        encoded = await http.post("/encode", json=as_json(plain), headers=BEARER)
        assert encoded.status_code == 200, encoded.text
        assert encoded.headers["cache-control"] == "no-store"
        sealed = from_json(encoded.json())
        assert [p.metadata["encoding"] for p in sealed] == [ENCODING, ENCODING]
        assert b"p-42" not in sealed[0].data
        decoded = await http.post("/default/decode", json=encoded.json(), headers=BEARER)  # any prefix works
        assert decoded.status_code == 200, decoded.text
        assert from_json(decoded.json()) == plain


async def test_payloads_the_workers_sealed_are_decoded_and_plain_ones_pass_through() -> None:
    sealed = await EncryptionCodec(KeyRing.parse(CODEC_KEYS)).encode(await DataConverter.default.encode(["secret"]))
    plain = await DataConverter.default.encode(["recorded before the codec"])
    async with codec_server() as (_settings, http):
        response = await http.post("/decode", json=as_json([*sealed, *plain]), headers=BEARER)
        assert response.status_code == 200, response.text
        assert from_json(response.json()) == [*await DataConverter.default.encode(["secret"]), *plain]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer not-the-token-0123456789"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer"},
], ids=["none", "wrong", "basic", "empty"])
async def test_a_missing_or_wrong_token_is_a_401_and_decodes_nothing(headers: dict[str, str]) -> None:
    sealed = await EncryptionCodec(KeyRing.parse(CODEC_KEYS)).encode(await DataConverter.default.encode(["secret"]))
    async with codec_server() as (_settings, http):
        for operation in ("decode", "encode"):
            response = await http.post(f"/{operation}", json=as_json(sealed), headers=headers)
            assert response.status_code == 401, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "unauthorized" and "secret" not in response.text


async def test_the_older_token_still_works_while_rotating() -> None:
    async with codec_server() as (_settings, http):
        response = await http.post("/decode", json={"payloads": []},
                                   headers={"Authorization": "Bearer older-token-0123456789"})
        assert response.status_code == 200 and response.json() == {"payloads": []}


async def test_the_ui_signs_in_once_then_its_cookie_authenticates() -> None:
    sealed = await EncryptionCodec(KeyRing.parse(CODEC_KEYS)).encode(await DataConverter.default.encode(["secret"]))
    async with codec_server() as (settings, http):
        page = await http.get("/login")
        assert page.status_code == 200 and 'name="token"' in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        wrong = await http.post("/login", data={"token": "guess-guess-guess-guess"})
        assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
        signed_in = await http.post("/login", data={"token": TOKEN})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == settings.temporal_ui_url
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and TOKEN not in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
        # The UI's request: its origin, X-Namespace, and (include credentials) the cookie; no Authorization.
        ui_headers = {"Origin": UI_ORIGIN, "X-Namespace": "default"}
        response = await http.post("/decode", json=as_json(sealed), headers=ui_headers)  # the cookie jar sends it
        assert response.status_code == 200, response.text
        assert from_json(response.json()) == await DataConverter.default.encode(["secret"])
        assert response.headers["access-control-allow-origin"] == UI_ORIGIN
        assert response.headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize("cookie", [
    session_value(TOKEN, int(time.time()) - 1),  # expired
    session_value("a-token-we-never-issued", int(time.time()) + 3600),  # forged
    f"{int(time.time()) + 3600}.{'0' * 64}",
    "garbage",
], ids=["expired", "forged", "zero-mac", "garbage"])
async def test_an_expired_or_forged_session_is_a_401(cookie: str) -> None:
    async with codec_server() as (_settings, http):
        http.cookies.set(SESSION_COOKIE, cookie)
        response = await http.post("/decode", json={"payloads": []})
        assert response.status_code == 401, response.text


async def test_cors_grants_the_ui_origin_only() -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-namespace"}
    async with codec_server() as (_settings, http):
        granted = await http.options("/decode", headers={"Origin": UI_ORIGIN, **preflight})
        assert granted.status_code == 200
        assert granted.headers["access-control-allow-origin"] == UI_ORIGIN
        assert granted.headers["access-control-allow-credentials"] == "true"
        assert "x-namespace" in granted.headers["access-control-allow-headers"].lower()
        assert "POST" in granted.headers["access-control-allow-methods"]
        for origin in ("https://evil.example", "http://localhost:8080", UI_ORIGIN.replace("http:", "https:")):
            refused = await http.options("/decode", headers={"Origin": origin, **preflight})
            assert "access-control-allow-origin" not in refused.headers, origin
            # Even a request that is sent (with a valid token): the browser gets no grant to read the answer.
            answered = await http.post("/decode", json={"payloads": []}, headers={"Origin": origin, **BEARER})
            assert answered.status_code == 200
            assert "access-control-allow-origin" not in answered.headers, origin


async def test_bad_bodies_other_namespaces_and_unknown_keys_are_400_problems() -> None:
    other_ring = EncryptionCodec(KeyRing.parse(f"retired-2023:{base64.b64encode(os.urandom(32)).decode()}"))
    under_retired_key = await other_ring.encode(await DataConverter.default.encode(["old"]))
    async with codec_server() as (_settings, http):
        for body in (b"{oops", b'{"payloads": 3}', b'{"unknown": []}', "ü".encode("latin-1")):
            response = await http.post("/decode", content=body, headers={**BEARER, "Content-Type": "application/json"})
            assert response.status_code == 400 and response.json()["code"] == "invalid_payloads", body
        other = await http.post("/decode", json={"payloads": []}, headers={**BEARER, "X-Namespace": "payments-eu"})
        assert other.status_code == 400 and other.json()["code"] == "unknown_namespace"
        unknown = await http.post("/decode", json=as_json(under_retired_key), headers=BEARER)
        assert unknown.status_code == 400, unknown.text
        problem = unknown.json()
        assert problem["code"] == "unknown_codec_key" and problem["key_id"] == "retired-2023"
        assert "retired-2023" in problem["detail"]
        assert (await http.post("/elsewhere", json={}, headers=BEARER)).status_code == 404
        big = await http.post("/decode", content=b" " * (4 * 1024 * 1024 + 1),
                              headers={**BEARER, "Content-Type": "application/json"})
        assert big.status_code == 413


async def test_a_bad_key_ring_or_token_stops_the_server_at_start() -> None:
    with pytest.raises(ValueError, match="PAYLOOP_CODEC_KEYS is empty"):
        create_codec_app(Settings(codec_keys=""))
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_codec_app(Settings(codec_server_token="short"))


async def temporal_cli(*args: str) -> tuple[int, str, str]:
    """The real `temporal` CLI, without blocking the event loop that serves the codec server."""
    proc = await asyncio.create_subprocess_exec(temporal_cli_path(), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_temporal_cli_shows_a_deposit_decoded_through_the_codec_server(stack: Stack) -> None:
    marker = f"https://casino.example/back?order=cli-{os.urandom(6).hex()}"
    response = await stack.api.post("/v1/payments/init", headers={"Idempotency-Key": os.urandom(8).hex()}, json={
        "amount": "12.00", "currency": "EUR", "method": "ewallet", "player_id": f"p-cli-{os.urandom(4).hex()}",
        "return_url": marker, "meta": {"country": "DE"}})
    assert response.status_code == 201, response.text
    init = response.json()
    await stack.wait_final(init["payment_id"])
    show = ["workflow", "show", "--workflow-id", f"deposit-{init['payment_id']}", "--output", "json",
            "--address", stack.client.service_client.config.target_host,
            "--namespace", stack.settings.temporal_namespace]
    async with codec_server() as (settings, _http):
        endpoint = f"http://127.0.0.1:{settings.codec_server_port}"
        code, raw, _ = await temporal_cli(*show)
        assert code == 0 and marker not in raw and "binary/encrypted" in base64_decoded_metadata(raw)
        code, decoded, err = await temporal_cli(*show, "--codec-endpoint", endpoint, "--codec-auth", f"Bearer {TOKEN}")
        assert code == 0, err
        assert marker in decoded_payload_text(decoded)
        code, refused, err = await temporal_cli(*show, "--codec-endpoint", endpoint, "--codec-auth", "Bearer wrong")
        assert code != 0 and marker not in refused + err  # the codec server's 401: the CLI shows nothing


def base64_decoded_metadata(history_json: str) -> str:
    """Every payload's metadata values in a history as `temporal workflow show --output json` prints it."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "metadata" in node and isinstance(node["metadata"], dict):
                found.extend(base64.b64decode(v).decode(errors="replace") for v in node["metadata"].values()
                             if isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return " ".join(found)


def decoded_payload_text(history_json: str) -> str:
    """Every payload's data in a printed history, base64-decoded: what a reader of the history sees."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                found.append(base64.b64decode(node["data"]).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return "\n".join(found)
