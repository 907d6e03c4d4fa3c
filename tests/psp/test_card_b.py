"""`card_b`, the second card acquirer: the card's wire format, signature, 3DS flow and error table, but its own PSP
(own records, references, control mode, challenge pages and webhook URL), so card payments can fail over."""

from __future__ import annotations

import httpx
import pytest

from payloop.settings import Settings
from psp.base import PspDeclined, PspFailover, PspStepUpRequired, PspTransientError
from psp.registry import PROVIDERS, build_connectors, build_verifiers, error_tables
from psp.routing import load_routing, route
from psp.sandbox.app import DECLINE_CODES
from psp.sandbox.formats import FORMATS
from psp.scenarios import ERROR_SCENARIO_CODES, FAMILIES, PAYMENT_SCENARIOS_BY_PSP, PAYOUT_SCENARIOS_BY_PSP
from psp.sandbox_connector import SandboxConnector, SandboxWebhookVerifier
from tests.psp.psp_testkit import (
    RETURN_URL,
    RunningSandbox,
    WebhookReceiver,
    payment_request,
    payout_request,
    psp_mode,
    verified,
    wait_for_webhooks,
)

# -- the sandbox -----------------------------------------------------------------------------------------------


def test_card_b_is_of_the_card_family() -> None:
    assert FAMILIES["card_b"] == "card"
    assert FORMATS["card_b"] is FORMATS["card"]
    assert PAYMENT_SCENARIOS_BY_PSP["card_b"] == PAYMENT_SCENARIOS_BY_PSP["card"]
    assert PAYOUT_SCENARIOS_BY_PSP["card_b"] == PAYOUT_SCENARIOS_BY_PSP["card"]
    assert DECLINE_CODES["card_b"] == DECLINE_CODES["card"]
    assert ERROR_SCENARIO_CODES["card_b"] == ERROR_SCENARIO_CODES["card"]


async def test_approve_captures_with_a_signed_webhook_to_its_own_url(
    card_b: SandboxConnector, receiver: WebhookReceiver
) -> None:
    req = payment_request()

    created = await card_b.create_payment(req)

    assert created.status == "pending" and created.psp_reference.startswith("card_b_")
    await wait_for_webhooks(receiver, req.payment_id)
    [event] = verified(card_b, receiver, req.payment_id)  # the card's X-Signature scheme
    assert (event.psp, event.psp_reference, event.status, event.amount_minor) == (
        "card_b", created.psp_reference, "captured", 5000)
    assert [r.psp for r in receiver.for_payment(req.payment_id)] == ["card_b"]  # /webhooks/card_b
    assert "X-Signature".lower() in {h.lower() for h in receiver.for_payment(req.payment_id)[0].headers}
    assert (await card_b.get_payment(req.payment_id)).status == "captured"


async def test_records_are_per_psp(card: SandboxConnector, card_b: SandboxConnector) -> None:
    req = payment_request("lost")
    await card_b.create_payment(req)

    # Unknown at card; and the same merchant reference may be created there too (a failover re-uses the id).
    assert (await card.create_payment(req)).psp_reference.startswith("card_")
    assert not (await card.get_payment(req.payment_id)).psp_reference.startswith("card_b_")


async def test_decline_and_error_scenarios_follow_the_card_table(card_b: SandboxConnector) -> None:
    with pytest.raises(PspDeclined) as declined:
        await card_b.create_payment(payment_request("decline"))
    assert declined.value.code == "card_declined"
    with pytest.raises(PspStepUpRequired):
        await card_b.create_payment(payment_request("soft_decline"))
    with pytest.raises(PspFailover) as failover:
        await card_b.create_payment(payment_request("issuer_unavailable"))
    assert failover.value.code == "issuer_unavailable"


async def test_challenge_page_lives_under_card_b(
    card: SandboxConnector, card_b: SandboxConnector, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    req = payment_request("challenge")

    created = await card_b.create_payment(req)

    assert created.status == "requires_action"
    assert created.redirect_url and created.redirect_url.endswith(f"/card_b/challenge/{created.psp_reference}")
    page = await http.get(created.redirect_url)
    assert page.status_code == 200 and '<form method="post"' in page.text
    # card's page does not know card_b's authentication.
    other = await http.get(created.redirect_url.replace("/card_b/", "/card/"))
    assert other.status_code == 404 and other.json()["error"]["code"] == "challenge_not_found"

    submitted = await http.post(created.redirect_url, data={"outcome": "success"})

    assert submitted.status_code == 303 and submitted.headers["location"] == RETURN_URL
    await wait_for_webhooks(receiver, req.payment_id)
    assert [e.status for e in verified(card_b, receiver, req.payment_id)] == ["captured"]


async def test_3ds_fail_fails_at_card_b(
    card_b: SandboxConnector, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    req = payment_request("3ds_fail")
    created = await card_b.create_payment(req)
    assert created.redirect_url

    await http.post(created.redirect_url, data={"outcome": "success"})

    await wait_for_webhooks(receiver, req.payment_id)
    [event] = verified(card_b, receiver, req.payment_id)
    assert (event.status, event.failure_code) == ("failed", "3ds_failed")


async def test_no_challenge_pages_outside_the_card_family(http: httpx.AsyncClient, sandbox: RunningSandbox) -> None:
    assert (await http.get(f"{sandbox.url}/ewallet/challenge/x")).status_code == 404
    assert (await http.get(f"{sandbox.url}/nope/challenge/x")).status_code == 404


async def test_payout_to_card(card_b: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payout_request()

    created = await card_b.create_payout(req)

    assert created.psp_reference.startswith("card_b_")
    await wait_for_webhooks(receiver, req.payout_id)
    [event] = verified(card_b, receiver, req.payout_id)
    assert (event.psp, event.psp_reference, event.status) == ("card_b", created.psp_reference, "paid")
    assert receiver.for_payment(req.payout_id)[0].json["type"] == "payout.paid"


@pytest.mark.parametrize(("mode", "code"), [("down", "psp_unavailable"), ("error", "psp_internal_error")])
async def test_control_mode_is_independent_of_card(
    mode: str, code: str, card: SandboxConnector, card_b: SandboxConnector, http: httpx.AsyncClient,
    sandbox: RunningSandbox,
) -> None:
    async with psp_mode(http, sandbox, "card_b", mode):
        assert (await http.get(f"{sandbox.url}/control/card_b")).json() == {"psp": "card_b", "mode": mode}
        assert (await http.get(f"{sandbox.url}/control/card")).json()["mode"] == "up"
        with pytest.raises(PspTransientError) as failed:
            await card_b.create_payment(payment_request())
        assert failed.value.code == code
        assert (await card.create_payment(payment_request("lost"))).status == "pending"
    async with psp_mode(http, sandbox, "card", "down"):
        assert (await card_b.create_payment(payment_request("lost"))).status == "pending"
        with pytest.raises(PspTransientError):
            await card.create_payment(payment_request())


# -- the registry and the routing file ------------------------------------------------------------------------


async def test_registry_has_card_b_with_the_card_classes() -> None:
    [provider] = [p for p in PROVIDERS if p.name == "card_b"]
    assert (provider.methods, provider.payout_methods) == (frozenset({"card"}), frozenset({"card"}))
    assert error_tables()["card_b"] == error_tables()["card"]

    settings = Settings(sandbox_psp_port=9100, sandbox_webhook_secret="whsec_x")
    async with httpx.AsyncClient() as http:
        connector = build_connectors(settings, http)["card_b"]
    assert type(connector) is SandboxConnector and connector.name == "card_b"
    assert connector.payout_methods == frozenset({"card"})
    assert connector._base_url == "http://127.0.0.1:9100/card_b"  # type: ignore[attr-defined]
    verifier = build_verifiers(settings)["card_b"]
    assert type(verifier) is SandboxWebhookVerifier


def test_routing_puts_card_first_and_card_b_second() -> None:
    config = load_routing(Settings())
    card_b = config.psp("card_b")
    assert (card_b.methods, card_b.payout_methods, card_b.countries) == (["card"], ["card"], ["*"])
    assert card_b.currencies == config.psp("card").currencies
    for psp in ("card", "card_b"):
        health = config.psp(psp).health
        assert (health.min_samples, health.failure_rate, health.open_seconds) == (3, "0.5", 5)
    for currency, amount_minor in (("EUR", 5000), ("JPY", 5000), ("KWD", 50_000)):
        got = route(config, method="card", currency=currency, amount_minor=amount_minor, country="DE", risk=None,
                    payment_id="p", available={"card", "card_b"}, health={})
        assert [c.psp for c in got] == ["card", "card_b"], currency
