"""Real-HTTP fixtures: the sandbox PSP service and a webhook receiver, served by uvicorn in the test loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from psp.sandbox import SandboxConfig, create_app
from psp.sandbox_connector import SandboxConnector
from tests.psp.psp_testkit import (
    RETRY_DELAYS,
    SLOW_SECONDS,
    WEBHOOK_SECRET,
    RunningSandbox,
    WebhookReceiver,
    bound_socket,
    serve,
)


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    sock, url = bound_socket()
    recv = WebhookReceiver(url=url)
    async with serve(recv.app(), sock):
        yield recv


@pytest.fixture(scope="session")
async def sandbox(receiver: WebhookReceiver) -> AsyncIterator[RunningSandbox]:
    sock, url = bound_socket()
    config = SandboxConfig(
        webhook_url_template=receiver.url + "/webhooks/{psp}",
        webhook_secret=WEBHOOK_SECRET,
        public_url=url,
        settle_delay_seconds=0.05,
        webhook_retry_delays=RETRY_DELAYS,
        slow_seconds=SLOW_SECONDS,
    )
    async with serve(create_app(config), sock):
        yield RunningSandbox(url, config)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


@pytest.fixture
def card(sandbox: RunningSandbox, http: httpx.AsyncClient) -> SandboxConnector:
    return SandboxConnector("card", frozenset({"card"}), f"{sandbox.url}/card", http)


@pytest.fixture
def ewallet(sandbox: RunningSandbox, http: httpx.AsyncClient) -> SandboxConnector:
    return SandboxConnector("ewallet", frozenset({"ewallet"}), f"{sandbox.url}/ewallet", http)


@pytest.fixture
def connectors(card: SandboxConnector, ewallet: SandboxConnector) -> dict[str, SandboxConnector]:
    return {"card": card, "ewallet": ewallet}
