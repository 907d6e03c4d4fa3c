"""Helpers for the PSP tests: polling, in-loop uvicorn servers, and a webhook receiver."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

from psp.base import (
    CreatePaymentRequest,
    CreatePayoutRequest,
    CreateRefundRequest,
    PspConnector,
    PspPayment,
    WebhookEvent,
)
from psp.crypto_connector import CryptoConnector, CryptoWebhookVerifier
from psp.ewallet_b_connector import EwalletBConnector, EwalletBWebhookVerifier
from psp.ewallet_connector import EwalletConnector, EwalletWebhookVerifier
from psp.http_connector import HttpPspConnector, SignedWebhookVerifier
from psp.paybybank_b_connector import PayByBankBConnector, PayByBankBWebhookVerifier
from psp.paybybank_connector import PayByBankConnector, PayByBankWebhookVerifier
from psp.sandbox import SandboxConfig
from psp.scenarios import METHOD_OF
from psp.sandbox_connector import SandboxConnector, SandboxWebhookVerifier

T = TypeVar("T")

WEBHOOK_SECRET = "whsec_psp_tests"
SLOW_SECONDS = 0.5
RETRY_DELAYS = (0.05, 0.1, 0.2)
RETURN_URL = "https://casino.example/cashier/return"

# Per sandbox PSP: its connector and verifier classes, and the method it takes and pays out to.
CONNECTOR_CLASSES: dict[str, type[HttpPspConnector]] = {
    "card": SandboxConnector, "card_b": SandboxConnector, "ewallet": EwalletConnector,
    "ewallet_b": EwalletBConnector, "paybybank": PayByBankConnector, "paybybank_b": PayByBankBConnector,
    "crypto": CryptoConnector, "crypto_b": CryptoConnector,
}
VERIFIER_CLASSES: dict[str, type[SignedWebhookVerifier]] = {
    "card": SandboxWebhookVerifier, "card_b": SandboxWebhookVerifier, "ewallet": EwalletWebhookVerifier,
    "ewallet_b": EwalletBWebhookVerifier, "paybybank": PayByBankWebhookVerifier,
    "paybybank_b": PayByBankBWebhookVerifier, "crypto": CryptoWebhookVerifier, "crypto_b": CryptoWebhookVerifier,
}
PSP_METHOD = METHOD_OF


def merchant_reference_of(body: Any) -> str:
    """Our reference in any sandbox PSP's webhook body (each has its own wire format)."""
    if not isinstance(body, dict):
        return ""
    for key in ("merchant_reference", "merchantReference", "external_id", "order_id", "txn_ref",
                "EndToEndIdentification"):
        if isinstance(body.get(key), str):
            return str(body[key])
    for nested in ("resource", "data", "invoice", "refund", "txn", "Data", "Resource"):
        if isinstance(body.get(nested), dict):
            return merchant_reference_of(body[nested])
    return ""


def make_connector(psp: str, base_url: str, http: httpx.AsyncClient) -> HttpPspConnector:
    return CONNECTOR_CLASSES[psp](psp, frozenset({PSP_METHOD[psp]}), f"{base_url}/{psp}", http)


@dataclass(frozen=True)
class RunningSandbox:
    url: str
    config: SandboxConfig


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout: float = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(predicate: Callable[[], T], timeout: float = ..., interval: float = ...) -> T: ...
async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def stays(predicate: Callable[[], bool], duration: float = 0.3, interval: float = 0.02) -> None:
    """Assert that `predicate` holds for the whole of `duration` (for "nothing happens" checks)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    while loop.time() < deadline:
        assert predicate(), "condition stopped holding"
        await asyncio.sleep(interval)


def bound_socket() -> tuple[socket.socket, str]:
    """A socket bound to a free local port, and its base URL (known before the app is built)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def serve(app: FastAPI, sock: socket.socket) -> AsyncIterator[None]:
    """Run `app` with uvicorn on `sock` as a task of the current loop, until the block exits. It keeps an idle
    connection longer than an httpx client does (5 s), so a client never sends on one the server just closed."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=75))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), timeout=10)
        if task.done():
            task.result()  # surface a startup failure
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Received:
    psp: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class WebhookReceiver:
    """Records webhook deliveries; `fail_first[merchant_reference] = n` answers 500 to the next n of them."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)

    def for_payment(self, merchant_reference: str) -> list[Received]:
        return [r for r in self.received if merchant_reference_of(r.json) == merchant_reference]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/webhooks/{psp}")
        async def receive(psp: str, request: Request) -> Response:
            body = await request.body()
            try:
                reference = merchant_reference_of(json.loads(body))
            except ValueError:
                reference = ""
            if self.fail_first.get(reference, 0) > 0:
                self.fail_first[reference] -= 1
                return Response(status_code=500)
            self.received.append(Received(psp, dict(request.headers), body))
            return Response(status_code=200)

        return app


def payment_request(
    scenario: str | None = None, method: str = "card", amount_minor: int = 5000, currency: str = "EUR"
) -> CreatePaymentRequest:
    return CreatePaymentRequest(
        payment_id=f"pay_{uuid.uuid4().hex[:16]}",
        amount_minor=amount_minor,
        currency=currency,
        method=method,
        player_id="player_1",
        return_url=RETURN_URL,
        country="DE",
        scenario=scenario,
    )


def payout_request(
    scenario: str | None = None, method: str = "card", amount_minor: int = 5000, currency: str = "EUR"
) -> CreatePayoutRequest:
    return CreatePayoutRequest(
        payout_id=f"po_{uuid.uuid4().hex[:16]}",
        amount_minor=amount_minor,
        currency=currency,
        method=method,
        player_id="player_1",
        country="DE",
        scenario=scenario,
    )


async def start_payment(
    psp: str, connector: PspConnector, http: httpx.AsyncClient, scenario: str | None = None, **kw: object
) -> tuple[str, PspPayment]:
    """Create a payment and, at pay-by-bank, authorise it at the bank as the player would."""
    req = payment_request(scenario, method=PSP_METHOD[psp], **kw)  # type: ignore[arg-type]
    created = await connector.create_payment(req)
    if PSP_METHOD[psp] == "bank_transfer":
        assert created.status == "requires_action" and created.redirect_url
        submitted = await http.post(created.redirect_url, data={"bank": "Sandbox Bank", "outcome": "success"})
        assert submitted.status_code == 303 and submitted.headers["location"] == RETURN_URL
    return req.payment_id, created


async def captured_payment(psp: str, connector: PspConnector, http: httpx.AsyncClient, **kw: object) -> PspPayment:
    """A payment captured at `psp` (after the bank's authorisation, or the chain's confirmations, where it takes
    them), as the PSP's look-up reports it."""
    payment_id, _ = await start_payment(psp, connector, http, **kw)

    async def captured() -> PspPayment | None:
        payment = await connector.get_payment(payment_id)
        return payment if payment.status == "captured" else None

    return await eventually(captured)


def refund_request(
    payment: PspPayment, amount_minor: int | None = None, scenario: str | None = None
) -> CreateRefundRequest:
    """A refund of (part of) `payment`, by default all of it."""
    return CreateRefundRequest(
        refund_id=f"rf_{uuid.uuid4().hex[:16]}",
        payment_id=payment.payment_id,
        psp_reference=payment.psp_reference,
        amount_minor=payment.amount_minor if amount_minor is None else amount_minor,
        currency=payment.currency,
        scenario=scenario,
    )


def verified(connector: PspConnector, receiver: WebhookReceiver, merchant_reference: str) -> list[WebhookEvent]:
    """The webhooks received for `merchant_reference`, each passed through the verifier for the connector's PSP."""
    verify = VERIFIER_CLASSES[connector.name](connector.name, WEBHOOK_SECRET)
    return [verify(r.headers, r.body, time.time()) for r in receiver.for_payment(merchant_reference)]


async def wait_for_webhooks(receiver: WebhookReceiver, merchant_reference: str, count: int = 1) -> None:
    await eventually(lambda: len(receiver.for_payment(merchant_reference)) >= count)


async def deliveries(
    http: httpx.AsyncClient, sandbox: RunningSandbox, merchant_reference: str
) -> list[dict[str, Any]]:
    """The sandbox's webhook delivery log for `merchant_reference`."""
    response = await http.get(f"{sandbox.url}/_sandbox/deliveries", params={"merchant_reference": merchant_reference})
    log: list[dict[str, Any]] = response.json()["deliveries"]
    return log


@asynccontextmanager
async def psp_mode(http: httpx.AsyncClient, sandbox: RunningSandbox, psp: str, mode: str) -> AsyncIterator[None]:
    """Put `psp` in control `mode` for the block, then back up."""
    response = await http.post(f"{sandbox.url}/control/{psp}", json={"mode": mode})
    assert response.json() == {"psp": psp, "mode": mode}
    try:
        yield
    finally:
        await http.post(f"{sandbox.url}/control/{psp}", json={"mode": "up"})
