"""The registry wires settings to connectors and verifiers; checked against the running sandbox."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx

from payloop.settings import Settings
from psp.registry import PROVIDERS, build_connectors, build_verifiers, error_tables, payment_methods, payout_methods
from psp.sandbox import config_from_settings
from tests.psp.psp_testkit import (
    WEBHOOK_SECRET,
    RunningSandbox,
    WebhookReceiver,
    eventually,
    wait_for_webhooks,
    payment_request,
    payout_request,
)


ALL_METHODS = {
    "card": frozenset({"card"}), "ewallet": frozenset({"ewallet"}),
    "paybybank": frozenset({"bank_transfer"}), "crypto": frozenset({"crypto"}),
}


def _is_final(delivery: object, psp: str) -> bool:
    body = delivery.json  # type: ignore[attr-defined]
    if psp == "paybybank":
        return bool(body["type"] == "payment.settled")
    if psp == "crypto":
        return bool(body["invoice"]["state"] == "confirmed")
    return True


def settings_for(sandbox: RunningSandbox) -> Settings:
    host, port = urlsplit(sandbox.url).netloc.split(":")
    return Settings(
        sandbox_psp_host=host,
        sandbox_psp_port=int(port),
        sandbox_webhook_secret=WEBHOOK_SECRET,
        webhook_tolerance_seconds=60,
    )


async def test_connectors_and_verifiers_per_provider(
    sandbox: RunningSandbox, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    settings = settings_for(sandbox)
    connectors = build_connectors(settings, http)
    verifiers = build_verifiers(settings)

    assert {name: c.methods for name, c in connectors.items()} == ALL_METHODS
    assert all(c.name == name for name, c in connectors.items())
    assert set(verifiers) == set(connectors)
    for name in connectors:
        method = next(iter(ALL_METHODS[name]))
        req = payment_request(method=method)
        created = await connectors[name].create_payment(req)
        if name == "paybybank":  # a redirect: the player authorises at the bank first
            assert created.status == "requires_action" and created.redirect_url
            await http.post(created.redirect_url, data={"outcome": "success"})
        final = await eventually(lambda: [d for d in receiver.for_payment(req.payment_id) if _is_final(d, name)])
        event = verifiers[name](final[0].headers, final[0].body, time.time())
        assert (event.psp, event.psp_reference, event.status) == (name, created.psp_reference, "captured")


def test_sandbox_config_from_settings() -> None:
    settings = Settings(sandbox_psp_port=9100, sandbox_webhook_secret="whsec_x")

    config = config_from_settings(settings)

    assert config.public_url == "http://127.0.0.1:9100"
    assert config.webhook_secret == "whsec_x"
    assert config.webhook_url_template == settings.sandbox_webhook_url


def test_methods_across_providers() -> None:
    assert payment_methods() == frozenset({"card", "ewallet", "bank_transfer", "crypto"})
    assert payout_methods() == frozenset({"card", "ewallet", "bank_transfer", "crypto"})
    assert [p.name for p in PROVIDERS] == ["card", "ewallet", "paybybank", "crypto"]


async def test_connectors_pay_out_to_their_own_method(
    sandbox: RunningSandbox, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    settings = settings_for(sandbox)
    connectors = build_connectors(settings, http)
    verifiers = build_verifiers(settings)

    assert {name: c.payout_methods for name, c in connectors.items()} == ALL_METHODS
    for name in connectors:
        req = payout_request(method=next(iter(ALL_METHODS[name])))
        created = await connectors[name].create_payout(req)
        [delivery] = await eventually(lambda: receiver.for_payment(req.payout_id))
        event = verifiers[name](delivery.headers, delivery.body, time.time())
        assert (event.payment_id, event.psp_reference, event.status) == (req.payout_id, created.psp_reference, "paid")
