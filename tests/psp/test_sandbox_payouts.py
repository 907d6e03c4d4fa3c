"""Payouts at the sandbox PSPs, end to end over HTTP: SandboxConnector → sandbox PSP → signed webhook → verifier."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import httpx
import pytest

from psp.base import PspDeclined, PspNotFound, PspRequestRejected, PspTransientError
from psp.ewallet_connector import EwalletConnector
from psp.http_connector import HttpPspConnector
from psp.sandbox_connector import SandboxConnector
from tests.psp.psp_testkit import (
    RunningSandbox,
    WebhookReceiver,
    deliveries,
    eventually,
    payment_request,
    payout_request,
    psp_mode,
    stays,
    verified,
    wait_for_webhooks,
)


def payout_body(merchant_reference: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "merchant_reference": merchant_reference,
        "amount": "50.00",
        "currency": "EUR",
        "method": "card",
        "customer_id": "player_1",
        "metadata": {"sandbox_scenario": "lost"},
    }
    return body | overrides


async def _status_is(connector: SandboxConnector, payout_id: str, status: str) -> bool:
    return (await connector.get_payout(payout_id)).status == status


async def _delivered_log(http: httpx.AsyncClient, sandbox: RunningSandbox, payout_id: str) -> list[dict[str, object]]:
    # The receiver records a webhook before the sandbox logs the attempt's outcome: wait for the log.
    log = await deliveries(http, sandbox, payout_id)
    return log if log and log[-1]["outcome"] == "delivered" else []


# -- scenarios ------------------------------------------------------------------------------------


@pytest.mark.parametrize("connector_name", ["card", "ewallet"])
async def test_approve_pays_out_and_sends_a_paid_webhook(
    connector_name: str,
    connectors: dict[str, HttpPspConnector],
    receiver: WebhookReceiver,
    http: httpx.AsyncClient,
    sandbox: RunningSandbox,
) -> None:
    connector = connectors[connector_name]
    req = payout_request(method=connector_name)

    created = await connector.create_payout(req)

    assert connector.payout_methods == frozenset({connector_name})
    assert (created.psp, created.payout_id, created.status) == (connector_name, req.payout_id, "pending")
    assert created.psp_reference.startswith(f"{connector_name}_")
    assert (created.amount_minor, created.currency, created.failure_code) == (5000, "EUR", None)
    await wait_for_webhooks(receiver, req.payout_id)
    [event] = verified(connector, receiver, req.payout_id)
    assert (event.psp, event.payment_id, event.psp_reference) == (connector_name, req.payout_id, created.psp_reference)
    assert (event.status, event.amount_minor, event.currency) == ("paid", 5000, "EUR")
    raw = receiver.for_payment(req.payout_id)[0].json
    if connector_name == "card":
        assert raw["type"] == "payout.paid"
    else:  # the e-wallet's own wire format
        assert (raw["eventType"], raw["resource"]["status"], raw["resource"]["kind"]) == (
            "PAYOUT_STATUS", "SUCCEEDED", "PAYOUT",
        )
    assert (await connector.get_payout(req.payout_id)).status == "paid"
    [delivery] = await eventually(lambda: _delivered_log(http, sandbox, req.payout_id))
    assert (delivery["type"], delivery["outcome"]) == ("payout.paid", "delivered")


@pytest.mark.parametrize("connector_name", ["card", "ewallet"])
async def test_decline_is_a_hard_decline_and_the_payout_is_stored_failed(
    connector_name: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[connector_name]
    req = payout_request("decline", method=connector_name)

    with pytest.raises(PspDeclined) as declined:
        await connector.create_payout(req)

    assert declined.value.code == "payout_declined"
    payout = await connector.get_payout(req.payout_id)
    assert (payout.status, payout.failure_code) == ("failed", "payout_declined")
    with pytest.raises(PspDeclined):  # a retried create gets the same answer, not a second payout
        await connector.create_payout(req)
    await stays(lambda: not receiver.for_payment(req.payout_id))


async def test_fail_is_accepted_then_fails_with_a_webhook(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payout_request("fail")

    created = await card.create_payout(req)

    assert created.status == "pending"
    await wait_for_webhooks(receiver, req.payout_id)
    [event] = verified(card, receiver, req.payout_id)
    assert (event.status, event.failure_code, event.amount_minor) == ("failed", "beneficiary_rejected", 5000)
    assert receiver.for_payment(req.payout_id)[0].json["type"] == "payout.failed"
    payout = await card.get_payout(req.payout_id)
    assert (payout.status, payout.failure_code) == ("failed", "beneficiary_rejected")


async def test_no_webhook_pays_silently_and_status_lookup_knows(
    card: SandboxConnector, receiver: WebhookReceiver, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = payout_request("no_webhook")
    await card.create_payout(req)

    assert await eventually(lambda: _status_is(card, req.payout_id, "paid"))

    await stays(lambda: not receiver.for_payment(req.payout_id))
    assert await deliveries(http, sandbox, req.payout_id) == []


async def test_lost_stays_pending_without_webhook(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payout_request("lost")
    await card.create_payout(req)

    await stays(lambda: not receiver.for_payment(req.payout_id))

    assert (await card.get_payout(req.payout_id)).status == "pending"


async def test_duplicate_webhook_delivers_the_same_event_twice(
    card: SandboxConnector, receiver: WebhookReceiver
) -> None:
    req = payout_request("duplicate_webhook")
    await card.create_payout(req)

    await wait_for_webhooks(receiver, req.payout_id, count=2)

    first, second = receiver.for_payment(req.payout_id)
    assert first.body == second.body
    events = verified(card, receiver, req.payout_id)
    assert events[0] == events[1] and events[0].status == "paid"


async def test_out_of_order_sends_a_late_pending_after_paid(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payout_request("out_of_order")
    await card.create_payout(req)

    await wait_for_webhooks(receiver, req.payout_id, count=2)

    paid, pending = verified(card, receiver, req.payout_id)
    assert (paid.status, pending.status) == ("paid", "pending")
    assert [r.json["type"] for r in receiver.for_payment(req.payout_id)] == ["payout.paid", "payout.pending"]
    assert paid.event_id != pending.event_id
    assert datetime.fromisoformat(pending.occurred_at) < datetime.fromisoformat(paid.occurred_at)
    assert (await card.get_payout(req.payout_id)).status == "paid"


async def test_wrong_amount_pays_one_unit_more(ewallet: EwalletConnector, receiver: WebhookReceiver) -> None:
    req = payout_request("wrong_amount", method="ewallet")
    created = await ewallet.create_payout(req)
    assert created.amount_minor == 5000

    await wait_for_webhooks(receiver, req.payout_id)

    [event] = verified(ewallet, receiver, req.payout_id)
    assert (event.status, event.amount_minor) == ("paid", 5100)
    assert receiver.for_payment(req.payout_id)[0].json["resource"]["amount"] == {"value": "51.00", "currency": "EUR"}
    assert (await ewallet.get_payout(req.payout_id)).amount_minor == 5100


async def test_flaky_answers_503_twice_then_creates(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payout_request("flaky")

    for _ in range(2):
        with pytest.raises(PspTransientError) as unavailable:
            await card.create_payout(req)
        assert unavailable.value.code == "psp_unavailable"
    created = await card.create_payout(req)

    assert created.status == "pending"
    await wait_for_webhooks(receiver, req.payout_id)
    assert [e.status for e in verified(card, receiver, req.payout_id)] == ["paid"]
    assert (await card.create_payout(req)).psp_reference == created.psp_reference


async def test_slow_answers_after_slow_seconds_then_pays(
    card: SandboxConnector, receiver: WebhookReceiver, sandbox: RunningSandbox
) -> None:
    req = payout_request("slow")

    started = time.monotonic()
    created = await card.create_payout(req)

    assert time.monotonic() - started >= sandbox.config.slow_seconds
    assert created.status == "pending"
    await wait_for_webhooks(receiver, req.payout_id)
    assert [e.status for e in verified(card, receiver, req.payout_id)] == ["paid"]


@pytest.mark.parametrize("scenario", ["explode", "challenge", "3ds_fail"])
async def test_unknown_payout_scenario_is_rejected(scenario: str, card: SandboxConnector) -> None:
    with pytest.raises(PspRequestRejected) as rejected:
        await card.create_payout(payout_request(scenario))
    assert rejected.value.code == "unknown_scenario"


async def test_get_unknown_payout_is_not_found(card: SandboxConnector) -> None:
    with pytest.raises(PspNotFound) as not_found:
        await card.get_payout("po_never_created")
    assert not_found.value.code == "payout_not_found"


# -- idempotency ----------------------------------------------------------------------------------


async def test_retried_create_returns_the_first_payout(card: SandboxConnector, receiver: WebhookReceiver) -> None:
    req = payout_request()

    first = await card.create_payout(req)
    second = await card.create_payout(req)

    assert second.psp_reference == first.psp_reference
    await wait_for_webhooks(receiver, req.payout_id)
    await stays(lambda: len(receiver.for_payment(req.payout_id)) == 1, duration=0.2)


async def test_concurrent_slow_creates_with_one_key_make_one_payout(card: SandboxConnector) -> None:
    req = payout_request("slow")

    first, second = await asyncio.gather(card.create_payout(req), card.create_payout(req))

    assert first.psp_reference == second.psp_reference


async def test_idempotency_key_reused_with_another_body_is_422(
    http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    headers = {"Idempotency-Key": "payout-key-reuse-1"}
    url = f"{sandbox.url}/card/v1/payouts"
    assert (await http.post(url, json=payout_body("po_reuse_1"), headers=headers)).status_code == 201

    response = await http.post(url, json=payout_body("po_reuse_1", amount="60.00"), headers=headers)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"


async def test_same_merchant_reference_under_another_key_is_a_conflict(
    card: SandboxConnector, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = payout_request("lost")
    await card.create_payout(req)

    response = await http.post(
        f"{sandbox.url}/card/v1/payouts", json=payout_body(req.payout_id), headers={"Idempotency-Key": "other"}
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_merchant_reference"


async def test_payouts_and_payments_keep_separate_idempotency_keys(
    http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    headers = {"Idempotency-Key": "shared-key-1"}
    payment_body = payout_body("ref_shared_1") | {"return_url": "https://casino.example/return"}
    payment = await http.post(f"{sandbox.url}/card/v1/payments", json=payment_body, headers=headers)

    payout = await http.post(f"{sandbox.url}/card/v1/payouts", json=payout_body("ref_shared_1"), headers=headers)

    assert (payment.status_code, payout.status_code) == (201, 201)
    assert payout.json()["reference"] != payment.json()["reference"]


# -- control modes and validation -----------------------------------------------------------------


@pytest.mark.parametrize(("mode", "code"), [("down", "psp_unavailable"), ("error", "psp_internal_error")])
async def test_down_and_error_modes_fail_payouts_transiently(
    mode: str,
    code: str,
    card: SandboxConnector,
    ewallet: EwalletConnector,
    http: httpx.AsyncClient,
    sandbox: RunningSandbox,
) -> None:
    existing = payout_request("lost")
    await card.create_payout(existing)

    async with psp_mode(http, sandbox, "card", mode):
        with pytest.raises(PspTransientError) as failed:
            await card.create_payout(payout_request())
        assert failed.value.code == code
        with pytest.raises(PspTransientError):
            await card.get_payout(existing.payout_id)
        # Only that PSP is affected.
        assert (await ewallet.create_payout(payout_request("lost", method="ewallet"))).status == "pending"

    assert (await card.get_payout(existing.payout_id)).status == "pending"


async def test_slow_mode_delays_payouts(card: SandboxConnector, http: httpx.AsyncClient, sandbox: RunningSandbox) -> None:
    async with psp_mode(http, sandbox, "card", "slow"):
        started = time.monotonic()
        created = await card.create_payout(payout_request("lost"))
        assert time.monotonic() - started >= sandbox.config.slow_seconds
        assert created.status == "pending"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"amount": "50.001"}, "amount_precision"),
        ({"currency": "XXX"}, "unsupported_currency"),
        ({"method": "ewallet"}, "unsupported_method"),
        ({"return_url": "https://casino.example/return"}, "invalid_request"),  # payments only
        ({"iban": "DE89370400440532013000"}, "invalid_request"),
        ({"metadata": {"sandbox_scenario": "explode"}}, "unknown_scenario"),
    ],
)
async def test_bad_payout_bodies_are_422(
    overrides: dict[str, object], code: str, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    response = await http.post(f"{sandbox.url}/card/v1/payouts", json=payout_body("po_invalid", **overrides))

    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


async def test_a_payment_reference_is_not_a_payout(card: SandboxConnector) -> None:
    req = payment_request("lost")
    await card.create_payment(req)

    with pytest.raises(PspNotFound):
        await card.get_payout(req.payment_id)


async def test_payout_webhook_is_retried_until_2xx(
    card: SandboxConnector, receiver: WebhookReceiver, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = payout_request()
    receiver.fail_first[req.payout_id] = 1
    await card.create_payout(req)

    log = await eventually(lambda: _delivered_log(http, sandbox, req.payout_id))

    assert receiver.for_payment(req.payout_id)
    assert [(d["type"], d["status_code"], d["outcome"]) for d in log] == [
        ("payout.paid", 500, "retrying"), ("payout.paid", 200, "delivered"),
    ]
