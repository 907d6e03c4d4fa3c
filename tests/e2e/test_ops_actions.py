"""The ops corrections on a real stack (SQLite and PostgreSQL): re-sync with the PSP, send a deferred payout now,
bulk replay of dead letters, forced circuits, method switches — each audited with the incident it names.

A stack of its own: its deposits and payouts wait long for webhooks and its payouts defer long while their PSP is
down, so an outcome within seconds is the correction's doing; and its forced circuits and switched-off methods
cannot leak into other tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment

from api.models import idempotency_keys
from incidents.models import incident_payments, incidents
from incidents.store import new_incident_id
from players.audit import audit_log
from psp.inbox import webhook_events
from psp.routing.health import psp_attempts
from tests.conftest import BACKENDS
from tests.e2e.conftest import OTHER_CLIENT_KEY, Stack, eventually, metric_value, new_player, running_stack
from tests.e2e.test_payouts import assert_settled, funded_player, get_payout, payout, wait_payout
from tests.e2e.test_webhooks import captured_event, post_webhook, waiting_payment

# Far beyond any wait below: only the correction can end these waits in time.
LONG_WAIT_SECONDS = 300.0


@pytest.fixture(scope="module", params=BACKENDS)
async def ops_stack(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    backend = request.param
    async with running_stack(backend, temporal_env.client, tmp_path_factory.mktemp(f"ops-actions-{backend}"),
                             f"payloop-ops-actions-{backend}", deposit_webhook_timeout_seconds=LONG_WAIT_SECONDS,
                             payout_webhook_timeout_seconds=LONG_WAIT_SECONDS,
                             payout_psp_down_first_retry_seconds=LONG_WAIT_SECONDS,
                             payout_psp_down_deadline_seconds=4 * LONG_WAIT_SECONDS) as stack:
        yield stack


async def incident(stack: Stack, payout_ids: tuple[str, ...] = ()) -> str:
    """An incident the corrections can name (one that exists: an unknown id is refused), resolved so the monitor's
    passes leave it alone; about `payout_ids`."""
    incident_id, now = new_incident_id(), datetime.now(timezone.utc)
    async with stack.engine.begin() as conn:
        await conn.execute(incidents.insert().values(
            incident_id=incident_id, incident_class="delayed_withdrawals", scope=f"psp=test-{incident_id}",
            state="resolved", opened_at=now, updated_at=now, resolved_at=now, resolved_by="test", first_seen_at=None,
            diagnosis="made by the test", figures_at_open={}, figures_now={}))
        for payout_id in payout_ids:
            await conn.execute(incident_payments.insert().values(incident_id=incident_id, kind="payout",
                                                                 object_id=payout_id))
    return incident_id


async def audit_entries(stack: Stack, incident_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(sa.select(audit_log).where(audit_log.c.incident_id == incident_id)
                                  .order_by(audit_log.c.id))
        return [(row.action, row.subject, row.details) for row in rows]


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text


async def test_resync_makes_a_deposit_whose_webhook_never_comes_ask_its_psp(ops_stack: Stack) -> None:
    stack = ops_stack
    inc = await incident(stack)
    player = new_player()
    init = await stack.deposit(method="card", scenario="no_webhook", player_id=player)
    payment_id = init["payment_id"]
    await eventually(lambda: stack.sandbox.get(f"/card/v1/payments/{payment_id}"),
                     lambda r: r.json()["status"] == "captured")  # settled at the PSP, which tells nobody
    waiting = await stack.payment(payment_id)
    assert waiting["status"] in {"pending", "authorized"}

    response = await stack.api.post(f"/v1/ops/payments/{payment_id}/resync", json={"incident_id": inc})
    assert response.status_code == 202, response.text
    assert response.json()["payment_id"] == payment_id
    credited = await stack.wait_final(payment_id, timeout=20)  # the webhook wait alone would take 300 s
    assert credited["status"] == "credited"
    assert await stack.balance(player) == "50.00"
    assert await audit_entries(stack, inc) == [
        ("payment.resync", f"payment:{payment_id}", {"status": waiting["status"], "psp": "card"})]

    assert_problem(await stack.api.post(f"/v1/ops/payments/{payment_id}/resync"), 409, "already_final")
    assert_problem(await stack.api.post(f"/v1/ops/payments/pay_{'0' * 24}/resync"), 404, "payment_not_found")
    assert_problem(await stack.api.post("/v1/ops/payments/nope/resync"), 404, "payment_not_found")
    await stack.check_invariants()


async def test_resync_makes_a_payout_whose_webhook_never_comes_ask_its_psp(ops_stack: Stack) -> None:
    stack = ops_stack
    inc = await incident(stack)
    player = await funded_player(stack, method="card")  # paid back closed loop, at card
    started = await payout(stack, player, scenario="no_webhook")
    payout_id = started["payout_id"]
    await wait_payout(stack, payout_id, {"processing"})
    await eventually(lambda: stack.sandbox.get(f"/card/v1/payouts/{payout_id}"),
                     lambda r: r.status_code == 200 and r.json()["status"] == "paid")
    response = await stack.api.post(f"/v1/ops/payouts/{payout_id}/resync", json={"incident_id": inc})
    assert response.status_code == 202, response.text
    done = await wait_payout(stack, payout_id, timeout=20)
    assert done["status"] == "paid"
    await assert_settled(stack, done)
    assert [entry[:2] for entry in await audit_entries(stack, inc)] == [("payout.resync", f"payout:{payout_id}")]
    assert_problem(await stack.api.post(f"/v1/ops/payouts/{payout_id}/resync"), 409, "already_final")
    assert_problem(await stack.api.post(f"/v1/ops/payouts/po_{'0' * 24}/resync"), 404, "payout_not_found")


async def test_send_now_sends_a_deferred_payout_once_its_psp_is_back(ops_stack: Stack) -> None:
    stack = ops_stack
    inc = await incident(stack)
    player = await funded_player(stack)
    await stack.psp_mode("ewallet", "down")
    try:
        started = await payout(stack, player)
        payout_id = started["payout_id"]
        deferred = await eventually(lambda: get_payout(stack, payout_id),
                                    lambda p: p["deferred_until"] is not None, timeout=30)
        assert (deferred["status"], deferred["hold"]) == ("processing", "held")
    finally:
        await stack.psp_mode("ewallet", "up")
    # An incident about it shows it as its workflow does (the payouts table has it only at its end): deferred.
    about = await incident(stack, (payout_id,))
    [shown] = (await stack.api.get(f"/v1/ops/incidents/{about}")).json()["affected"]
    assert (shown["status"], shown["final"], shown["deferred_until"]) == ("processing", False,
                                                                          deferred["deferred_until"])
    response = await stack.api.post(f"/v1/ops/payouts/{payout_id}/send-now", json={"incident_id": inc})
    assert response.status_code == 202, response.text
    assert response.json()["deferred_until"] == deferred["deferred_until"]
    done = await wait_payout(stack, payout_id, timeout=20)  # the deferral itself lasts 300 s
    assert (done["status"], done["deferred_until"]) == ("paid", None)
    await assert_settled(stack, done)
    assert await audit_entries(stack, inc) == [
        ("payout.send_now", f"payout:{payout_id}", {"deferred_until": deferred["deferred_until"], "psp": "ewallet"})]
    assert_problem(await stack.api.post(f"/v1/ops/payouts/{payout_id}/send-now"), 409, "not_deferred")
    assert_problem(await stack.api.post(f"/v1/ops/payouts/po_{'0' * 24}/send-now"), 404, "payout_not_found")
    await stack.check_invariants()


async def test_send_now_and_resync_refuse_a_payout_waiting_for_kyc(ops_stack: Stack) -> None:
    stack = ops_stack
    inc = await incident(stack)
    player = await funded_player(stack, kyc=None)
    started = await payout(stack, player)
    await wait_payout(stack, started["payout_id"], {"kyc_required"})
    assert_problem(await stack.api.post(f"/v1/ops/payouts/{started['payout_id']}/send-now"), 409, "not_deferred")
    # Nor is a re-sync of use: it waits for the player's KYC, not for its PSP (and nothing is audited).
    refused = await stack.api.post(f"/v1/ops/payouts/{started['payout_id']}/resync", json={"incident_id": inc})
    assert_problem(refused, 409, "not_at_psp")
    assert refused.json()["current_status"] == "kyc_required"
    assert await audit_entries(stack, inc) == []
    await stack.client.get_workflow_handle(f"withdrawal-{started['payout_id']}").cancel()
    await wait_payout(stack, started["payout_id"], {"cancelled"})


async def dead_letter(stack: Stack, payment_id: str, reference: str) -> int:
    """What the inbox keeps when the signal failed (Temporal unavailable): a verified event, not yet delivered."""
    now = datetime.now(timezone.utc)
    async with stack.engine.begin() as conn:
        result = await conn.execute(webhook_events.insert().values(
            psp="card", event_id=f"evt_{uuid.uuid4().hex}", payment_id=payment_id, psp_reference=reference,
            status="captured", amount_minor=5000, currency="EUR", state="dead_letter",
            dead_letter_reason="signal_failed", received_at=now, updated_at=now))
        return result.inserted_primary_key[0]


async def test_bulk_replay_delivers_the_dead_letters_it_can_and_says_why_not_the_others(ops_stack: Stack) -> None:
    stack = ops_stack
    inc = await incident(stack)
    since = datetime.now(timezone.utc).isoformat()
    players = [new_player(), new_player()]
    waiting = [await waiting_payment(stack, player) for player in players]
    deliverable = [await dead_letter(stack, payment_id, reference) for payment_id, reference in waiting]
    unknown = f"pay_{uuid.uuid4().hex[:24]}"
    assert (await post_webhook(stack, captured_event(unknown, "card_nothing"))).json()["status"] == "dead_letter"
    [unknown_row] = [e["id"] for e in (await stack.api.get("/v1/ops/webhooks")).json() if e["payment_id"] == unknown]

    response = await stack.api.post("/v1/ops/webhooks/replay",
                                    json={"psp": "card", "from": since, "limit": 500, "incident_id": inc})
    assert response.status_code == 200, response.text
    assert response.json() == {"replayed": deliverable, "failed": [{"id": unknown_row, "code": "unknown_payment"}]}
    for (payment_id, _reference), player in zip(waiting, players):
        assert (await stack.wait_final(payment_id))["status"] == "credited"
        assert await stack.balance(player) == "50.00"
    entries = await audit_entries(stack, inc)
    assert [(action, subject) for action, subject, _ in entries] == [
        ("webhook.replay", f"webhook:{row}") for row in [*deliverable, unknown_row]]
    assert entries[-1][2] == {"outcome": "dead_letter", "reason": "unknown_payment", "bulk": True}

    # Replayed ones are no longer dead letters; the unknown one is tried again and stays.
    again = await stack.api.post("/v1/ops/webhooks/replay", json={"psp": "card", "from": since})
    assert again.json() == {"replayed": [], "failed": [{"id": unknown_row, "code": "unknown_payment"}]}
    assert (await stack.api.post("/v1/ops/webhooks/replay", json={"psp": "ewallet", "from": since})).json() == {
        "replayed": [], "failed": []}
    for body in ({"limit": 501}, {"limit": 0}, {"from": "2026-12-05"}, {"from": since, "to": since},
                 {"psp": "Card!"}, {"incident_id": "INC-1"}, {"status": "dead_letter"}):
        assert_problem(await stack.api.post("/v1/ops/webhooks/replay", json=body), 422, "validation_error")
    await stack.check_invariants()


async def card_attempts(stack: Stack) -> int:
    async with stack.engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(psp_attempts)
                                   .where(psp_attempts.c.psp == "card"))).scalar_one()


async def card_health(stack: Stack) -> dict[str, Any]:
    [card] = [p for p in (await stack.api.get("/v1/ops/psp-health")).json()["psps"] if p["psp"] == "card"]
    return card


async def test_a_forced_circuit_holds_until_auto(ops_stack: Stack) -> None:
    stack = ops_stack
    inc = await incident(stack)
    await stack.psp_mode("card", "up")
    try:
        forced = await stack.api.post("/v1/ops/psps/card/circuit", json={"state": "open", "incident_id": inc})
        assert forced.status_code == 200, forced.text
        assert (forced.json()["circuit"], forced.json()["forced"], forced.json()["available"]) == ("open", "open",
                                                                                                   False)
        assert metric_value((await stack.api.get("/metrics")).text, "payloop_psp_circuit_state", psp="card",
                            state="open") == 1
        # Forced open, card (the cheaper acquirer, first by fee) gets no traffic: card_b takes every deposit.
        calls_before = await card_attempts(stack)
        for _ in range(2):
            init = await stack.deposit(method="card")
            done = await stack.wait_final(init["payment_id"])
            assert (done["status"], done["psp"]) == ("credited", "card_b")
        assert await card_attempts(stack) == calls_before

        # Forced closed, card's failures never open it (its breaker opens after 3 failures in 60 s).
        closed = await stack.api.post("/v1/ops/psps/card/circuit", json={"state": "closed", "incident_id": inc})
        assert (closed.json()["circuit"], closed.json()["forced"]) == ("closed", "closed")
        await stack.sandbox.post("/control/card", json={"mode": "down"})
        init = await stack.deposit(method="card")
        assert (await stack.wait_final(init["payment_id"]))["psp"] == "card_b"  # failed over, try by try
        health = await card_health(stack)
        assert health["samples"] >= 3 and health["error_rate"] == "1.0000"
        assert (health["circuit"], health["forced"], health["available"]) == ("closed", "closed", True)

        # Auto: the breaker again, from closed with a fresh window; card still down, so it opens.
        auto = await stack.api.post("/v1/ops/psps/card/circuit", json={"state": "auto", "incident_id": inc})
        assert (auto.json()["circuit"], auto.json()["forced"], auto.json()["samples"]) == ("closed", None, 0)
        init = await stack.deposit(method="card")
        assert (await stack.wait_final(init["payment_id"]))["psp"] == "card_b"
        assert (await card_health(stack))["circuit"] in ("open", "half_open")
    finally:
        await stack.api.post("/v1/ops/psps/card/circuit", json={"state": "auto"})
        await stack.psp_mode("card", "up")
    assert [(action, subject, details["state"]) for action, subject, details in await audit_entries(stack, inc)] == [
        ("psp.circuit.force", "psp:card", state) for state in ("open", "closed", "auto")]
    assert_problem(await stack.api.post("/v1/ops/psps/nopsp/circuit", json={"state": "open"}), 404, "unknown_psp")
    # An incident id of the monitor's shape that names no incident: refused, nothing forced nor audited.
    unknown = new_incident_id()
    refused = await stack.api.post("/v1/ops/psps/card/circuit", json={"state": "open", "incident_id": unknown})
    assert_problem(refused, 422, "unknown_incident")
    assert refused.json()["errors"][0]["field"] == "incident_id"
    assert (await card_health(stack))["forced"] is None and await audit_entries(stack, unknown) == []
    assert_problem(await stack.api.post(f"/v1/ops/payouts/po_{'0' * 24}/resync", json={"incident_id": unknown}),
                   404, "payout_not_found")
    assert_problem(await stack.api.post("/v1/ops/webhooks/replay", json={"incident_id": unknown}), 422,
                   "unknown_incident")
    # A review decision taken for an incident names a real one too (before the workflow is asked anything).
    review = {"decision": "reject", "reviewer": "jane.doe", "incident_id": unknown}
    assert_problem(await stack.api.post(f"/v1/ops/payments/pay_{'0' * 24}/review", json=review), 422,
                   "unknown_incident")
    for body in ({"state": "half_open"}, {}, {"state": "open", "incident_id": "inc_"},
                 {"state": "open", "incident_id": "inc_01jf3k2m9x"}):  # not an id the monitor makes
        assert_problem(await stack.api.post("/v1/ops/psps/card/circuit", json=body), 422, "validation_error")
    await stack.check_invariants()


async def listed_methods(stack: Stack) -> list[str]:
    response = await stack.api.get("/v1/payment-methods", params={"currency": "EUR", "amount": "10.00"})
    assert response.status_code == 200, response.text
    return [m["method"] for m in response.json()["methods"]]


async def test_a_method_switched_off_is_hidden_and_refused_until_switched_on(ops_stack: Stack) -> None:
    stack = ops_stack
    inc = await incident(stack)
    assert "ewallet" in await listed_methods(stack)
    # A deposit started before the switch: its answer got lost, the client resends the same key afterwards.
    started_key, started_player = uuid.uuid4().hex, new_player()
    started = await stack.deposit(method="ewallet", player_id=started_player, key=started_key)
    try:
        off = await stack.api.post("/v1/ops/methods/ewallet", json={"enabled": False, "incident_id": inc})
        assert off.status_code == 200, off.text
        assert (off.json()["method"], off.json()["enabled"], off.json()["updated_by"]) == ("ewallet", False,
                                                                                         "casino-a")
        assert "ewallet" not in await listed_methods(stack) and "card" in await listed_methods(stack)
        switches = {m["method"]: m for m in (await stack.api.get("/v1/ops/methods")).json()["methods"]}
        assert switches["ewallet"]["enabled"] is False and switches["card"] == {
            "method": "card", "enabled": True, "updated_at": None, "updated_by": None}

        # The same key again gets the first answer (DESIGN: the same id again returns the first result).
        assert await stack.deposit(method="ewallet", player_id=started_player, key=started_key) == started

        key, player = uuid.uuid4().hex, new_player()
        refused = await stack.deposit(method="ewallet", player_id=player, key=key, expect=422)
        assert refused["code"] == "method_disabled" and refused["errors"][0]["field"] == "method"
        async with stack.engine.connect() as conn:  # nothing started: the key is released, its answer not kept
            stored = await conn.execute(sa.select(idempotency_keys.c.state).where(idempotency_keys.c.key == key))
            assert stored.scalars().all() == ["released"]
        assert (await stack.api.get("/v1/ops/payments", params={"player_id": player})).json()["payments"] == []
    finally:
        on = await stack.api.post("/v1/ops/methods/ewallet", json={"enabled": True, "incident_id": inc})
    assert on.status_code == 200 and on.json()["enabled"] is True
    assert "ewallet" in await listed_methods(stack)
    init = await stack.deposit(method="ewallet", player_id=player, key=key)  # the same key now goes through
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    assert [(action, subject, details) for action, subject, details in await audit_entries(stack, inc)] == [
        ("method.switch", "method:ewallet", {"enabled": False}), ("method.switch", "method:ewallet", {"enabled": True})]
    assert_problem(await stack.api.post("/v1/ops/methods/cheque", json={"enabled": False}), 404, "unknown_method")
    for body in ({"enabled": "no"}, {"enabled": 0}, {}, {"enabled": True, "note": "x"}):
        assert_problem(await stack.api.post("/v1/ops/methods/ewallet", json=body), 422, "validation_error")
    await stack.check_invariants()


async def test_every_correction_needs_the_ops_scope(ops_stack: Stack) -> None:
    stack = ops_stack
    calls = [
        ("post", f"/v1/ops/payments/pay_{'0' * 24}/resync", None),
        ("post", f"/v1/ops/payouts/po_{'0' * 24}/resync", None),
        ("post", f"/v1/ops/payouts/po_{'0' * 24}/send-now", None),
        ("post", "/v1/ops/webhooks/replay", {}),
        ("post", "/v1/ops/psps/card/circuit", {"state": "open"}),
        ("get", "/v1/ops/methods", None),
        ("post", "/v1/ops/methods/card", {"enabled": False}),
    ]
    async with httpx.AsyncClient(base_url=stack.settings.api_url,
                                 headers={"Authorization": f"Bearer {OTHER_CLIENT_KEY}"}) as without_ops:
        for method, path, body in calls:
            response = await without_ops.request(method, path, json=body)
            assert_problem(response, 403, "insufficient_scope")
    assert (await card_health(stack))["forced"] is None
    assert "card" in await listed_methods(stack)
