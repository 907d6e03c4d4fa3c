"""The webhook endpoint: only verified events count, each is stored once, unknown payments become dead letters."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import sqlalchemy as sa

from api.app import create_app
from psp.inbox import webhook_events
from psp.signatures import signed_headers
from tests.e2e.conftest import WEBHOOK_SECRET, Stack, eventually, free_port, new_player, serve


def captured_event(payment_id: str, psp_reference: str, amount: str = "50.00", **overrides: Any) -> bytes:
    event = {
        "event_id": f"evt_{uuid.uuid4().hex}", "type": "payment.captured", "merchant_reference": payment_id,
        "reference": psp_reference, "status": "captured", "amount": amount, "currency": "EUR",
        "occurred_at": "2026-11-21T10:00:00Z", **overrides,
    }
    return json.dumps(event).encode()


async def post_webhook(stack: Stack, body: bytes, *, psp: str = "card", timestamp: int | None = None,
                       secret: str = WEBHOOK_SECRET, headers: dict[str, str] | None = None):
    sent_headers = headers if headers is not None else signed_headers(secret, timestamp or int(time.time()), body)
    return await stack.api.post(f"/v1/webhooks/{psp}", content=body, headers=sent_headers)


async def waiting_payment(stack: Stack, player: str) -> tuple[str, str]:
    """A card payment waiting on a 3DS challenge that nobody completes: only a forged webhook could settle it."""
    init = await stack.deposit(method="card", scenario="challenge", player_id=player)
    at_psp = (await stack.sandbox.get(f"/card/v1/payments/{init['payment_id']}")).json()
    return init["payment_id"], at_psp["reference"]


async def stored_events(stack: Stack, payment_id: str) -> list:
    async with stack.engine.connect() as conn:
        query = sa.select(webhook_events).where(webhook_events.c.payment_id == payment_id)
        return (await conn.execute(query)).all()


async def test_twenty_concurrent_copies_credit_exactly_once(stack: Stack) -> None:
    player = new_player()
    payment_id, reference = await waiting_payment(stack, player)
    body = captured_event(payment_id, reference)
    responses = await asyncio.gather(*[post_webhook(stack, body) for _ in range(20)])
    # One is handled; copies that arrive meanwhile are told to come back (503), later ones are duplicates.
    answers = [r.json()["status"] if r.status_code == 200 else r.json()["code"] for r in responses]
    assert answers.count("accepted") == 1, answers
    assert set(answers) <= {"accepted", "duplicate", "webhook_in_progress"}, answers
    assert all("Retry-After" in r.headers for r in responses if r.status_code == 503)
    assert (await stack.wait_final(payment_id))["status"] == "credited"
    assert len(await stored_events(stack, payment_id)) == 1
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_refused_webhooks_change_nothing(stack: Stack) -> None:
    player = new_player()
    payment_id, reference = await waiting_payment(stack, player)
    body = captured_event(payment_id, reference)
    now = int(time.time())
    cases = {
        "bad_signature": await post_webhook(stack, body, secret="whsec_wrong"),
        # Well past the 300 s tolerance: the server's clock has moved on by the time it checks (the exact
        # boundary is tested in tests/psp with an injected clock).
        "stale_timestamp": await post_webhook(stack, body, timestamp=now - 330),
        "future_timestamp": await post_webhook(stack, body, timestamp=now + 330),
        "missing_signature": await post_webhook(stack, body, headers={"Content-Type": "application/json"}),
        "tampered_body": await stack.api.post(
            "/v1/webhooks/card", content=body.replace(b"50.00", b"5000.00"), headers=signed_headers(
                WEBHOOK_SECRET, now, body)),
        "malformed_json": await post_webhook(stack, b"{not json"),
        "unknown_psp": await post_webhook(stack, body, psp="nopsp"),
    }
    expected = {"bad_signature": 401, "stale_timestamp": 401, "future_timestamp": 401, "missing_signature": 401,
                "tampered_body": 401, "malformed_json": 400, "unknown_psp": 404}
    for name, response in cases.items():
        assert response.status_code == expected[name], (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["trace_id"]
    assert await stored_events(stack, payment_id) == []
    assert (await stack.payment(payment_id))["status"] == "requires_action"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_oversized_webhook_is_refused(stack: Stack) -> None:
    body = b'{"padding": "' + b"x" * 70_000 + b'"}'
    response = await post_webhook(stack, body)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


async def test_webhook_for_an_unknown_payment_is_kept_as_a_dead_letter(stack: Stack) -> None:
    unknown = f"pay_{uuid.uuid4().hex[:24]}"
    response = await post_webhook(stack, captured_event(unknown, "card_nothing"))
    assert response.status_code == 200 and response.json()["status"] == "dead_letter"
    rows = await stored_events(stack, unknown)
    assert [(r.state, r.dead_letter_reason) for r in rows] == [("dead_letter", "unknown_payment")]
    # Redelivery of a dead letter for an unknown payment is a duplicate: nothing changes.
    again = await post_webhook(stack, captured_event(unknown, "card_nothing", event_id=rows[0].event_id))
    assert again.json()["status"] == "duplicate"
    await stack.check_invariants()


async def test_forged_reference_never_credits(stack: Stack) -> None:
    player = new_player()
    payment_id, _reference = await waiting_payment(stack, player)
    response = await post_webhook(stack, captured_event(payment_id, "card_someone_elses"))
    assert response.status_code == 200
    payment = await stack.wait_final(payment_id)
    assert payment["status"] == "in_review" and payment["review_reason"] == "reference_mismatch"
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_wrong_currency_is_not_credited_and_raises_an_alert(stack: Stack) -> None:
    player = new_player()
    payment_id, reference = await waiting_payment(stack, player)
    response = await post_webhook(stack, captured_event(payment_id, reference, currency="USD"))
    assert response.status_code == 200
    payment = await stack.wait_final(payment_id)
    assert payment["status"] == "in_review" and payment["review_reason"] == "currency_mismatch"
    assert await stack.balance(player) == "0.00"
    await eventually(lambda: stack.worker_metric("payloop_alerts_total", kind="deposit.currency_mismatch"),
                     lambda count: count >= 1, timeout=10)
    await stack.check_invariants()


async def test_every_delivery_is_logged_and_ops_can_read_the_log(stack: Stack) -> None:
    player = new_player()
    payment_id, reference = await waiting_payment(stack, player)
    body = captured_event(payment_id, reference)
    for _ in range(2):
        assert (await post_webhook(stack, body)).status_code == 200
    await stack.wait_final(payment_id)
    [stored] = [e for e in (await stack.api.get("/v1/ops/webhooks", params={"state": "signalled"})).json()
                if e["payment_id"] == payment_id]
    detail = (await stack.api.get(f"/v1/ops/webhooks/{stored['id']}")).json()
    assert [d["outcome"] for d in detail["deliveries"]] == ["verified", "signalled", "duplicate"]
    assert (await stack.api.get("/v1/ops/webhooks/999999999")).status_code == 404
    await stack.check_invariants()


async def test_a_dead_letter_is_replayed_once_its_payment_can_take_it(stack: Stack) -> None:
    """A verified event that could not be signalled (Temporal was unavailable) waits as a dead letter; ops'
    replay delivers it, and the payment is credited exactly once."""
    player = new_player()
    payment_id, reference = await waiting_payment(stack, player)
    event_id = f"evt_{uuid.uuid4().hex}"
    async with stack.engine.begin() as conn:  # what the inbox keeps when the signal fails
        await conn.execute(webhook_events.insert().values(
            psp="card", event_id=event_id, payment_id=payment_id, psp_reference=reference, status="captured",
            amount_minor=5000, currency="EUR", state="dead_letter", dead_letter_reason="signal_failed",
            received_at=datetime.now(timezone.utc), updated_at=datetime.now(timezone.utc)))
    dead = [e for e in (await stack.api.get("/v1/ops/webhooks")).json() if e["event_id"] == event_id]
    assert len(dead) == 1
    replayed = await stack.api.post(f"/v1/ops/webhooks/{dead[0]['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["state"] == "signalled"
    assert (await stack.wait_final(payment_id))["status"] == "credited"
    again = await stack.api.post(f"/v1/ops/webhooks/{dead[0]['id']}/replay")
    assert again.status_code == 409 and again.json()["code"] == "not_a_dead_letter"
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_replaying_a_dead_letter_whose_payment_is_unknown_is_a_409(stack: Stack) -> None:
    unknown = f"pay_{uuid.uuid4().hex[:24]}"
    await post_webhook(stack, captured_event(unknown, "card_nothing"))
    [dead] = [e for e in (await stack.api.get("/v1/ops/webhooks")).json() if e["payment_id"] == unknown]
    response = await stack.api.post(f"/v1/ops/webhooks/{dead['id']}/replay")
    assert response.status_code == 409 and response.json()["code"] == "replay_not_delivered"
    await stack.check_invariants()


async def test_an_unverified_webhook_makes_the_payment_ask_its_psp(stack: Stack) -> None:
    """Never trusted, but a hint: the workflow looks the payment up at the PSP at once instead of waiting."""
    player = new_player()
    init = await stack.deposit(method="card", scenario="no_webhook", player_id=player)
    await eventually(lambda: stack.sandbox.get(f"/card/v1/payments/{init['payment_id']}"),
                     lambda r: r.json()["status"] == "captured")  # settled at the PSP, which tells nobody
    forged = captured_event(init["payment_id"], "whatever", amount="5000.00")
    for _ in range(5):  # a flood of unsigned webhooks causes one re-check, not five
        assert (await post_webhook(stack, forged, secret="whsec_attacker")).status_code == 401
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    history = await stack.client.get_workflow_handle(f"deposit-{init['payment_id']}").fetch_history()
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events
               if e.HasField("workflow_execution_signaled_event_attributes")]
    assert signals.count("status_recheck") == 1
    timers_fired = [e for e in history.events if e.HasField("timer_fired_event_attributes")]
    assert timers_fired == [], "credited by the recheck, before the webhook timeout"
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_a_copy_that_arrives_while_its_event_is_stuck_mid_delivery_is_told_to_come_back(stack: Stack) -> None:
    """The first delivery stored the event and died before signalling (a crash, the database gone): the PSP's
    redelivery must not be answered "duplicate", or the event would stay unsignalled for good."""
    player = new_player()
    payment_id, reference = await waiting_payment(stack, player)
    body = captured_event(payment_id, reference)
    event_id = json.loads(body)["event_id"]
    async with stack.engine.begin() as conn:  # what a delivery that died after storing leaves behind
        await conn.execute(webhook_events.insert().values(
            psp="card", event_id=event_id, payment_id=payment_id, psp_reference=reference, status="captured",
            amount_minor=5000, currency="EUR", state="received", received_at=datetime.now(timezone.utc),
            updated_at=datetime.now(timezone.utc)))
    again = await post_webhook(stack, body)
    assert again.status_code == 503 and again.json()["code"] == "webhook_in_progress", again.text
    assert int(again.headers["Retry-After"]) >= 1
    async with stack.engine.begin() as conn:  # the PSP comes back after Retry-After: the stuck delivery is old
        await conn.execute(sa.update(webhook_events).where(webhook_events.c.event_id == event_id)
                           .values(updated_at=datetime.now(timezone.utc) - timedelta(seconds=60)))
    healed = await post_webhook(stack, body)
    assert healed.status_code == 200 and healed.json()["status"] == "accepted", healed.text
    assert (await stack.wait_final(payment_id))["status"] == "credited"
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()


async def test_during_a_secret_rotation_both_secrets_verify_and_nothing_else_does(stack: Stack) -> None:
    """`PAYLOOP_WEBHOOK_SECRET_CARD="new,old"`: an API rotated to a new card secret still takes card's webhooks
    signed with the old one (the PSP has not switched yet) and those signed with the new one, over real HTTP. The
    other PSPs keep their own: card_b's secret never verifies at card, nor card's (old or new) at card_b."""
    rotated = stack.settings.model_copy(update={"webhook_secret_card": f"whsec_rotated,{WEBHOOK_SECRET}",
                                                "api_port": free_port()})
    async with (
        serve(create_app(rotated, engine=stack.engine, temporal=stack.client), rotated.api_port),
        httpx.AsyncClient(base_url=rotated.api_url, timeout=30) as api,
    ):
        async def deliver(body: bytes, secret: str) -> httpx.Response:
            return await api.post("/v1/webhooks/card", content=body,
                                  headers=signed_headers(secret, int(time.time()), body))

        for secret in (WEBHOOK_SECRET, "whsec_rotated"):
            player = new_player()
            payment_id, reference = await waiting_payment(stack, player)
            assert (await deliver(captured_event(payment_id, reference), "whsec_attacker")).status_code == 401
            card_b_secret = rotated.webhook_secret_card_b  # another PSP's: refused, and said to be another's
            wrong_psp = await deliver(captured_event(payment_id, reference), card_b_secret)
            assert (wrong_psp.status_code, wrong_psp.json()["code"]) == (401, "wrong_psp")
            body = captured_event(payment_id, reference)
            refused = await api.post("/v1/webhooks/card_b", content=body,
                                     headers=signed_headers(secret, int(time.time()), body))
            assert (refused.status_code, refused.json()["code"]) == (401, "wrong_psp")
            accepted = await deliver(captured_event(payment_id, reference), secret)
            assert accepted.status_code == 200 and accepted.json()["status"] == "accepted", accepted.text
            assert (await stack.wait_final(payment_id))["status"] == "credited"
            assert await stack.balance(player) == "50.00"
    await stack.check_invariants()
