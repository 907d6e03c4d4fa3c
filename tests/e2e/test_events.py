"""Outbound events end to end, once per backend: every event type reaches a receiver that verifies each signature
with `standardwebhooks`; a receiver answering 500 for a while, and one refusing connections (nothing listening)
until it comes up, still get everything, in order per payment; the catch-up list pages through the same events; a
delivery that runs out of retries is listed and replayed by ops; one client never sees another's events or
endpoints; a retried registration repeats the secret from the endpoint, never from the idempotency store. The stack
runs in dev mode (loopback endpoints) with a retry schedule of fractions of a second."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.testing import WorkflowEnvironment

from api.models import idempotency_keys
from events.payloads import EVENT_TYPES
from players.notifications import player_notifications
from tests.conftest import BACKENDS
from tests.e2e.conftest import (
    OTHER_CLIENT_KEY,
    WORKER_METRICS_PORT,
    Stack,
    eventually,
    free_port,
    metric_value,
    new_player,
    running_stack,
    serve,
)
from tests.e2e.test_money_after_payment import credited_deposit, open_dispute, refund, resolve_dispute, wait_dispute
from tests.e2e.test_money_after_payment import wait_refund
from tests.e2e.test_payouts import funded_player, payout, set_kyc, wait_payout


class Receiver:
    """The platform's side: one path per endpoint, each verifying with its own secret. A path answers 500 while
    its `failing` count lasts (or for ever while `down`), then 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.secrets: dict[str, str] = {}
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)  # verified, in arrival order
        self.refused: list[str] = []  # deliveries whose signature did not verify: must stay empty
        self.failing: dict[str, int] = defaultdict(int)
        self.down: set[str] = set()

    def url(self, name: str, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}/{name}"

    async def handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        try:
            event = Webhook(self.secrets[name]).verify(body, dict(request.headers))
        except Exception as err:  # noqa: BLE001 - any refusal is a test failure, reported below
            self.refused.append(f"{name}: {err}")
            return Response(status_code=400)
        if name in self.down or self.failing[name] > 0:
            self.failing[name] -= 1
            return Response(status_code=500)
        assert event["id"] == request.headers["webhook-id"]
        self.received[name].append(event)
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{name}", self.handle, methods=["POST"])])


# Eight attempts in about 19 s: the flaky receiver's 500s never use them up, the down one's do.
RETRY_SCHEDULE = "0.2,0.4,0.8,1.5,3,5,8"
ATTEMPTS = 8
# The receiver with nothing listening comes up once its first delivery was refused this often (about 3 s in), well
# before any delivery's schedule is spent.
REFUSED_ATTEMPTS = 5


@pytest.fixture(scope="module", params=BACKENDS)
async def events_stack(request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    backend = request.param
    async with running_stack(backend, temporal_env.client, tmp_path_factory.mktemp(f"events-{backend}"),
                             f"payloop-events-{backend}", dev_mode=True, events_retry_schedule_seconds=RETRY_SCHEDULE,
                             events_dispatch_interval_seconds=0.1) as stack:
        yield stack


async def register(http: httpx.AsyncClient, url: str, events: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url, **({"events": events} if events else {})}
    response = await http.post("/v1/event-endpoints", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 201, response.text
    return response.json()


async def all_events(http: httpx.AsyncClient, page_size: int = 7) -> list[dict[str, Any]]:
    """GET /v1/events page by page, from the start."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        response = await http.get("/v1/events", params={"limit": page_size, **({"after": after} if after else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["events"]
        if not page["events"]:
            assert page["next_after"] == after
            return found
        after = page["next_after"]


async def drive_every_event_type(stack: Stack) -> dict[str, str]:
    """One of each state change; the ids they are about, by what they are."""
    _, succeeded = await credited_deposit(stack)
    failed = await stack.deposit(method="card", scenario="3ds_fail")
    await stack.sandbox.post(failed["redirect_url"], data={"outcome": "success"})
    reviewed = await stack.deposit(method="card", scenario="wrong_amount")
    kyc_player = new_player()
    kyc = await stack.deposit(method="ewallet", player_id=kyc_player)  # a DE player under the threshold …
    gb = await stack.api.post("/v1/payments/init", headers={"Idempotency-Key": uuid.uuid4().hex}, json={
        "amount": "20.00", "currency": "EUR", "method": "ewallet", "player_id": kyc_player,
        "return_url": "https://casino.example/return", "meta": {"country": "GB"}})  # … then GB: KYC first
    assert gb.json()["status"] == "kyc_required", gb.text
    await set_kyc(stack, kyc_player, "verified")
    player = await funded_player(stack)
    paid = (await payout(stack, player, "30.00"))["payout_id"]
    unpaid = (await payout(stack, player, "20.00", scenario="fail"))["payout_id"]
    cancel_player = await funded_player(stack, kyc=None)  # a GB payout waits for KYC: cancelled before it is sent
    cancelled = (await payout(stack, cancel_player, "10.00"))["payout_id"]
    refunded = (await refund(stack, succeeded, "10.00"))["refund_id"]
    declined = (await refund(stack, succeeded, "5.00", scenario="decline"))["refund_id"]
    unknown = (await refund(stack, succeeded, "5.00", scenario="lost"))["refund_id"]  # no answer: review
    await wait_payout(stack, cancelled, {"kyc_required"})
    response = await stack.api.post(f"/v1/payouts/{cancelled}/cancel", json={"reason": "changed mind"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled", response.text
    await wait_refund(stack, refunded)
    dispute = await open_dispute(stack, succeeded, "20.00")
    won = await open_dispute(stack, succeeded, "5.00")
    await wait_dispute(stack, dispute, "opened")
    await wait_dispute(stack, won, "opened")
    await resolve_dispute(stack, dispute, "lost")
    await resolve_dispute(stack, won, "won")
    for payment_id in (failed["payment_id"], reviewed["payment_id"], kyc["payment_id"], gb.json()["payment_id"]):
        await stack.wait_final(payment_id)
    assert (await wait_payout(stack, paid))["status"] == "paid"
    assert (await wait_payout(stack, unpaid))["status"] == "failed"
    assert (await wait_refund(stack, declined))["status"] == "failed"
    assert (await wait_refund(stack, unknown, {"in_review"}, timeout=60))["review_reason"] == "psp_status_unknown"
    await wait_dispute(stack, dispute, "lost")
    await wait_dispute(stack, won, "won")
    return {"succeeded": succeeded, "failed": failed["payment_id"], "in_review": reviewed["payment_id"],
            "kyc": gb.json()["payment_id"], "paid": paid, "unpaid": unpaid, "cancelled": cancelled,
            "refund": refunded, "declined": declined, "unknown": unknown, "dispute": dispute, "won": won,
            "payout_player": player}


def ordering_key(event: dict[str, Any]) -> str:
    """What the event's deliveries are ordered by: its payment (a refund's, a dispute's too), its payout, or the
    payout a notification is about."""
    data = event["data"]
    return data.get("payment_id") or data.get("payout_id") or data["reference"]


async def deliveries_to(stack: Stack, endpoint_id: str) -> list[dict[str, Any]]:
    response = await stack.api.get("/v1/ops/event-deliveries", params={"limit": 500})
    assert response.status_code == 200, response.text
    return [d for d in response.json()["deliveries"] if d["endpoint_id"] == endpoint_id]


async def test_every_event_reaches_verifying_receivers_in_order_and_ops_replays_a_failed_one(
        events_stack: Stack) -> None:
    stack = events_stack
    receiver = Receiver()
    outage_port = free_port()  # the receiver served here too, later: until then its connections are refused
    async with (serve(receiver.app(), receiver.port), AsyncExitStack() as outage_server,
                httpx.AsyncClient(base_url=stack.settings.api_url, timeout=30,
                                  headers={"Authorization": f"Bearer {OTHER_CLIENT_KEY}"}) as other):
        steady = await register(stack.api, receiver.url("steady"))
        flaky = await register(stack.api, receiver.url("flaky"))
        down = await register(stack.api, receiver.url("down"), ["payment.succeeded"])
        unreachable = await register(stack.api, receiver.url("outage", outage_port))
        theirs = await register(other, receiver.url("theirs"))
        for name, endpoint in (("steady", steady), ("flaky", flaky), ("down", down), ("outage", unreachable),
                               ("theirs", theirs)):
            receiver.secrets[name] = endpoint["secret"]
        receiver.failing["flaky"] = ATTEMPTS - 2
        receiver.down.add("down")
        driving = asyncio.create_task(drive_every_event_type(stack))
        refused = await eventually(lambda: deliveries_to(stack, unreachable["id"]), lambda found: any(
            d["attempts"] >= REFUSED_ATTEMPTS for d in found) or driving.done(), 60, interval=0.2)
        assert not driving.done() or driving.result()  # a failed drive reports its own error here
        assert refused and all(d["state"] != "delivered" and d["last_status_code"] is None
                               and d["last_error"] in (None, "ConnectError") for d in refused), refused
        await outage_server.enter_async_context(serve(receiver.app(), outage_port))
        ids = await driving
        their_payment = (await other.post("/v1/payments/init", headers={"Idempotency-Key": uuid.uuid4().hex}, json={
            "amount": "5.00", "currency": "EUR", "method": "ewallet", "player_id": new_player(),
            "return_url": "https://casino.example/return", "meta": {"country": "DE"}})).json()["payment_id"]

        # The catch-up list holds every type, once per state change, ascending; it pages by id.
        listed = await eventually(lambda: all_events(stack.api), lambda found: EVENT_TYPES <= {
            e["type"] for e in found} and sum(e["type"] == "player.notification" for e in found) == 3, 30)
        assert [e["id"] for e in listed] == sorted({e["id"] for e in listed})
        assert their_payment not in str(listed)
        by_subject = {(e["type"], e["data"].get("payment_id") or e["data"].get("payout_id")) for e in listed}
        assert {("payment.succeeded", ids["succeeded"]), ("payment.failed", ids["failed"]),
                ("payment.in_review", ids["in_review"]), ("player.kyc_required", ids["kyc"]),
                ("payment.succeeded", ids["kyc"]), ("payout.paid", ids["paid"]),
                ("payout.failed", ids["unpaid"]), ("payout.cancelled", ids["cancelled"])} <= by_subject
        by_refund = {(e["type"], e["data"]["refund_id"]) for e in listed if e["type"].startswith("refund.")}
        assert by_refund == {("refund.succeeded", ids["refund"]), ("refund.failed", ids["declined"]),
                             ("refund.in_review", ids["unknown"])}, by_refund
        by_dispute = {(e["type"], e["data"]["dispute_id"]) for e in listed if e["type"].startswith("dispute.")}
        assert by_dispute == {("dispute.opened", ids["dispute"]), ("dispute.lost", ids["dispute"]),
                              ("dispute.opened", ids["won"]), ("dispute.won", ids["won"])}, by_dispute
        assert all(e["data"]["amount"].count(".") == 1 for e in listed if "amount" in e["data"])

        # Every receiver gets all of them (the flaky one after its 500s, the once unreachable one after it came up),
        # each in order per payment.
        wanted = {e["id"] for e in listed}
        for name in ("steady", "flaky", "outage"):
            await eventually(lambda n=name: asyncio.sleep(0, {e["id"] for e in receiver.received[n]}),
                             lambda got: wanted <= got, 30)
            first_seen: list[dict[str, Any]] = []
            for event in receiver.received[name]:
                if event["id"] not in {e["id"] for e in first_seen}:
                    first_seen.append(event)
            per_key: dict[str, list[str]] = defaultdict(list)
            for event in first_seen:
                per_key[ordering_key(event)].append(event["id"])
            assert all(got == sorted(got) for got in per_key.values()), per_key
            assert per_key[ids["succeeded"]] == [e["id"] for e in listed if e["data"].get("payment_id")
                                                 == ids["succeeded"]]
        assert receiver.refused == []
        theirs_got = await eventually(lambda: asyncio.sleep(0, receiver.received["theirs"]), lambda got: got, 30)
        assert {e["data"]["payment_id"] for e in theirs_got} == {their_payment}

        # A client sees only its own endpoints and events, and cannot delete another's.
        mine = (await stack.api.get("/v1/event-endpoints")).json()["endpoints"]
        assert {e["id"] for e in mine} == {steady["id"], flaky["id"], down["id"], unreachable["id"]}
        assert all("secret" not in e for e in mine)
        assert (await other.delete(f"/v1/event-endpoints/{steady['id']}")).status_code == 404
        assert [e["data"]["payment_id"] for e in await all_events(other)] == [their_payment]

        # The endpoint that was down ran out of retries: ops list it, replay it, and it arrives.
        failed_page = await eventually(
            lambda: stack.api.get("/v1/ops/event-deliveries", params={"state": "failed"}),
            lambda r: any(d["endpoint_id"] == down["id"] for d in r.json()["deliveries"]), 30)
        lost = [d for d in failed_page.json()["deliveries"] if d["endpoint_id"] == down["id"]]
        assert all(d["attempts"] == ATTEMPTS and d["last_status_code"] == 500 for d in lost), lost
        receiver.down.clear()
        replayed = await stack.api.post(f"/v1/ops/event-deliveries/{lost[0]['id']}/replay")
        assert replayed.status_code == 200 and replayed.json()["state"] == "pending", replayed.text
        await eventually(lambda: asyncio.sleep(0, receiver.received["down"]),
                         lambda got: lost[0]["event_id"] in {e["id"] for e in got}, 30)
        again = await stack.api.post(f"/v1/ops/event-deliveries/{lost[0]['id']}/replay")
        assert again.status_code in (200, 409)  # delivered again, or still on its way: never a 500

        # The payout notifications were delivered through the same path.
        async with stack.engine.connect() as conn:
            delivered = (await conn.execute(sa.select(player_notifications.c.delivered_at).where(
                player_notifications.c.player_id == ids["payout_player"]))).scalars().all()
        assert len(delivered) == 2 and all(delivered), delivered
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")).text
        assert metric_value(scraped, "payloop_event_deliveries_total", outcome="failed") >= len(lost)
        await stack.check_invariants()


async def test_bad_endpoint_requests_are_problems_and_change_nothing(events_stack: Stack) -> None:
    api = events_stack.api
    before = (await api.get("/v1/event-endpoints")).json()["endpoints"]
    for body in ({"url": "ftp://casino.example/x"}, {"url": "https://casino.example/x", "events": ["nope"]},
                 {"url": "https://casino.example/x", "events": []}, {"url": "x" * 3000},
                 # A port out of range or not a number, an unclosed IPv6 host: refused, not a 500.
                 {"url": "https://casino.example:99999/x"}, {"url": "https://casino.example:abc/x"},
                 {"url": "https://[::1/x"}):
        response = await api.post("/v1/event-endpoints", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert (await api.post("/v1/event-endpoints", json={"url": "https://casino.example/x"})).status_code == 422
    assert (await api.get("/v1/events", params={"after": "evt_x"})).status_code == 422
    assert (await api.post("/v1/ops/event-deliveries/999999/replay")).status_code == 404
    assert (await api.get("/v1/event-endpoints")).json()["endpoints"] == before
    await events_stack.check_invariants()


async def test_a_retried_registration_repeats_the_secret_read_from_the_endpoint_until_it_is_deleted(
        events_stack: Stack) -> None:
    api = events_stack.api
    key = uuid.uuid4().hex
    body = {"url": "http://127.0.0.1:9/retried"}
    first = await api.post("/v1/event-endpoints", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    again = await api.post("/v1/event-endpoints", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true", again.text
    assert again.json() == first.json() and first.json()["secret"].startswith("whsec_")
    async with events_stack.engine.connect() as conn:
        stored = (await conn.execute(sa.select(idempotency_keys.c.response_body).where(
            idempotency_keys.c.key == key))).scalar_one()
    assert json.loads(stored) == {k: v for k, v in first.json().items() if k != "secret"}

    assert (await api.delete(f"/v1/event-endpoints/{first.json()['id']}")).status_code == 204
    gone = await api.post("/v1/event-endpoints", json=body, headers={"Idempotency-Key": key})
    assert gone.status_code == 409 and gone.headers["content-type"] == "application/problem+json", gone.text
    assert gone.json()["code"] == "endpoint_deleted" and "whsec_" not in gone.text
    assert first.json()["id"] not in {e["id"] for e in (await api.get("/v1/event-endpoints")).json()["endpoints"]}
    await events_stack.check_invariants()
