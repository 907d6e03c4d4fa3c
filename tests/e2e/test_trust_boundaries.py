"""Trust boundaries on the real stack: whose signature a webhook carries, what a key's scopes let it learn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from api.app import create_app
from api.models import webhook_deliveries
from ledger.models import ledger_accounts
from payloop.alerts import alerts
from tests.e2e.conftest import API_KEY, Stack, eventually, free_port, new_player, serve
from tests.e2e.test_payouts import funded_player
from tests.e2e.test_webhooks import stored_events

PAYMENTS_ONLY_KEY = "payments-only-key"


async def _wrong_psp_rejections(stack: Stack, psp: str) -> int:
    async with stack.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(webhook_deliveries).where(
            webhook_deliveries.c.psp == psp, webhook_deliveries.c.outcome == "rejected",
            webhook_deliveries.c.detail == "wrong_psp")
        return (await conn.execute(query)).scalar_one()


async def test_a_genuine_card_delivery_reposted_to_card_b_is_refused_as_wrong_psp(stack: Stack) -> None:
    """Taken as card_b's, card's capture of a credited payment would say money moved at a PSP the payment never
    used: a false alert (psp_settled_after_close), or, while the payment runs, a review (captured_at_left_psp)."""
    player = new_player()
    init = await stack.deposit(method="card", player_id=player)
    assert init["psp"] == "card"
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    [genuine] = [w for w in stack.webhooks_received
                 if w.path == "/v1/webhooks/card" and init["payment_id"].encode() in w.body]
    signed = {name: value for name, value in genuine.headers.items()
              if name in ("content-type", "x-signature", "x-timestamp")}
    rejections_before = await _wrong_psp_rejections(stack, "card_b")

    reposted = await stack.api.post("/v1/webhooks/card_b", content=genuine.body, headers=signed)

    assert reposted.status_code == 401, reposted.text
    assert reposted.headers["content-type"].startswith("application/problem+json")
    assert reposted.json()["code"] == "wrong_psp"
    assert await _wrong_psp_rejections(stack, "card_b") == rejections_before + 1
    # The very same bytes at card's own URL are card's, and a copy: genuine, fresh, and already taken.
    again = await stack.api.post("/v1/webhooks/card", content=genuine.body, headers=signed)
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
    async with stack.engine.connect() as conn:
        raised = (await conn.execute(sa.select(alerts.c.kind).where(
            alerts.c.reference == init["payment_id"]))).scalars().all()
    assert [row.psp for row in await stored_events(stack, init["payment_id"])] == ["card"] and raised == []
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


@contextlib.asynccontextmanager
async def payments_only_api(stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The stack's API once more, where client casino-a (API_KEY: payments, wallet, ops) also has a key with the
    `payments` scope only: (that key's client, the full key's client)."""
    settings = stack.settings.model_copy(update={
        "api_keys": f"{stack.settings.api_keys};{PAYMENTS_ONLY_KEY}:casino-a:payments", "api_port": free_port()})
    async with (
        serve(create_app(settings, engine=stack.engine, temporal=stack.client), settings.api_port),
        httpx.AsyncClient(base_url=settings.api_url, timeout=30,
                          headers={"Authorization": f"Bearer {PAYMENTS_ONLY_KEY}"}) as payments_only,
        httpx.AsyncClient(base_url=settings.api_url, timeout=30,
                          headers={"Authorization": f"Bearer {API_KEY}"}) as full,
    ):
        yield payments_only, full


async def test_a_key_without_the_wallet_scope_learns_no_balance_from_a_payout(stack: Stack) -> None:
    player = await funded_player(stack, "30.00")
    async with payments_only_api(stack) as (payments_only, full):
        short = {"amount": "30.01", "currency": "EUR", "player_id": player}
        refused = await payments_only.post("/v1/payouts/init", json=short,
                                           headers={"Idempotency-Key": uuid.uuid4().hex})
        assert refused.status_code == 402 and refused.json()["code"] == "insufficient_funds", refused.text
        assert "available_balance" not in refused.json()
        told = await full.post("/v1/payouts/init", json=short, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert (told.status_code, told.json()["available_balance"]) == (402, "30.00"), told.text

        key = uuid.uuid4().hex
        body = {"amount": "10.00", "currency": "EUR", "player_id": player}
        held = await payments_only.post("/v1/payouts/init", json=body, headers={"Idempotency-Key": key})
        assert held.status_code == 201, held.text
        assert held.json().keys() == {"payout_id", "status"}
        # The same client's retry: the stored answer, shown as each key may see it.
        replayed = await payments_only.post("/v1/payouts/init", json=body, headers={"Idempotency-Key": key})
        assert replayed.headers["Idempotent-Replayed"] == "true" and "available_balance" not in replayed.json()
        with_wallet = await full.post("/v1/payouts/init", json=body, headers={"Idempotency-Key": key})
        assert with_wallet.json() == {**held.json(), "available_balance": "20.00"}
    await stack.check_invariants()


async def _abort_mid_body(stack: Stack, path: str, headers: dict[str, str]) -> None:
    """Sends the headers and part of a body promised to be longer, then hangs up, as a client that gave up."""
    host, port = stack.settings.api_host, stack.settings.api_port
    reader, writer = await asyncio.open_connection(host, port)
    head = "".join(f"{name}: {value}\r\n" for name, value in {
        "Host": f"{host}:{port}", "Content-Type": "application/json", "Content-Length": "4096", **headers}.items())
    writer.write(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + b'{"amount": "5')
    await writer.drain()
    await asyncio.sleep(0.2)  # the server is reading the body now
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("path", ["/v1/webhooks/card", "/v1/payments/init"])
async def test_a_client_hanging_up_mid_body_is_a_client_abort_not_a_server_error(
    stack: Stack, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    await _abort_mid_body(stack, path, {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": uuid.uuid4().hex})

    aborts = await eventually(
        lambda: asyncio.sleep(0, [r for r in caplog.records if "disconnected" in r.getMessage()]), bool, timeout=5)
    assert [(r.levelno, r.exc_info) for r in aborts] == [(logging.INFO, None)], aborts
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # The server is fine: the next request on a new connection is served.
    assert (await stack.api.get("/healthz")).status_code == 200


@pytest.mark.parametrize("player_id", [".", ".."])
async def test_player_ids_a_url_resolves_away_are_refused_in_paths_and_bodies(stack: Stack, player_id: str) -> None:
    """A client building `/v1/wallet/{player_id}/balance` from the id ".." asks for /v1/balance (httpx, browsers
    and proxies remove dot segments), so such an id would name one player in a body and reach something else in
    a URL. Sent percent-encoded here, as the server decodes it to the id itself."""
    encoded = player_id.replace(".", "%2E")
    game = {"player_id": player_id, "currency": "EUR", "amount": "1.00", "transaction_id": "bet-1",
            "round_id": "round-1", "game_id": "slots"}
    requests = [
        ("GET", f"/v1/wallet/{encoded}/balance", None),
        ("GET", f"/v1/wallet/{encoded}/transactions", None),
        ("GET", f"/v1/players/{encoded}", None),
        ("PUT", f"/v1/players/{encoded}/deposit-limits", {"currency": "EUR", "period": "day", "amount": "500.00"}),
        ("POST", f"/v1/players/{encoded}/self-exclusion", {"until": None}),
        ("PUT", f"/v1/ops/players/{encoded}/kyc", {"status": "verified"}),
        ("POST", f"/v1/ops/players/{encoded}/close", None),
        ("POST", f"/v1/ops/players/{encoded}/reopen", None),
        ("POST", "/v1/payments/init", {"amount": "50.00", "currency": "EUR", "method": "card", "player_id": player_id,
                                       "return_url": "https://casino.example/return"}),
        ("POST", "/v1/payouts/init", {"amount": "10.00", "currency": "EUR", "player_id": player_id}),
        ("POST", "/v1/wallet/debit", game),
        ("POST", "/v1/wallet/credit", game),
        ("POST", "/v1/wallet/rollback", {**game, "transaction_id": "rb-1", "reference_transaction_id": "bet-1"}),
    ]
    for method, path, body in requests:
        response = await stack.api.request(method, path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 422, (method, path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in response.json()["errors"]] in (["path.player_id"], ["player_id"]), (
            path, response.json())
    async with stack.engine.connect() as conn:
        accounts = (await conn.execute(sa.select(ledger_accounts.c.id).where(
            ledger_accounts.c.owner == player_id))).scalars().all()
    assert accounts == []
    await stack.check_invariants()


async def test_player_ids_with_a_slash_or_control_characters_are_refused_too(stack: Stack) -> None:
    """Already refused before dot segments were: a control character is a 422; a slash, decoded by the server,
    splits the path, which then names no resource (404) — a problem either way, never a 500 or another player."""
    for encoded, status in (("a%01b", 422), ("%00", 422), ("a%2Fb", 404), ("..%2F..", 404)):
        response = await stack.api.get(f"/v1/wallet/{encoded}/balance")
        assert response.status_code == status, (encoded, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for player_id in ("a/b", "a\x01b", "../x"):
        response = await stack.api.post("/v1/payouts/init", headers={"Idempotency-Key": uuid.uuid4().hex},
                                        json={"amount": "10.00", "currency": "EUR", "player_id": player_id})
        assert response.status_code == 422, (player_id, response.text)
