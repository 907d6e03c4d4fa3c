"""Outbound events without a stack: signing, the retry schedule, URL checks, and the dispatcher's claim rules
(dedupe, order per key, a deleted endpoint) on both backends, with the endpoint answered by an httpx mock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from entrypoints.startup import startup_problems
from events.delivery import DeliveryPolicy, Dispatcher, retry_wait_seconds, signed_request
from events.endpoints import UrlRefused, check_url, create_endpoint, delete_endpoint, new_secret
from events.models import event_deliveries
from events.outbox import Event, client_events, emit_in, event_id, event_seq
from events.payloads import EVENT_TYPES, EventDraft, payout_event
from ledger.payouts import PayoutRecord
from payloop.settings import Settings, parse_retry_schedule

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def test_a_signed_delivery_verifies_with_the_library_and_its_id_is_the_event_id() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(Webhook(secret)._whsecret) == 32
    event = Event(42, "payment.succeeded", "casino-a", "pay_1", {"amount": "50.00", "currency": "EUR"}, T0)
    body, headers = signed_request(secret, event, datetime.now(timezone.utc))
    assert headers["webhook-id"] == event.id == "evt_0000000000000042"
    assert Webhook(secret).verify(body, headers) == {"id": event.id, "type": "payment.succeeded",
                                                     "created_at": T0.isoformat(), "data": event.data}
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_secret()).verify(body, headers)


def test_the_default_retry_schedule_keeps_trying_for_at_least_a_day_then_stops() -> None:
    schedule = parse_retry_schedule(Settings().events_retry_schedule_seconds)
    waits = [retry_wait_seconds(schedule, attempt, jitter=0.0) for attempt in range(1, len(schedule) + 1)]
    assert sum(waits) >= 24 * 3600  # jitter only stretches a wait
    assert waits == sorted(waits) and waits[0] <= 5
    assert retry_wait_seconds(schedule, len(schedule) + 1, jitter=0.0) is None
    assert retry_wait_seconds(schedule, 1, jitter=0.99) < schedule[0] * 1.25
    for bad in ("", "5,-1", "0", "nan", "5,x"):
        with pytest.raises(ValueError):
            Settings(events_retry_schedule_seconds=bad)


def test_event_ids_sort_as_their_sequence_and_only_they_parse() -> None:
    assert event_id(9) < event_id(10) < event_id(1_000_000)
    assert event_seq(event_id(123)) == 123
    for bad in ("evt_1", "evt_00000000000000x1", "pay_0000000000000001", "evt_00000000000000001"):
        assert event_seq(bad) is None


def test_a_payout_cancelled_before_it_was_sent_is_an_event_and_one_still_on_its_way_is_none() -> None:
    def record(status: str) -> PayoutRecord:
        return PayoutRecord(payout_id="po_1", client_id="casino-a", player_id="p-1", currency="EUR",
                            amount_minor=1000, status=status, created_at=T0, updated_at=T0, method="ewallet")

    cancelled = payout_event(record("cancelled"))
    assert cancelled is not None and cancelled.type == "payout.cancelled" in EVENT_TYPES
    assert (cancelled.ordering_key, cancelled.dedupe_key) == ("po_1", "payout.cancelled:po_1:cancelled")
    assert cancelled.data == {"payout_id": "po_1", "player_id": "p-1", "status": "cancelled", "amount": "10.00",
                              "currency": "EUR", "method": "ewallet", "psp": None}
    assert payout_event(record("kyc_required")) is None


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "https://10.1.2.3/x", "https://169.254.169.254/latest",
                                 "https://[::1]/x", "https://[fe80::1]/x", "https://localhost/x",
                                 "https://192.168.0.10:8443/x", "https://0.0.0.0/x"])
async def test_outside_dev_mode_an_endpoint_inside_our_network_is_refused(url: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        await check_url(url, allow_private=False)
    assert refused.value.code == "url_not_public"


async def test_scheme_rules_and_dev_mode() -> None:
    for url, code in (("ftp://casino.example/x", "url_scheme"), ("http://93.184.216.34/x", "url_scheme"),
                      ("https:///x", "url_scheme"), ("https://no-such-host.invalid/x", "url_unresolvable")):
        with pytest.raises(UrlRefused) as refused:
            await check_url(url, allow_private=False)
        assert refused.value.code == code, url
    await check_url("https://93.184.216.34/hooks", allow_private=False)
    await check_url("http://127.0.0.1:9000/hooks", allow_private=True)
    with pytest.raises(UrlRefused):
        await check_url("file:///etc/passwd", allow_private=True)


@pytest.mark.parametrize("url", ["https://casino.example:99999/x", "https://casino.example:abc/x", "https://[::1/x",
                                 "http://[fe80::1/x"])
@pytest.mark.parametrize("allow_private", [False, True])
async def test_a_url_with_a_bad_port_or_a_broken_ipv6_host_is_refused_not_raised(url: str, allow_private: bool) -> None:
    with pytest.raises(UrlRefused) as refused:
        await check_url(url, allow_private=allow_private)
    assert refused.value.code == "url_invalid"


async def test_a_host_idna_refuses_does_not_resolve() -> None:
    with pytest.raises(UrlRefused) as refused:
        await check_url(f"https://{'a' * 64}.casino.example/x", allow_private=False)
    assert refused.value.code == "url_unresolvable"


class _Endpoint:
    """An endpoint that answers each event id from a script of status codes (then 200), and logs what came."""

    def __init__(self, script: dict[str, list[int]]) -> None:
        self.script = script
        self.received: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        event = request.headers["webhook-id"]
        self.received.append(event)
        codes = self.script.get(event, [])
        return httpx.Response(codes.pop(0) if codes else 200)


def _draft(key: str, n: int) -> EventDraft:
    return EventDraft("payment.in_review", "casino-a", key, f"test:{key}:{n}", {"n": n})


async def _states(engine: AsyncEngine) -> dict[int, tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(event_deliveries.c.event_seq, event_deliveries.c.state,
                                            event_deliveries.c.attempts))
        return {row.event_seq: (row.state, row.attempts) for row in rows}


async def test_one_key_waits_behind_its_failed_head_while_other_keys_go_on(engine: AsyncEngine) -> None:
    now = [T0]
    await create_endpoint(engine, endpoint_id="we_a", client_id="casino-a", url="https://hooks.example/a",
                          event_types=None, now=T0)
    await create_endpoint(engine, endpoint_id="we_b", client_id="casino-b", url="https://hooks.example/b",
                          event_types=None, now=T0)
    async with engine.begin() as conn:
        for key, n in (("pay_1", 1), ("pay_1", 2), ("pay_2", 1)):
            assert await emit_in(conn, _draft(key, n))
        assert not await emit_in(conn, _draft("pay_1", 1))  # the same change again: nothing new
    first, second, other = (e.seq for e in await client_events(engine, "casino-a", after_seq=0, limit=10))
    receiver = _Endpoint({event_id(first): [500, 503]})
    policy = DeliveryPolicy((10.0, 20.0), timeout_seconds=5, batch_size=10, interval_seconds=1,
                            allow_private_urls=True)
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver.handle)) as http:
        dispatcher = Dispatcher(engine, http, policy, clock=lambda: now[0], jitter=lambda: 0.0)
        assert await dispatcher.dispatch_once() == 2  # pay_1's head and pay_2; pay_1's second waits
        assert await _states(engine) == {first: ("pending", 1), second: ("pending", 0), other: ("delivered", 1)}
        now[0] = T0 + timedelta(seconds=9)
        assert await dispatcher.dispatch_once() == 0  # the head is not due yet, and the second stays behind it
        now[0] = T0 + timedelta(seconds=10)
        assert await dispatcher.dispatch_once() == 1
        now[0] = T0 + timedelta(seconds=31)
        assert await dispatcher.dispatch_once() == 1  # third attempt of the head: delivered
        assert await dispatcher.dispatch_once() == 1  # and only now the second
    assert receiver.received == [event_id(first), event_id(other), event_id(first), event_id(first),
                                 event_id(second)]
    assert await _states(engine) == {first: ("delivered", 3), second: ("delivered", 1), other: ("delivered", 1)}
    assert await client_events(engine, "casino-b", after_seq=0, limit=10) == []


async def test_a_spent_schedule_fails_the_delivery_and_a_deleted_endpoint_stops_the_rest(engine: AsyncEngine) -> None:
    now = [T0]
    await create_endpoint(engine, endpoint_id="we_a", client_id="casino-a", url="https://hooks.example/a",
                          event_types=["payment.in_review"], now=T0)
    await create_endpoint(engine, endpoint_id="we_c", client_id="casino-a", url="https://hooks.example/c",
                          event_types=["payout.paid"], now=T0)  # wants none of these: no delivery made
    async with engine.begin() as conn:
        await emit_in(conn, _draft("pay_1", 1))
        await emit_in(conn, _draft("pay_2", 1))
    first, second = (e.seq for e in await client_events(engine, "casino-a", after_seq=0, limit=10))
    receiver = _Endpoint({event_id(first): [500, 500], event_id(second): [500]})
    policy = DeliveryPolicy((1.0,), timeout_seconds=5, batch_size=10, interval_seconds=1, allow_private_urls=True)
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver.handle)) as http:
        dispatcher = Dispatcher(engine, http, policy, clock=lambda: now[0], jitter=lambda: 0.0)
        assert await dispatcher.dispatch_once() == 2
        assert await delete_endpoint(engine, "casino-a", "we_a", T0) is True
        now[0] = T0 + timedelta(seconds=2)
        assert await dispatcher.dispatch_once() == 0
    assert await _states(engine) == {first: ("failed", 1), second: ("failed", 1)}
    async with engine.connect() as conn:
        errors = (await conn.execute(sa.select(event_deliveries.c.last_error))).scalars().all()
    assert errors == ["endpoint deleted", "endpoint deleted"]
    assert not await delete_endpoint(engine, "casino-b", "we_c", T0)  # not casino-b's


async def test_a_send_failing_oddly_is_an_attempt_and_a_claim_lapsing_on_its_last_attempt_ends(
        engine: AsyncEngine) -> None:
    now = [T0]
    await create_endpoint(engine, endpoint_id="we_a", client_id="casino-a", url="https://hooks.example/a",
                          event_types=None, now=T0)
    async with engine.begin() as conn:
        await emit_in(conn, _draft("pay_1", 1))
        await emit_in(conn, _draft("pay_2", 1))
    first, second = (e.seq for e in await client_events(engine, "casino-a", after_seq=0, limit=10))

    def odd_failure(request: httpx.Request) -> httpx.Response:
        if request.headers["webhook-id"] == event_id(first):
            raise RuntimeError("not an httpx error")
        return httpx.Response(200)

    policy = DeliveryPolicy((1.0,), timeout_seconds=5, batch_size=10, interval_seconds=1, allow_private_urls=True)
    async with httpx.AsyncClient(transport=httpx.MockTransport(odd_failure)) as http:
        dispatcher = Dispatcher(engine, http, policy, clock=lambda: now[0], jitter=lambda: 0.0)
        assert await dispatcher.dispatch_once() == 2  # the other send is recorded all the same
        assert await _states(engine) == {first: ("pending", 1), second: ("delivered", 1)}
        # Its last attempt is claimed, and its worker dies before recording it: the claim lapses.
        now[0] = T0 + timedelta(seconds=2)
        async with engine.begin() as conn:
            await conn.execute(event_deliveries.update().where(event_deliveries.c.event_seq == first)
                               .values(state="delivering", attempts=2, next_attempt_at=now[0]))
        assert await dispatcher.dispatch_once() == 0  # not sent a third time
    assert await _states(engine) == {first: ("failed", 2), second: ("delivered", 1)}


def test_a_worker_outside_dev_mode_refuses_a_retry_schedule_shorter_than_a_day() -> None:
    short = Settings(events_retry_schedule_seconds="5,30,3600", database_url="sqlite+aiosqlite:///x.db")
    assert ("PAYLOOP_EVENTS_RETRY_SCHEDULE_SECONDS", "retries for 1.0 h in all; at least 24 h are needed") in \
        startup_problems(short, "worker")
    assert not any(name == "PAYLOOP_EVENTS_RETRY_SCHEDULE_SECONDS"
                   for name, _ in startup_problems(Settings(database_url="sqlite+aiosqlite:///x.db"), "worker"))


async def test_a_registration_retried_after_its_answer_was_lost_finds_the_first(engine: AsyncEngine) -> None:
    first = await create_endpoint(engine, endpoint_id="we_r", client_id="casino-a", url="https://hooks.example/a",
                                  event_types=None, now=T0)
    again = await create_endpoint(engine, endpoint_id="we_r", client_id="casino-a", url="https://hooks.example/a",
                                  event_types=None, now=T0 + timedelta(seconds=5))
    assert again == first
