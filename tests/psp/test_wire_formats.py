"""Four providers, four wire formats: the raw JSON each connector sends, and each sandbox PSP answers, signs and
errs with, differ in field names, amount representation and status vocabulary."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest

from psp.base import CreateRefundRequest, PspError
from psp.http_connector import HttpPspConnector
from tests.psp.psp_testkit import (
    CONNECTOR_CLASSES,
    PSP_METHOD,
    RETURN_URL,
    RunningSandbox,
    WebhookReceiver,
    captured_payment,
    payment_request,
    payout_request,
    refund_request,
    wait_for_webhooks,
)

PSPS = ["card", "ewallet", "paybybank", "crypto"]


def recording(psp: str, answer: httpx.Response | None = None) -> tuple[HttpPspConnector, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer or httpx.Response(503)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return CONNECTOR_CLASSES[psp](psp, frozenset({PSP_METHOD[psp]}), f"http://psp.test/{psp}", http), seen


def _keys(body: Any, prefix: str = "") -> set[str]:
    """Every key path in a JSON object ("amount.value")."""
    if not isinstance(body, dict):
        return set()
    paths = set()
    for key, value in body.items():
        paths.add(prefix + key)
        paths |= _keys(value, f"{prefix}{key}.")
    return paths


def _all_distinct(shapes: dict[str, set[str]]) -> None:
    for (a, shape_a), (b, shape_b) in itertools.combinations(shapes.items(), 2):
        assert shape_a != shape_b, (a, b)


async def test_create_payment_requests_are_each_providers_own() -> None:
    sent: dict[str, dict[str, Any]] = {}
    for psp in PSPS:
        connector, seen = recording(psp)
        req = payment_request("challenge", method=PSP_METHOD[psp], amount_minor=5050)
        with pytest.raises(PspError):
            await connector.create_payment(req)
        [request] = seen
        assert (request.method, request.url.path, request.headers["Idempotency-Key"]) == (
            "POST", f"/{psp}/v1/payments", req.payment_id,
        )
        sent[psp] = json.loads(request.content)
        sent[psp][next(k for k, v in sent[psp].items() if v == req.payment_id)] = "<payment_id>"

    assert sent == {
        "card": {
            "merchant_reference": "<payment_id>", "amount": "50.50", "currency": "EUR", "method": "card",
            "customer_id": "player_1", "country": "DE", "return_url": RETURN_URL,
            "metadata": {"sandbox_scenario": "challenge"},
        },
        "ewallet": {
            "merchantReference": "<payment_id>", "amount": {"value": "50.50", "currency": "EUR"},
            "paymentMethod": {"type": "ewallet"}, "shopperReference": "player_1", "countryCode": "DE",
            "returnUrl": RETURN_URL, "metadata": {"sandbox_scenario": "challenge"},
        },
        "paybybank": {
            "external_id": "<payment_id>", "amount": {"value": 5050, "currency": "EUR"}, "scheme": "bank_transfer",
            "user": {"id": "player_1", "country": "DE"}, "redirect_uri": RETURN_URL,
            "metadata": {"sandbox_scenario": "challenge"},
        },
        "crypto": {
            "order_id": "<payment_id>", "price_amount": "5050", "price_currency": "EUR", "pay_method": "crypto",
            "buyer_id": "player_1", "buyer_country": "DE", "success_url": RETURN_URL,
            "metadata": {"sandbox_scenario": "challenge"},
        },
    }
    _all_distinct({psp: _keys(body) for psp, body in sent.items()})


async def test_create_payout_requests_are_each_providers_own() -> None:
    shapes = {}
    for psp in PSPS:
        connector, seen = recording(psp)
        with pytest.raises(PspError):
            await connector.create_payout(payout_request(method=PSP_METHOD[psp]))
        [request] = seen
        assert request.url.path == f"/{psp}/v1/payouts"
        body = json.loads(request.content)
        assert not {"return_url", "returnUrl", "redirect_uri", "success_url"} & set(body)
        shapes[psp] = _keys(body)
    _all_distinct(shapes)


async def test_answers_differ_per_provider(http: httpx.AsyncClient, sandbox: RunningSandbox,
                                           connectors: dict[str, HttpPspConnector]) -> None:
    raw: dict[str, dict[str, Any]] = {}
    for psp in PSPS:
        req = payment_request("lost", method=PSP_METHOD[psp])
        await connectors[psp].create_payment(req)
        raw[psp] = (await http.get(f"{sandbox.url}/{psp}/v1/payments/{req.payment_id}")).json()

    assert (raw["card"]["status"], raw["card"]["amount"], raw["card"]["currency"]) == ("pending", "50.00", "EUR")
    assert (raw["ewallet"]["status"], raw["ewallet"]["amount"]) == ("PENDING", {"value": "50.00", "currency": "EUR"})
    assert (raw["paybybank"]["status"], raw["paybybank"]["amount"]) == ("redirect", {"value": 5000, "currency": "EUR"})
    assert raw["paybybank"]["redirect"]["url"].startswith(f"{sandbox.url}/paybybank/banks/")
    assert (raw["crypto"]["state"], raw["crypto"]["price_amount"], raw["crypto"]["price_currency"]) == (
        "awaiting_payment", "5000", "EUR",
    )
    assert raw["crypto"]["deposit_address"] and raw["crypto"]["confirmations"] == 0
    _all_distinct({psp: _keys(body) for psp, body in raw.items()})


async def test_webhooks_differ_per_provider(
    connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    shapes, header_sets = {}, {}
    for psp in PSPS:
        req = payment_request(method=PSP_METHOD[psp])
        created = await connectors[psp].create_payment(req)
        if created.redirect_url:
            await http.post(created.redirect_url, data={"outcome": "success"})
        await wait_for_webhooks(receiver, req.payment_id)
        [first, *_] = receiver.for_payment(req.payment_id)
        shapes[psp] = _keys(first.json)
        header_sets[psp] = {h for h in first.headers if "signature" in h or "timestamp" in h or h == "webhook-id"}
    _all_distinct(shapes)
    assert header_sets == {
        "card": {"x-signature", "x-timestamp"},
        "ewallet": {"x-wallet-signature", "x-wallet-timestamp"},
        "paybybank": {"webhook-id", "webhook-timestamp", "webhook-signature"},
        "crypto": {"x-crypto-signature"},
    }


async def test_error_bodies_differ_per_provider(http: httpx.AsyncClient, sandbox: RunningSandbox) -> None:
    bodies = {}
    for psp in PSPS:
        response = await http.get(f"{sandbox.url}/{psp}/v1/payments/pay_never_created")
        assert response.status_code == 404
        bodies[psp] = response.json()
    assert bodies["card"]["error"]["code"] == "payment_not_found"
    assert bodies["ewallet"]["errorCode"] == "payment_not_found"
    assert (bodies["paybybank"]["error_code"], bodies["paybybank"]["status"]) == ("payment_not_found", 404)
    assert (bodies["crypto"]["status"], bodies["crypto"]["reason"]) == ("error", "payment_not_found")
    _all_distinct({psp: _keys(body) for psp, body in bodies.items()})


@pytest.mark.parametrize(
    ("psp", "body", "code"),
    [
        ("ewallet", {"merchantReference": "p1", "amount": {"value": "50.001", "currency": "EUR"},
                     "paymentMethod": {"type": "ewallet"}, "shopperReference": "x"}, "amount_precision"),
        ("ewallet", {"merchantReference": "p1", "amount": "50.00", "currency": "EUR",
                     "paymentMethod": {"type": "ewallet"}, "shopperReference": "x"}, "invalid_request"),
        ("paybybank", {"external_id": "p1", "amount": {"value": "5000", "currency": "EUR"}, "scheme": "bank_transfer",
                       "user": {"id": "x"}}, "invalid_request"),
        ("paybybank", {"external_id": "p1", "amount": {"value": 0, "currency": "EUR"}, "scheme": "bank_transfer",
                       "user": {"id": "x"}}, "invalid_amount"),
        ("paybybank", {"external_id": "p1", "amount": {"value": 10**14, "currency": "EUR"},
                       "scheme": "bank_transfer", "user": {"id": "x"}}, "amount_too_large"),
        ("crypto", {"order_id": "p1", "price_amount": "50.00", "price_currency": "EUR", "pay_method": "crypto",
                    "buyer_id": "x"}, "invalid_amount"),
        ("crypto", {"order_id": "p1", "price_amount": "5000", "price_currency": "XXX", "pay_method": "crypto",
                    "buyer_id": "x"}, "unsupported_currency"),
        ("crypto", {"order_id": "p1", "price_amount": "5000", "price_currency": "EUR", "pay_method": "crypto",
                    "buyer_id": "x", "card_number": "4111111111111111"}, "invalid_request"),
    ],
)
async def test_bad_payout_bodies_are_422_in_the_providers_shape(
    psp: str, body: dict[str, Any], code: str, http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    response = await http.post(f"{sandbox.url}/{psp}/v1/payouts", json=body)
    assert response.status_code == 422
    error = response.json()
    assert {"ewallet": error.get("errorCode"), "paybybank": error.get("error_code"),
            "crypto": error.get("reason")}[psp] == code


@pytest.mark.parametrize("psp", ["ewallet", "paybybank", "crypto"])
@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b | {"status": "captured", "state": "captured"},  # our word, not theirs
        lambda b: {k: v for k, v in b.items() if k not in {"id", "invoice_id"}},
        lambda b: b | {"merchantReference": "other", "external_id": "other", "order_id": "other"},
        lambda b: b | {"amount": "50.00", "price_amount": "50.00"},
        lambda b: b | {"kind": "PAYOUT", "object": "payout", "type": "withdrawal"},
    ],
)
async def test_malformed_answers_are_bad_psp_responses(
    psp: str, mutate: Any, http: httpx.AsyncClient, sandbox: RunningSandbox, connectors: dict[str, HttpPspConnector]
) -> None:
    req = payment_request("lost", method=PSP_METHOD[psp])
    await connectors[psp].create_payment(req)
    good = (await http.get(f"{sandbox.url}/{psp}/v1/payments/{req.payment_id}")).json()
    connector, _ = recording(psp, httpx.Response(200, json=mutate(good)))

    with pytest.raises(PspError) as raised:
        await connector.get_payment(req.payment_id)

    assert type(raised.value) is PspError and raised.value.code == "bad_psp_response"
    ok, _ = recording(psp, httpx.Response(200, json=good))
    assert (await ok.get_payment(req.payment_id)).status in {"pending", "requires_action"}


# -- refunds --------------------------------------------------------------------------------------

REFUND_PSPS = ["card", "ewallet", "paybybank", "crypto"]


async def test_create_refund_requests_are_each_providers_own() -> None:
    sent: dict[str, dict[str, Any]] = {}
    for psp in REFUND_PSPS:
        connector, seen = recording(psp)
        req = CreateRefundRequest(refund_id="rf_1", payment_id="pay_1", psp_reference=f"{psp}_abc",
                                  amount_minor=1050, currency="EUR", scenario="decline")
        with pytest.raises(PspError):
            await connector.create_refund(req)
        [request] = seen
        assert (request.method, request.url.path, request.headers["Idempotency-Key"]) == (
            "POST", f"/{psp}/v1/refunds", "rf_1",
        )
        sent[psp] = json.loads(request.content)

    assert sent == {
        "card": {"merchant_reference": "rf_1", "payment_reference": "card_abc", "amount": "10.50", "currency": "EUR",
                 "metadata": {"sandbox_scenario": "decline"}},
        "ewallet": {"merchantReference": "rf_1", "originalReference": "ewallet_abc",
                    "amount": {"value": "10.50", "currency": "EUR"}, "metadata": {"sandbox_scenario": "decline"}},
        "paybybank": {"external_id": "rf_1", "payment_id": "paybybank_abc",
                      "amount": {"value": 1050, "currency": "EUR"}, "metadata": {"sandbox_scenario": "decline"}},
        "crypto": {"order_id": "rf_1", "invoice_id": "crypto_abc", "price_amount": "1050", "price_currency": "EUR",
                   "metadata": {"sandbox_scenario": "decline"}},
    }
    _all_distinct({psp: _keys(body) for psp, body in sent.items()})


async def test_refund_answers_differ_per_provider(http: httpx.AsyncClient, sandbox: RunningSandbox,
                                                  connectors: dict[str, HttpPspConnector]) -> None:
    raw: dict[str, dict[str, Any]] = {}
    for psp in REFUND_PSPS:
        payment = await captured_payment(psp, connectors[psp], http)
        req = refund_request(payment, 1050, scenario="lost")
        await connectors[psp].create_refund(req)
        raw[psp] = (await http.get(f"{sandbox.url}/{psp}/v1/refunds/{req.refund_id}")).json()

    assert (raw["card"]["status"], raw["card"]["amount"], raw["card"]["currency"]) == ("pending", "10.50", "EUR")
    assert raw["card"]["payment_reference"].startswith("card_")
    assert (raw["ewallet"]["kind"], raw["ewallet"]["status"], raw["ewallet"]["amount"]) == (
        "REFUND", "PENDING", {"value": "10.50", "currency": "EUR"},
    )
    assert (raw["paybybank"]["object"], raw["paybybank"]["status"], raw["paybybank"]["amount"]) == (
        "refund", "pending", {"value": 1050, "currency": "EUR"},
    )
    assert (raw["crypto"]["type"], raw["crypto"]["state"], raw["crypto"]["price_amount"]) == (
        "refund", "processing", "1050",
    )
    _all_distinct({psp: _keys(body) for psp, body in raw.items()})


@pytest.mark.parametrize("psp", REFUND_PSPS)
async def test_an_over_refund_is_a_4xx_in_the_providers_error_shape(
    psp: str, http: httpx.AsyncClient, sandbox: RunningSandbox, connectors: dict[str, HttpPspConnector]
) -> None:
    payment = await captured_payment(psp, connectors[psp], http)
    body = connectors[psp].refund_body(refund_request(payment, 5001))

    response = await http.post(f"{sandbox.url}/{psp}/v1/refunds", json=body)

    assert response.status_code == 422
    error = response.json()
    assert {"card": (error.get("error") or {}).get("code"), "ewallet": error.get("errorCode"),
            "paybybank": error.get("error_code"), "crypto": error.get("reason")}[psp] == "refund_exceeds_captured"
