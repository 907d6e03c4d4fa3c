"""How SandboxConnector maps HTTP outcomes to the PspError family (unit level, on a mock transport)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from psp.base import (
    PspDeclined,
    PspError,
    PspNotFound,
    PspRequestRejected,
    PspTransientError,
)
from psp.sandbox_connector import SandboxConnector
from tests.psp.psp_testkit import bound_socket, payment_request, payout_request

Handler = Callable[[httpx.Request], httpx.Response]


def connector_answering(handler: Handler) -> SandboxConnector:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return SandboxConnector("card", frozenset({"card"}), "http://psp.test/card", http)


def payment_json(payment_id: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "reference": "card_1", "merchant_reference": payment_id, "status": "pending",
        "amount": "50.00", "currency": "EUR",
    }
    return body | overrides


async def test_create_sends_the_wire_format_with_an_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=payment_json(req.payment_id))

    req = payment_request("challenge", amount_minor=5050)
    await connector_answering(handler).create_payment(req)

    [request] = seen
    assert (request.method, str(request.url)) == ("POST", "http://psp.test/card/v1/payments")
    assert request.headers["Idempotency-Key"] == req.payment_id
    assert httpx.Response(200, content=request.content).json() == {
        "merchant_reference": req.payment_id, "amount": "50.50", "currency": "EUR", "method": "card",
        "return_url": req.return_url, "customer_id": "player_1", "country": "DE",
        "metadata": {"sandbox_scenario": "challenge"},
    }


async def test_payment_ids_are_escaped_in_paths() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"error": {"code": "payment_not_found"}})

    with pytest.raises(PspNotFound):
        await connector_answering(handler).get_payment("a/b?c")
    assert seen == ["/card/v1/payments/a%2Fb%3Fc"]


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (402, {"error": {"code": "card_declined", "message": "no"}}, PspDeclined, "card_declined"),
        (402, None, PspDeclined, "declined"),
        (500, None, PspTransientError, "psp_http_500"),
        (502, {"error": {"code": "bad_gateway"}}, PspTransientError, "bad_gateway"),
        (503, {"error": {"code": "psp_unavailable"}}, PspTransientError, "psp_unavailable"),
        (429, None, PspTransientError, "psp_http_429"),
        (404, None, PspRequestRejected, "psp_http_404"),  # create: a wrong URL, not an unknown payment
        (409, {"error": {"code": "not_cancellable"}}, PspRequestRejected, "not_cancellable"),
        (422, {"error": {"code": "unknown_scenario"}}, PspRequestRejected, "unknown_scenario"),
        (401, "not json", PspRequestRejected, "psp_http_401"),
    ],
)
async def test_create_maps_http_errors(status: int, body: object, error: type[PspError], code: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status)

    with pytest.raises(error) as raised:
        await connector_answering(handler).create_payment(payment_request())

    assert type(raised.value) is error and raised.value.code == code


@pytest.mark.parametrize(
    "answer",
    [
        lambda pid: httpx.Response(200, text="<html>"),
        lambda pid: httpx.Response(200, json=[1]),
        lambda pid: httpx.Response(200, json=payment_json(pid, amount="50.001")),
        lambda pid: httpx.Response(200, json=payment_json(pid, amount=50.0)),
        lambda pid: httpx.Response(200, json=payment_json(pid, currency="XXX")),
        lambda pid: httpx.Response(200, json=payment_json(pid, status="weird")),
        lambda pid: httpx.Response(200, json=payment_json("pay_someone_else")),
        lambda pid: httpx.Response(200, json={"merchant_reference": pid}),
    ],
)
async def test_malformed_psp_answers_are_bad_psp_response(answer: Callable[[str], httpx.Response]) -> None:
    connector = connector_answering(lambda request: answer("pay_1"))

    with pytest.raises(PspError) as raised:
        await connector.get_payment("pay_1")

    assert type(raised.value) is PspError and raised.value.code == "bad_psp_response"


async def test_timeouts_are_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(PspTransientError) as raised:
        await connector_answering(handler).create_payment(payment_request())
    assert raised.value.code == "psp_timeout"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (httpx.ConnectTimeout, "psp_unreachable"),
        (httpx.PoolTimeout, "psp_unreachable"),
        (httpx.ReadError, "psp_connection_lost"),
        (httpx.RemoteProtocolError, "psp_connection_lost"),
    ],
)
async def test_a_request_that_may_have_reached_the_psp_is_never_called_unreachable(
    error: type[httpx.TransportError], code: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("broken", request=request)

    with pytest.raises(PspTransientError) as raised:
        await connector_answering(handler).create_payment(payment_request())
    assert raised.value.code == code


async def test_a_psp_that_trickles_its_answer_is_cut_off_at_the_read_timeout() -> None:
    server = await asyncio.start_server(_trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(timeout=0.5) as http:
        connector = SandboxConnector("card", frozenset({"card"}), f"http://127.0.0.1:{port}/card", http)
        started = time.monotonic()
        with pytest.raises(PspTransientError) as raised:
            await connector.create_payment(payment_request())
    assert raised.value.code == "psp_timeout"
    assert time.monotonic() - started < 5  # each byte came within the read timeout; the whole answer did not


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
    try:
        for _ in range(100):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_connection_refused_is_transient() -> None:
    sock, url = bound_socket()
    sock.close()  # nothing listens there any more
    async with httpx.AsyncClient(timeout=2) as http:
        connector = SandboxConnector("card", frozenset({"card"}), f"{url}/card", http)
        with pytest.raises(PspTransientError) as raised:
            await connector.create_payment(payment_request())
    assert raised.value.code == "psp_unreachable"


async def test_create_payout_sends_the_wire_format_with_an_idempotency_key() -> None:
    seen: list[httpx.Request] = []
    req = payout_request("fail", amount_minor=5050)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=payment_json(req.payout_id))

    payout = await connector_answering(handler).create_payout(req)

    [request] = seen
    assert (request.method, str(request.url)) == ("POST", "http://psp.test/card/v1/payouts")
    assert request.headers["Idempotency-Key"] == req.payout_id
    assert httpx.Response(200, content=request.content).json() == {
        "merchant_reference": req.payout_id, "amount": "50.50", "currency": "EUR", "method": "card",
        "customer_id": "player_1", "country": "DE", "metadata": {"sandbox_scenario": "fail"},
    }
    assert (payout.psp, payout.payout_id, payout.psp_reference, payout.status) == (
        "card", req.payout_id, "card_1", "pending",
    )


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (402, {"error": {"code": "account_closed"}}, PspDeclined, "account_closed"),
        (503, None, PspTransientError, "psp_http_503"),
        (422, {"error": {"code": "unsupported_method"}}, PspRequestRejected, "unsupported_method"),
    ],
)
async def test_create_payout_maps_http_errors(status: int, body: object, error: type[PspError], code: str) -> None:
    connector = connector_answering(
        lambda request: httpx.Response(status, json=body) if body is not None else httpx.Response(status)
    )

    with pytest.raises(error) as raised:
        await connector.create_payout(payout_request())

    assert type(raised.value) is error and raised.value.code == code


async def test_payout_ids_are_escaped_in_paths() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"error": {"code": "payout_not_found"}})

    with pytest.raises(PspNotFound):
        await connector_answering(handler).get_payout("po/1?x")
    assert seen == ["/card/v1/payouts/po%2F1%3Fx"]


@pytest.mark.parametrize(
    "answer",
    [
        lambda pid: httpx.Response(200, json=payment_json(pid, status="captured")),  # a payment status
        lambda pid: httpx.Response(200, json=payment_json("po_someone_else")),
    ],
)
async def test_malformed_payout_answers_are_bad_psp_response(answer: Callable[[str], httpx.Response]) -> None:
    connector = connector_answering(lambda request: answer("po_1"))

    with pytest.raises(PspError) as raised:
        await connector.get_payout("po_1")

    assert type(raised.value) is PspError and raised.value.code == "bad_psp_response"


async def test_payout_methods_default_to_the_payment_methods() -> None:
    async with httpx.AsyncClient() as http:
        default = SandboxConnector("w", frozenset({"card"}), "http://psp.test/w", http)
        narrower = SandboxConnector("w", frozenset({"card"}), "http://psp.test/w", http, payout_methods=frozenset())

    assert (default.payout_methods, narrower.payout_methods) == (frozenset({"card"}), frozenset())
