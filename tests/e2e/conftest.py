"""End-to-end harness: a real Temporal dev server, and per ledger backend a stack of real HTTP servers
(API, sandbox PSP) plus a worker, all talking over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from ledger import assert_invariants
from payloop.codec import data_converter
from payloop.settings import Settings
from payloop.temporal import dev_server_flags, temporal_cli_path
from psp.routing.health import psp_attempts, psp_circuits
from psp.sandbox.app import config_from_settings
from psp.sandbox.app import create_app as create_sandbox_app
from tests.conftest import BACKENDS, FreshDatabase
from workers.metrics import worker_runtime
from workers.payments import payments_worker
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

API_KEY = "test-key"
OTHER_CLIENT_KEY = "other-key"
WALLET_ONLY_KEY = "wallet-only-key"
WEBHOOK_SECRET = "whsec_test"
# Each PSP its own webhook secret, as in production (card keeps WEBHOOK_SECRET, which tests sign card events with).
WEBHOOK_SECRETS = {"card": WEBHOOK_SECRET, "card_b": "whsec_test_card_b", "ewallet": "whsec_test_ewallet",
                   "paybybank": "whsec_test_paybybank", "crypto": "whsec_test_crypto",
                   "ewallet_b": "whsec_test_ewallet_b", "paybybank_b": "whsec_test_paybybank_b",
                   "crypto_b": "whsec_test_crypto_b"}
# The tests' payload codec ring (not the built-in dev one): the client, the API and every worker, in process or not,
# encrypt with the first key. Keep both keys while recorded histories in tests/histories may be sealed with them.
CODEC_KEYS = "e2e-2:HZXYDpR+QEqNLKCfKHpsCp1eMvpNcA5XuKnxXY/jpHg=,e2e-1:Se+/VcNK56u56nFCjpbt1KqLqKqQkBJyCN2wAo/2ONc="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The tests' Temporal runtime exports the in-process workers' metrics here, as `payloop worker` does on
# PAYLOOP_WORKER_METRICS_PORT (workers/metrics.py).
WORKER_METRICS_PORT = free_port()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` (a counter's with its `_total`) whose labels include `labels`; 0 if none."""
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


# The test servers keep an idle connection longer than an httpx client does (5 s): with both at 5 s, a client could
# send on a pooled connection just as the server closed it (httpx.ReadError, seen under the full suite's load).
TEST_SERVER_KEEP_ALIVE_SECONDS = 75


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, port: int, **uvicorn_options: Any) -> AsyncIterator[None]:
    uvicorn_options.setdefault("timeout_keep_alive", TEST_SERVER_KEEP_ALIVE_SECONDS)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        dev_server_extra_args=dev_server_flags(),
        data_converter=data_converter(CODEC_KEYS),  # env.client (so the tests' workers and API) encrypts
        runtime=worker_runtime("127.0.0.1", WORKER_METRICS_PORT),
    )
    yield env
    await env.shutdown()


@dataclass(frozen=True)
class ReceivedWebhook:
    """A request to the API's webhook endpoint as it arrived: path, headers and raw body."""

    path: str
    headers: dict[str, str]
    body: bytes


def recording_webhooks(app: FastAPI, received: list[ReceivedWebhook], door: asyncio.Event | None = None) -> ASGIApp:
    """The API app, keeping a copy of every webhook request it is sent, so a test can re-post a PSP's genuine
    delivery (its signature included) elsewhere. It only watches: the app reads the same messages. While `door` is
    cleared, webhook requests wait at it (Stack.webhooks_held)."""

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/webhooks/"):
            return await app(scope, receive, send)
        if door is not None:
            await door.wait()
        chunks: list[bytes] = []

        async def tapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                    received.append(ReceivedWebhook(scope["path"], headers, b"".join(chunks)))
            return message

        await app(scope, tapped, send)

    return recording


@dataclass
class Stack:
    backend: str
    settings: Settings
    engine: AsyncEngine
    client: Client
    api: httpx.AsyncClient
    sandbox: httpx.AsyncClient
    # Every webhook request the API was sent, as sent (the sandbox PSPs' genuine deliveries among them).
    webhooks_received: list[ReceivedWebhook] = field(default_factory=list)
    # The secrets the sandbox PSPs sign their webhooks with, per PSP (one left out signs with the shared
    # sandbox_webhook_secret): read at every delivery, so a test may set one to a secret the API does not know, as
    # a PSP that rotated its secret on its own would.
    sandbox_signing_secrets: dict[str, str] = field(default_factory=dict)
    # The API server, for a test that changes a setting the way a deployment does: a restart with it.
    api_server: ApiServer | None = None
    # Open (set) but inside webhooks_held: the PSPs' webhooks wait at it before the API reads them (running_stack's
    # stacks have one).
    webhook_door: asyncio.Event | None = None

    @contextlib.asynccontextmanager
    async def webhooks_held(self) -> AsyncIterator[None]:
        """The PSPs' webhooks wait at the API's door until the block ends, then go in: a test sees a payment (a
        browser its status page) before the PSP's outcome arrives. Keep it shorter than the workflows' webhook
        waits (2 s), after which they ask the PSP instead."""
        door = self.webhook_door
        assert door is not None, "this stack's API has no webhook door"
        door.clear()
        try:
            yield
        finally:
            door.set()

    async def deposit(
        self, *, method: str = "card", amount: str = "50.00", currency: str = "EUR", scenario: str | None = None,
        player_id: str | None = None, key: str | None = None, expect: int = 201,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "amount": amount, "currency": currency, "method": method,
            "player_id": player_id or new_player(), "return_url": "https://casino.example/return",
            "meta": {"country": "DE", **({"sandbox_scenario": scenario} if scenario else {})},
        }
        response = await self.api.post("/v1/payments/init", json=body,
                                       headers={"Idempotency-Key": key or uuid.uuid4().hex})
        assert response.status_code == expect, response.text
        return response.json()

    async def payment(self, payment_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/payments/{payment_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_final(self, payment_id: str, timeout: float = 20) -> dict[str, Any]:
        final = {"credited", "failed", "rejected", "expired", "in_review"}
        return await eventually(lambda: self.payment(payment_id), lambda p: p["status"] in final, timeout)

    async def balance(self, player_id: str, currency: str = "EUR") -> str:
        response = await self.api.get(f"/v1/wallet/{player_id}/balance")
        assert response.status_code == 200, response.text
        for entry in response.json()["balances"]:
            if entry["currency"] == currency:
                return entry["available"]
        return "0.00"

    async def check_invariants(self) -> None:
        await assert_invariants(self.engine)

    async def worker_metric(self, name: str, **labels: str) -> float:
        """A metric of this stack's worker (its task queue's samples), as Prometheus scrapes it."""
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")).text
        return metric_value(text, name, task_queue=self.settings.task_queue, **labels)

    async def api_metric(self, name: str, **labels: str) -> float:
        return metric_value((await self.api.get("/metrics")).text, name, **labels)

    async def psp_mode(self, psp: str, mode: str) -> None:
        """Degrades a sandbox PSP; back "up", it also forgets the PSP's health, so the failures one test caused
        do not open its circuit for the next test."""
        response = await self.sandbox.post(f"/control/{psp}", json={"mode": mode})
        assert response.status_code == 200, response.text
        if mode == "up":
            async with self.engine.begin() as conn:
                await conn.execute(psp_attempts.delete().where(psp_attempts.c.psp == psp))
                await conn.execute(psp_circuits.delete().where(psp_circuits.c.psp == psp))


def new_player() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


async def eventually(
    fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float = 20, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {value!r}")
        await asyncio.sleep(interval)


def stack_settings(database_url: str, task_queue: str, **overrides: Any) -> Settings:
    """Settings for a test stack on free ports, with timeouts short enough for tests to wait them out."""
    values: dict[str, Any] = dict(
        database_url=database_url,
        task_queue=task_queue,
        api_port=free_port(),
        sandbox_psp_port=free_port(),
        api_keys=(f"{API_KEY}:casino-a:payments,wallet,ops;{OTHER_CLIENT_KEY}:casino-b:payments,wallet;"
                  f"{WALLET_ONLY_KEY}:game-provider:wallet"),
        sandbox_webhook_secret=WEBHOOK_SECRET,
        **{f"webhook_secret_{psp}": secret for psp, secret in WEBHOOK_SECRETS.items()},
        codec_keys=CODEC_KEYS,
        deposit_webhook_timeout_seconds=2.0,
        deposit_status_poll_attempts=2,
        deposit_status_poll_interval_seconds=0.5,
        init_update_timeout_seconds=15,
        refund_webhook_timeout_seconds=2.0,
        refund_status_poll_attempts=2,
        refund_status_poll_interval_seconds=0.5,
        payout_webhook_timeout_seconds=2.0,
        payout_status_poll_attempts=2,
        payout_status_poll_interval_seconds=0.5,
        kyc_wait_timeout_seconds=4.0,
        deposit_kyc_wait_timeout_seconds=8.0,
        review_wait_timeout_seconds=6.0,
        payout_psp_down_deadline_seconds=30.0,
        payout_psp_down_first_retry_seconds=1.0,
        # The stack serves plain http on loopback; tests/e2e/test_console.py checks the flag's default separately.
        console_cookie_secure=False,
        # The console tests sign in many times a minute, all from loopback (tests/test_console_login_limit.py
        # checks the limit itself).
        rate_limit_console_login="1000/minute",
        # The checkout's forms offer the sandbox's scenarios (challenge, decline …) to the browser tests.
        checkout_sandbox_scenarios=True,
    )
    return Settings(**(values | overrides))


class ApiServer:
    """The API served on its settings' port; `restart` serves a fresh one on the same port with changed settings,
    as deploying a changed setting does (clients and the sandbox's webhooks reach it at the same address)."""

    def __init__(self, settings: Settings, engine: AsyncEngine, client: Client,
                 webhooks_received: list[ReceivedWebhook], webhook_door: asyncio.Event | None = None) -> None:
        self.settings = settings
        self._engine, self._client, self._webhooks_received = engine, client, webhooks_received
        self._webhook_door = webhook_door
        self._serving = contextlib.AsyncExitStack()

    async def start(self) -> None:
        app = create_app(self.settings, engine=self._engine, temporal=self._client)
        # Loopback is a trusted proxy (the default): the tests speak for players through X-Forwarded-For, as a
        # cashier would.
        await self._serving.enter_async_context(
            serve(recording_webhooks(app, self._webhooks_received, self._webhook_door), self.settings.api_port,
                  forwarded_allow_ips=self.settings.trusted_proxy_cidrs))

    async def stop(self) -> None:
        await self._serving.aclose()
        self._serving = contextlib.AsyncExitStack()

    async def restart(self, **setting_overrides: Any) -> None:
        await self.stop()
        self.settings = self.settings.model_copy(update=setting_overrides)
        await self.start()


@contextlib.asynccontextmanager
async def api_and_sandbox(
    settings: Settings, engine: AsyncEngine, client: Client, *, slow_seconds: float = 0.5,
    webhooks_received: list[ReceivedWebhook] | None = None, signing_secrets: dict[str, str] | None = None,
    api_server: ApiServer | None = None, webhook_retry_delays: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0),
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The sandbox PSP and the API served on the settings' ports, and an HTTP client for each. The sandbox signs
    as `payloop sandbox-psp` does (config_from_settings: each PSP with its own secret), only faster, and redelivers
    a refused webhook after each of `webhook_retry_delays` (seconds); `signing_secrets`, if given, is filled with
    those secrets and is the dict the sandbox signs from; `api_server`, if given, serves the API."""
    configured = config_from_settings(settings)
    if signing_secrets is not None:
        signing_secrets.update(configured.webhook_secrets)
    sandbox_config = replace(
        configured,
        webhook_secrets=configured.webhook_secrets if signing_secrets is None else signing_secrets,
        webhook_url_template=f"{settings.api_url}/v1/webhooks/{{psp}}",
        public_url=settings.sandbox_psp_url,
        settle_delay_seconds=0.05,
        webhook_retry_delays=webhook_retry_delays,
        slow_seconds=slow_seconds,
    )
    server = api_server or ApiServer(settings, engine, client,
                                     webhooks_received if webhooks_received is not None else [])
    async with (
        serve(create_sandbox_app(sandbox_config), settings.sandbox_psp_port),
        httpx.AsyncClient(base_url=settings.api_url, headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=30) as api,
        httpx.AsyncClient(base_url=settings.sandbox_psp_url, timeout=30) as sandbox,
    ):
        await server.start()
        try:
            yield api, sandbox
        finally:
            await server.stop()


@contextlib.asynccontextmanager
async def running_stack(
    backend: str, client: Client, workdir: Path, task_queue: str, *, slow_seconds: float = 0.5,
    webhook_retry_delays: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0), **overrides: Any
) -> AsyncIterator[Stack]:
    """A fresh database, a payments worker, the API and the sandbox PSP, on `task_queue` (settings `overrides`)."""
    async with FreshDatabase(backend, workdir) as db:
        settings = stack_settings(db.url, task_queue, **overrides)
        engine = db.engine()
        webhooks_received: list[ReceivedWebhook] = []
        signing_secrets: dict[str, str] = {}
        webhook_door = asyncio.Event()
        webhook_door.set()
        api_server = ApiServer(settings, engine, client, webhooks_received, webhook_door)
        async with (
            payments_worker(client, settings, schema=db.schema),
            api_and_sandbox(settings, engine, client, slow_seconds=slow_seconds, webhooks_received=webhooks_received,
                            signing_secrets=signing_secrets, api_server=api_server,
                            webhook_retry_delays=webhook_retry_delays) as (api, sandbox),
        ):
            yield Stack(backend, settings, engine, client, api, sandbox, webhooks_received, signing_secrets,
                        api_server, webhook_door)
        await engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
async def stack(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    backend = request.param
    async with running_stack(backend, temporal_env.client, tmp_path_factory.mktemp(f"e2e-{backend}"),
                             f"payloop-e2e-{backend}") as stack:
        yield stack


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """The system's Chromium, for the ops console's tests (their helpers: tests/e2e/console_helpers.py)."""
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    yield context
    await context.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Replay tests read the histories every other test left behind, so they run last.
    items.sort(key=lambda item: item.get_closest_marker("replay") is not None)
