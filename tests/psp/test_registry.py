"""The registry wires settings to connectors and verifiers; checked against the running sandbox."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from payloop.settings import Settings
import psp as psp_package
from psp.registry import (
    PROVIDERS,
    build_connectors,
    build_verifiers,
    payment_methods,
    payout_methods,
    signed_by_another_psp,
)
from psp.base import InvalidWebhook
from psp.sandbox import SandboxConfig, config_from_settings, create_app
from psp.scenarios import PSPS
from tests.psp.psp_testkit import (
    PSP_METHOD,
    VERIFIER_CLASSES,
    WEBHOOK_SECRET,
    RunningSandbox,
    WebhookReceiver,
    bound_socket,
    eventually,
    make_connector,
    payment_request,
    payout_request,
    serve,
    wait_for_webhooks,
)


ALL_METHODS = {
    "card": frozenset({"card"}), "card_b": frozenset({"card"}), "ewallet": frozenset({"ewallet"}),
    "ewallet_b": frozenset({"ewallet"}), "paybybank": frozenset({"bank_transfer"}),
    "paybybank_b": frozenset({"bank_transfer"}), "crypto": frozenset({"crypto"}), "crypto_b": frozenset({"crypto"}),
}


def _is_final(delivery: object, psp: str) -> bool:
    body = delivery.json  # type: ignore[attr-defined]
    if psp == "paybybank":
        return bool(body["type"] == "payment.settled")
    if psp == "paybybank_b":
        return bool(body["Data"]["Resource"]["Status"] == "AcceptedSettlementCompleted")
    if psp in ("crypto", "crypto_b"):
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
        if method == "bank_transfer":  # a redirect: the player authorises at the bank first
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
    assert [p.name for p in PROVIDERS] == ["card", "card_b", "ewallet", "ewallet_b", "paybybank", "paybybank_b",
                                           "crypto", "crypto_b"]


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


# -- secret rotation ------------------------------------------------------------------------------


def _signed_event(psp: str, secret: str) -> tuple[dict[str, str], bytes]:
    from psp.sandbox.formats import FORMATS, Snapshot

    snap = Snapshot("payment", f"{psp}_1", "pay_1", "captured", 5000, 5000, "EUR", confirmations=3)
    body = json.dumps(FORMATS[psp].event("evt_1", snap, "2023-11-14T22:13:20Z")).encode()
    return FORMATS[psp].scheme.headers(secret, int(time.time()), body, "evt_1"), body


def test_build_verifiers_accepts_comma_separated_secrets_for_rotation() -> None:
    verifiers = build_verifiers(Settings(sandbox_webhook_secret="whsec_new, whsec_old"))

    for psp, verify in verifiers.items():
        for secret in ("whsec_new", "whsec_old"):
            headers, body = _signed_event(psp, secret)
            assert verify(headers, body, time.time()).payment_id == "pay_1"
        headers, body = _signed_event(psp, "whsec_retired")
        with pytest.raises(InvalidWebhook) as refused:
            verify(headers, body, time.time())
        assert refused.value.code == "bad_signature"


PER_PSP_SECRETS = {psp: f"whsec_{psp}_only" for psp in PSPS}


def test_each_psp_verifies_with_its_own_secret_and_rotates_on_its_own() -> None:
    settings = Settings(sandbox_webhook_secret="whsec_shared", webhook_secret_card="whsec_card_new,whsec_card_old",
                        webhook_secret_crypto="whsec_crypto_only", webhook_secret_paybybank="")
    verifiers = build_verifiers(settings)

    # card rotates: both of its secrets verify, at card only; card_b has no secret of its own (the fallback).
    for secret in ("whsec_card_new", "whsec_card_old"):
        headers, body = _signed_event("card", secret)
        assert verifiers["card"](headers, body, time.time()).event_id == "evt_1"
        with pytest.raises(InvalidWebhook):
            verifiers["card_b"](headers, body, time.time())
    headers, body = _signed_event("card", "whsec_shared")
    with pytest.raises(InvalidWebhook):
        verifiers["card"](headers, body, time.time())
    assert verifiers["card_b"](headers, body, time.time()).event_id == "evt_1"
    headers, body = _signed_event("crypto", "whsec_shared")
    with pytest.raises(InvalidWebhook):
        verifiers["crypto"](headers, body, time.time())
    for psp in ("ewallet", "paybybank"):  # unset or empty: the shared fallback
        headers, body = _signed_event(psp, "whsec_shared")
        assert verifiers[psp](headers, body, time.time()).event_id == "evt_1"
    config = config_from_settings(settings)
    assert config.webhook_secrets == {"card": "whsec_card_new,whsec_card_old", "crypto": "whsec_crypto_only"}
    assert [config.signing_secret(psp) for psp in ("card", "card_b", "crypto")] == [
        "whsec_card_new", "whsec_shared", "whsec_crypto_only"]


def test_the_routing_file_names_the_setting_each_psp_reads(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`webhook_secret` in the routing file is where a PSP's secret comes from, for the API and the sandbox."""
    shipped = (Path(psp_package.__file__).parent / "routing.yaml").read_text()
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(shipped.replace("webhook_secret: PAYLOOP_WEBHOOK_SECRET_EWALLET",
                                            "webhook_secret: WALLET_VENDOR_SECRET"))
    monkeypatch.setenv("WALLET_VENDOR_SECRET", "whsec_from_the_vault")
    settings = Settings(routing_file=routing_file, webhook_secret_ewallet="whsec_not_named_any_more")

    headers, body = _signed_event("ewallet", "whsec_from_the_vault")
    assert build_verifiers(settings)["ewallet"](headers, body, time.time()).event_id == "evt_1"
    headers, body = _signed_event("ewallet", "whsec_not_named_any_more")
    with pytest.raises(InvalidWebhook):
        build_verifiers(settings)["ewallet"](headers, body, time.time())
    assert config_from_settings(settings).signing_secret("ewallet") == "whsec_from_the_vault"


async def test_the_sandbox_signs_each_psp_with_its_own_secret(
    http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    """The sandbox service as `payloop sandbox-psp` configures it (config_from_settings), over real HTTP: each
    PSP's delivery verifies under that PSP's secret and under no other PSP's."""
    sock, url = bound_socket()
    settings = Settings(sandbox_webhook_secret="whsec_shared",
                        **{f"webhook_secret_{psp}": secret for psp, secret in PER_PSP_SECRETS.items()})
    config = replace(config_from_settings(settings), webhook_url_template=receiver.url + "/webhooks/{psp}",
                     public_url=url, settle_delay_seconds=0.01)
    verifiers = build_verifiers(settings)
    async with serve(create_app(config), sock):
        for psp in PER_PSP_SECRETS:
            req = payment_request(method=PSP_METHOD[psp])
            created = await make_connector(psp, url, http).create_payment(req)
            if PSP_METHOD[psp] == "bank_transfer":  # a redirect: the player authorises at the bank first
                await http.post(created.redirect_url, data={"outcome": "success"})
            [delivery, *_] = await eventually(lambda: receiver.for_payment(req.payment_id))
            assert verifiers[psp](delivery.headers, delivery.body, time.time()).payment_id == req.payment_id
            for other, secret in PER_PSP_SECRETS.items():
                if other != psp:
                    with pytest.raises(InvalidWebhook):
                        VERIFIER_CLASSES[psp](psp, [secret, "whsec_shared"])(delivery.headers, delivery.body,
                                                                              time.time())
                    with pytest.raises(InvalidWebhook) as refused:
                        verifiers[other](delivery.headers, delivery.body, time.time())
                    assert signed_by_another_psp(verifiers, other, refused.value, delivery.headers, delivery.body,
                                                 time.time()) == psp


async def test_during_rotation_the_sandbox_signs_with_the_first_secret(
    http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    sock, url = bound_socket()
    config = SandboxConfig(
        webhook_url_template=receiver.url + "/webhooks/{psp}",
        webhook_secret="whsec_new,whsec_old",
        public_url=url,
        settle_delay_seconds=0.01,
        webhook_secrets={"ewallet": "whsec_wallet_only"},
    )
    async with serve(create_app(config), sock):
        for psp, accepted, refused in [
            ("card", "whsec_new", "whsec_old"),
            ("crypto", "whsec_new", "whsec_old"),
            ("ewallet", "whsec_wallet_only", "whsec_new"),
        ]:
            connector = make_connector(psp, url, http)
            req = payment_request(method=PSP_METHOD[psp])
            await connector.create_payment(req)
            await wait_for_webhooks(receiver, req.payment_id)
            delivery = receiver.for_payment(req.payment_id)[0]
            verify = VERIFIER_CLASSES[psp](psp, accepted)
            assert verify(delivery.headers, delivery.body, time.time()).payment_id == req.payment_id
            with pytest.raises(InvalidWebhook):
                VERIFIER_CLASSES[psp](psp, refused)(delivery.headers, delivery.body, time.time())
            # A verifier that knows both (the API during the rotation) accepts it too.
            both = VERIFIER_CLASSES[psp](psp, [refused, accepted])
            assert both(delivery.headers, delivery.body, time.time()).payment_id == req.payment_id
