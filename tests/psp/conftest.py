"""Real-HTTP fixtures: the sandbox PSP service and a webhook receiver, served by uvicorn in the test loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from psp.sandbox import SandboxConfig, create_app
from psp.crypto_connector import CryptoConnector
from psp.ewallet_connector import EwalletConnector
from psp.http_connector import HttpPspConnector
from psp.paybybank_connector import PayByBankConnector
from psp.sandbox_connector import SandboxConnector
from psp.scenarios import PSPS
from tests.psp.psp_testkit import (
    RETRY_DELAYS,
    SLOW_SECONDS,
    WEBHOOK_SECRET,
    RunningSandbox,
    WebhookReceiver,
    bound_socket,
    make_connector,
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
def card_b(sandbox: RunningSandbox, http: httpx.AsyncClient) -> SandboxConnector:
    return SandboxConnector("card_b", frozenset({"card"}), f"{sandbox.url}/card_b", http)


@pytest.fixture
def ewallet(sandbox: RunningSandbox, http: httpx.AsyncClient) -> EwalletConnector:
    return EwalletConnector("ewallet", frozenset({"ewallet"}), f"{sandbox.url}/ewallet", http)


@pytest.fixture
def paybybank(sandbox: RunningSandbox, http: httpx.AsyncClient) -> PayByBankConnector:
    return PayByBankConnector("paybybank", frozenset({"bank_transfer"}), f"{sandbox.url}/paybybank", http)


@pytest.fixture
def crypto(sandbox: RunningSandbox, http: httpx.AsyncClient) -> CryptoConnector:
    return CryptoConnector("crypto", frozenset({"crypto"}), f"{sandbox.url}/crypto", http)


@pytest.fixture
def connectors(sandbox: RunningSandbox, http: httpx.AsyncClient) -> dict[str, HttpPspConnector]:
    return {psp: make_connector(psp, sandbox.url, http) for psp in ("card", "ewallet", "paybybank", "crypto")}


@pytest.fixture
def every_psp(sandbox: RunningSandbox, http: httpx.AsyncClient) -> dict[str, HttpPspConnector]:
    """A connector per sandbox PSP, the second card acquirer included."""
    return {psp: make_connector(psp, sandbox.url, http) for psp in PSPS}
