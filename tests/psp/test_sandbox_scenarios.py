"""Every sandbox scenario, end to end over HTTP: SandboxConnector → sandbox PSP → signed webhook → verifier."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest

from psp.base import PspDeclined, PspNotFound, PspRequestRejected, PspTransientError
from psp.ewallet_connector import EwalletConnector
from psp.http_connector import HttpPspConnector
from psp.sandbox_connector import SandboxConnector
from tests.psp.psp_testkit import (
    RETURN_URL,
    RunningSandbox,
    WebhookReceiver,
    deliveries,
    eventually,
    payment_request,
    stays,
    verified,
    wait_for_webhooks,
)


@pytest.mark.parametrize("connector_name", ["card", "ewallet"])
async def test_approve_settles_and_sends_a_captured_webhook(
    connector_name: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[connector_name]
    req = payment_request(method=connector_name)

    created = await connector.create_payment(req)

    assert created.status == "pending" and created.redirect_url is None
    assert created.psp == connector_name and created.payment_id == req.payment_id
    assert created.psp_reference.startswith(f"{connector_name}_")
    assert (created.amount_minor, created.currency) == (5000, "EUR")
    await wait_for_webhooks(receiver, req.payment_id)
    [event] = verified(connector, receiver, req.payment_id)
    assert event.psp == connector_name and event.payment_id == req.payment_id
    assert (event.status, event.amount_minor, event.currency) == ("captured", 5000, "EUR")
    assert event.psp_reference == created.psp_reference and event.event_id.startswith("evt_")
    [delivery] = receiver.for_payment(req.payment_id)
    if connector_name == "card":
        assert delivery.json["type"] == "payment.captured"
    else:  # the e-wallet's own wire format
        assert (delivery.json["eventType"], delivery.json["resource"]["status"]) == ("PAYMENT_STATUS", "SUCCEEDED")
    assert delivery.headers["content-type"] == "application/json"
    assert (await connector.get_payment(req.payment_id)).status == "captured"


async def test_amounts_travel_as_decimal_strings_with_the_currency_exponent(
    card: SandboxConnector, receiver: WebhookReceiver
) -> None:
    req = payment_request(amount_minor=1234, currency="JPY")

    created = await card.create_payment(req)

    assert (created.amount_minor, created.currency) == (1234, "JPY")
    await wait_for_webhooks(receiver, req.payment_id)
    assert receiver.for_payment(req.payment_id)[0].json["amount"] == "1234"


@pytest.mark.parametrize(("connector_name", "code"), [("card", "card_declined"), ("ewallet", "insufficient_funds")])
async def test_decline_is_a_hard_decline_and_the_payment_is_stored_failed(
    connector_name: str, code: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[connector_name]
    req = payment_request("decline", method=connector_name)

    with pytest.raises(PspDeclined) as declined:
        await connector.create_payment(req)

    assert declined.value.code == code
    payment = await connector.get_payment(req.payment_id)
    assert (payment.status, payment.failure_code) == ("failed", code)
    with pytest.raises(PspDeclined):  # a retried create gets the same answer, not a second payment
        await connector.create_payment(req)
    await stays(lambda: not receiver.for_payment(req.payment_id))


async def test_challenge_waits_for_the_form_then_captures(
    card: SandboxConnector, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    req = payment_request("challenge")

    created = await card.create_payment(req)

    assert created.status == "requires_action"
    assert created.redirect_url and created.redirect_url.endswith(f"/card/challenge/{created.psp_reference}")
    page = await http.get(created.redirect_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text
    assert 'value="success"' in page.text and 'value="fail"' in page.text
    await stays(lambda: not receiver.for_payment(req.payment_id), duration=0.2)
    assert (await card.get_payment(req.payment_id)).status == "requires_action"

    submitted = await http.post(created.redirect_url, data={"outcome": "success"})

    assert submitted.status_code == 303 and submitted.headers["location"] == RETURN_URL
    await wait_for_webhooks(receiver, req.payment_id)
    [event] = verified(card, receiver, req.payment_id)
    assert (event.status, event.amount_minor) == ("captured", 5000)
    assert (await card.get_payment(req.payment_id)).status == "captured"
    resubmitted = await http.post(created.redirect_url, data={"outcome": "fail"})
    assert resubmitted.status_code == 303
    assert (await card.get_payment(req.payment_id)).status == "captured"


@pytest.mark.parametrize(
    ("scenario", "outcome"), [("challenge", "fail"), ("3ds_fail", "success"), ("3ds_fail", "fail")]
)
async def test_failed_challenge_fails_the_payment(
    scenario: str, outcome: str, card: SandboxConnector, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    req = payment_request(scenario)
    created = await card.create_payment(req)
    assert created.status == "requires_action" and created.redirect_url

    submitted = await http.post(created.redirect_url, data={"outcome": outcome})

    assert submitted.status_code == 303 and submitted.headers["location"] == RETURN_URL
    await wait_for_webhooks(receiver, req.payment_id)
    [event] = verified(card, receiver, req.payment_id)
    assert (event.status, event.failure_code) == ("failed", "3ds_failed")
    assert receiver.for_payment(req.payment_id)[0].json["type"] == "payment.failed"
    payment = await card.get_payment(req.payment_id)
    assert (payment.status, payment.failure_code) == ("failed", "3ds_failed")


@pytest.mark.parametrize("scenario", ["challenge", "3ds_fail"])
async def test_ewallet_has_no_3ds_so_challenge_scenarios_approve(
    scenario: str, ewallet: EwalletConnector, receiver: WebhookReceiver
) -> None:
    req = payment_request(scenario, method="ewallet")

    created = await ewallet.create_payment(req)

    assert created.status == "pending" and created.redirect_url is None
    await wait_for_webhooks(receiver, req.payment_id)
    assert [e.status for e in verified(ewallet, receiver, req.payment_id)] == ["captured"]


async def test_no_webhook_captures_silently_and_status_lookup_knows(
    card: SandboxConnector, receiver: WebhookReceiver, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = payment_request("no_webhook")
    await card.create_payment(req)

    captured = await eventually(lambda: _status_is(card, req.payment_id, "captured"))

    assert captured
    await stays(lambda: not receiver.for_payment(req.payment_id))
    assert await deliveries(http, sandbox, req.payment_id) == []


async def test_lost_stays_pending_without_webhook(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payment_request("lost")
    await card.create_payment(req)

    await stays(lambda: not receiver.for_payment(req.payment_id), duration=0.3)

    assert (await card.get_payment(req.payment_id)).status == "pending"


async def test_duplicate_webhook_delivers_the_same_event_twice(
    card: SandboxConnector, receiver: WebhookReceiver
) -> None:
    req = payment_request("duplicate_webhook")
    await card.create_payment(req)

    await wait_for_webhooks(receiver, req.payment_id, count=2)

    first, second = receiver.for_payment(req.payment_id)
    assert first.body == second.body
    events = verified(card, receiver, req.payment_id)
    assert events[0] == events[1] and events[0].status == "captured"


async def test_out_of_order_sends_a_late_authorized_after_captured(
    card: SandboxConnector, receiver: WebhookReceiver
) -> None:
    req = payment_request("out_of_order")
    await card.create_payment(req)

    await wait_for_webhooks(receiver, req.payment_id, count=2)

    captured, authorized = verified(card, receiver, req.payment_id)
    assert (captured.status, authorized.status) == ("captured", "authorized")
    assert captured.event_id != authorized.event_id
    assert datetime.fromisoformat(authorized.occurred_at) < datetime.fromisoformat(captured.occurred_at)
    assert (await card.get_payment(req.payment_id)).status == "captured"


async def test_wrong_amount_captures_one_unit_more(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payment_request("wrong_amount")
    created = await card.create_payment(req)
    assert created.amount_minor == 5000

    await wait_for_webhooks(receiver, req.payment_id)

    [event] = verified(card, receiver, req.payment_id)
    assert (event.status, event.amount_minor) == ("captured", 5100)
    assert receiver.for_payment(req.payment_id)[0].json["amount"] == "51.00"
    assert (await card.get_payment(req.payment_id)).amount_minor == 5100


async def test_wrong_currency_captures_in_another_currency(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payment_request("wrong_currency")
    created = await card.create_payment(req)
    assert (created.amount_minor, created.currency) == (5000, "EUR")

    await wait_for_webhooks(receiver, req.payment_id)

    [event] = verified(card, receiver, req.payment_id)
    assert (event.status, event.amount_minor, event.currency) == ("captured", 5000, "USD")
    assert (await card.get_payment(req.payment_id)).currency == "USD"


async def test_flaky_answers_503_twice_then_creates(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payment_request("flaky")

    for _ in range(2):
        with pytest.raises(PspTransientError) as unavailable:
            await card.create_payment(req)
        assert unavailable.value.code == "psp_unavailable"
    created = await card.create_payment(req)

    assert created.status == "pending"
    await wait_for_webhooks(receiver, req.payment_id)
    assert [e.status for e in verified(card, receiver, req.payment_id)] == ["captured"]
    assert (await card.create_payment(req)).psp_reference == created.psp_reference


async def test_slow_answers_after_slow_seconds_then_approves(
    card: SandboxConnector, receiver: WebhookReceiver, sandbox: RunningSandbox
) -> None:
    req = payment_request("slow")

    started = time.monotonic()
    created = await card.create_payment(req)

    assert time.monotonic() - started >= sandbox.config.slow_seconds
    assert created.status == "pending"
    await wait_for_webhooks(receiver, req.payment_id)
    assert [e.status for e in verified(card, receiver, req.payment_id)] == ["captured"]


async def test_unknown_scenario_is_rejected(card: SandboxConnector) -> None:
    with pytest.raises(PspRequestRejected) as rejected:
        await card.create_payment(payment_request("explode"))
    assert rejected.value.code == "unknown_scenario"


async def test_get_unknown_payment_is_not_found(card: SandboxConnector) -> None:
    with pytest.raises(PspNotFound):
        await card.get_payment("pay_never_created")


async def _status_is(connector: SandboxConnector, payment_id: str, status: str) -> bool:
    return (await connector.get_payment(payment_id)).status == status
