"""The common scenarios at every sandbox provider, each through its own connector and verifier over real HTTP,
and what is particular to pay-by-bank (the bank redirect) and crypto (confirmations, under/over-payment)."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest

from psp.base import (
    PspConnector,
    PspDeclined,
    PspFailover,
    PspNotFound,
    PspRequestRejected,
    PspStepUpRequired,
    PspTransientError,
)
from psp.crypto_connector import CryptoConnector
from psp.http_connector import HttpPspConnector
from psp.paybybank_connector import PayByBankConnector
from tests.psp.psp_testkit import (
    PSP_METHOD,
    RETURN_URL,
    RunningSandbox,
    WebhookReceiver,
    deliveries,
    eventually,
    payment_request,
    payout_request,
    psp_mode,
    start_payment,
    stays,
    verified,
    wait_for_webhooks,
)

PSPS = ["card", "ewallet", "paybybank", "crypto"]
NEW_PSPS = ["paybybank", "crypto"]
# The webhooks (our statuses) each PSP sends before its final `captured` one.
BEFORE_CAPTURE = {"card": [], "ewallet": [], "paybybank": ["authorized"], "crypto": ["authorized", "authorized"]}
DECLINE_CODE = {
    "card": "card_declined", "ewallet": "insufficient_funds", "paybybank": "bank_rejected",
    "crypto": "address_screening_failed",
}


async def _status_is(connector: PspConnector, payment_id: str, status: str) -> bool:
    return (await connector.get_payment(payment_id)).status == status


# -- the common scenarios, at every provider ------------------------------------------------------


@pytest.mark.parametrize("psp", PSPS)
async def test_approve(
    psp: str, connectors: dict[str, HttpPspConnector], http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    payment_id, created = await start_payment(psp, connector, http)

    assert created.psp == psp and created.psp_reference.startswith(f"{psp}_")
    assert (created.amount_minor, created.currency) == (5000, "EUR")
    expected = [*BEFORE_CAPTURE[psp], "captured"]
    await wait_for_webhooks(receiver, payment_id, count=len(expected))
    events = verified(connector, receiver, payment_id)
    assert [e.status for e in events] == expected
    assert all((e.psp, e.payment_id, e.psp_reference) == (psp, payment_id, created.psp_reference) for e in events)
    assert all((e.amount_minor, e.currency) == (5000, "EUR") for e in events)
    assert len({e.event_id for e in events}) == len(events)
    assert (await connector.get_payment(payment_id)).status == "captured"


@pytest.mark.parametrize("psp", PSPS)
async def test_decline(psp: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver) -> None:
    connector = connectors[psp]
    req = payment_request("decline", method=PSP_METHOD[psp])

    with pytest.raises(PspDeclined) as declined:
        await connector.create_payment(req)

    assert declined.value.code == DECLINE_CODE[psp]
    payment = await connector.get_payment(req.payment_id)
    assert (payment.status, payment.failure_code, payment.redirect_url) == ("failed", DECLINE_CODE[psp], None)
    with pytest.raises(PspDeclined):
        await connector.create_payment(req)
    await stays(lambda: not receiver.for_payment(req.payment_id), duration=0.2)


@pytest.mark.parametrize("psp", PSPS)
async def test_no_webhook(
    psp: str,
    connectors: dict[str, HttpPspConnector],
    http: httpx.AsyncClient,
    receiver: WebhookReceiver,
    sandbox: RunningSandbox,
) -> None:
    connector = connectors[psp]
    payment_id, _ = await start_payment(psp, connector, http, "no_webhook")

    assert await eventually(lambda: _status_is(connector, payment_id, "captured"))
    await stays(lambda: not receiver.for_payment(payment_id), duration=0.2)
    assert await deliveries(http, sandbox, payment_id) == []


@pytest.mark.parametrize(("psp", "stuck_at"), [("paybybank", "authorized"), ("crypto", "pending")])
async def test_lost_never_resolves(
    psp: str, stuck_at: str, connectors: dict[str, HttpPspConnector], http: httpx.AsyncClient,
    receiver: WebhookReceiver,
) -> None:
    connector = connectors[psp]
    payment_id, _ = await start_payment(psp, connector, http, "lost")

    await stays(lambda: not receiver.for_payment(payment_id), duration=0.3)

    assert (await connector.get_payment(payment_id)).status == stuck_at


@pytest.mark.parametrize("psp", PSPS)
async def test_duplicate_webhook(
    psp: str, connectors: dict[str, HttpPspConnector], http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    payment_id, _ = await start_payment(psp, connector, http, "duplicate_webhook")
    count = len(BEFORE_CAPTURE[psp]) + 2

    await wait_for_webhooks(receiver, payment_id, count=count)

    *_, first, second = receiver.for_payment(payment_id)
    assert first.body == second.body
    events = verified(connector, receiver, payment_id)
    assert events[-1] == events[-2] and events[-1].status == "captured"  # same event id: the API dedupes it


@pytest.mark.parametrize("psp", PSPS)
async def test_out_of_order(
    psp: str, connectors: dict[str, HttpPspConnector], http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    payment_id, _ = await start_payment(psp, connector, http, "out_of_order")
    count = len(BEFORE_CAPTURE[psp]) + 2

    await wait_for_webhooks(receiver, payment_id, count=count)

    *_, captured, late = verified(connector, receiver, payment_id)
    assert (captured.status, late.status) == ("captured", "authorized")
    assert captured.event_id != late.event_id
    assert datetime.fromisoformat(late.occurred_at) < datetime.fromisoformat(captured.occurred_at)
    assert (await connector.get_payment(payment_id)).status == "captured"


@pytest.mark.parametrize("psp", PSPS)
async def test_wrong_amount(
    psp: str, connectors: dict[str, HttpPspConnector], http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    payment_id, created = await start_payment(psp, connector, http, "wrong_amount")
    assert created.amount_minor == 5000

    await wait_for_webhooks(receiver, payment_id, count=len(BEFORE_CAPTURE[psp]) + 1)

    final = verified(connector, receiver, payment_id)[-1]
    assert (final.status, final.amount_minor) == ("captured", 5100)
    assert (await connector.get_payment(payment_id)).amount_minor == 5100


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_flaky_then_created(
    psp: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    req = payment_request("flaky", method=PSP_METHOD[psp])

    for _ in range(2):
        with pytest.raises(PspTransientError) as unavailable:
            await connector.create_payment(req)
        assert unavailable.value.code == "psp_unavailable"
    created = await connector.create_payment(req)

    assert (await connector.create_payment(req)).psp_reference == created.psp_reference


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_slow(psp: str, connectors: dict[str, HttpPspConnector], sandbox: RunningSandbox) -> None:
    started = time.monotonic()
    created = await connectors[psp].create_payment(payment_request("slow", method=PSP_METHOD[psp]))

    assert time.monotonic() - started >= sandbox.config.slow_seconds
    assert created.status in {"pending", "requires_action"}


@pytest.mark.parametrize("psp", NEW_PSPS)
@pytest.mark.parametrize(("mode", "code"), [("down", "psp_unavailable"), ("error", "psp_internal_error")])
async def test_control_modes(
    psp: str, mode: str, code: str, connectors: dict[str, HttpPspConnector],
    http: httpx.AsyncClient, sandbox: RunningSandbox,
) -> None:
    connector = connectors[psp]
    existing = payment_request("lost", method=PSP_METHOD[psp])
    await connector.create_payment(existing)

    async with psp_mode(http, sandbox, psp, mode):
        with pytest.raises(PspTransientError) as failed:
            await connector.create_payment(payment_request(method=PSP_METHOD[psp]))
        assert failed.value.code == code
        with pytest.raises(PspTransientError):
            await connector.get_payment(existing.payment_id)
        with pytest.raises(PspTransientError):
            await connector.create_payout(payout_request(method=PSP_METHOD[psp]))
        assert (await connectors["card"].create_payment(payment_request("lost"))).status == "pending"

    assert (await connector.get_payment(existing.payment_id)).payment_id == existing.payment_id


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_slow_mode(
    psp: str, connectors: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    async with psp_mode(http, sandbox, psp, "slow"):
        started = time.monotonic()
        await connectors[psp].create_payment(payment_request("lost", method=PSP_METHOD[psp]))
        assert time.monotonic() - started >= sandbox.config.slow_seconds


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_unknown_payment_and_method(psp: str, connectors: dict[str, HttpPspConnector]) -> None:
    connector = connectors[psp]
    with pytest.raises(PspNotFound):
        await connector.get_payment("pay_never_created")
    with pytest.raises(PspNotFound):
        await connector.cancel_payment("pay_never_created")
    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_payment(payment_request(method="card"))
    assert rejected.value.code == "unsupported_method"


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_cancel_before_it_resolves(
    psp: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    req = payment_request("lost" if psp == "crypto" else None, method=PSP_METHOD[psp])
    await connector.create_payment(req)

    cancelled = await connector.cancel_payment(req.payment_id)

    assert (cancelled.status, cancelled.redirect_url) == ("cancelled", None)
    assert (await connector.cancel_payment(req.payment_id)).status == "cancelled"
    assert (await connector.get_payment(req.payment_id)).status == "cancelled"
    if psp == "paybybank":  # a redirected payment announces its cancellation
        await wait_for_webhooks(receiver, req.payment_id)
        assert [e.status for e in verified(connector, receiver, req.payment_id)] == ["cancelled"]


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_cancel_a_captured_payment_is_refused(
    psp: str, connectors: dict[str, HttpPspConnector], http: httpx.AsyncClient
) -> None:
    connector = connectors[psp]
    payment_id, _ = await start_payment(psp, connector, http, "no_webhook")
    await eventually(lambda: _status_is(connector, payment_id, "captured"))

    with pytest.raises(PspRequestRejected) as refused:
        await connector.cancel_payment(payment_id)

    assert refused.value.code == "not_cancellable"


# -- payouts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_payout_approve(psp: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver) -> None:
    connector = connectors[psp]
    req = payout_request(method=PSP_METHOD[psp])

    created = await connector.create_payout(req)

    assert connector.payout_methods == frozenset({PSP_METHOD[psp]})
    assert (created.status, created.amount_minor, created.psp_reference[: len(psp)]) == ("pending", 5000, psp)
    await wait_for_webhooks(receiver, req.payout_id)
    [event] = verified(connector, receiver, req.payout_id)
    assert (event.payment_id, event.status, event.amount_minor) == (req.payout_id, "paid", 5000)
    assert (await connector.get_payout(req.payout_id)).status == "paid"


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_payout_decline_and_fail(
    psp: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    declined_req = payout_request("decline", method=PSP_METHOD[psp])
    with pytest.raises(PspDeclined) as declined:
        await connector.create_payout(declined_req)
    assert declined.value.code == "payout_declined"
    assert (await connector.get_payout(declined_req.payout_id)).status == "failed"

    failing = payout_request("fail", method=PSP_METHOD[psp])
    assert (await connector.create_payout(failing)).status == "pending"
    await wait_for_webhooks(receiver, failing.payout_id)
    [event] = verified(connector, receiver, failing.payout_id)
    assert (event.status, event.failure_code) == ("failed", "beneficiary_rejected")


@pytest.mark.parametrize("psp", NEW_PSPS)
@pytest.mark.parametrize(
    ("scenario", "statuses"),
    [("duplicate_webhook", ["paid", "paid"]), ("out_of_order", ["paid", "pending"]), ("wrong_amount", ["paid"])],
)
async def test_payout_webhook_scenarios(
    psp: str, scenario: str, statuses: list[str], connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    req = payout_request(scenario, method=PSP_METHOD[psp])
    await connector.create_payout(req)

    await wait_for_webhooks(receiver, req.payout_id, count=len(statuses))

    events = verified(connector, receiver, req.payout_id)
    assert [e.status for e in events] == statuses
    assert events[0].amount_minor == (5100 if scenario == "wrong_amount" else 5000)


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_payout_silent_scenarios(
    psp: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    silent, lost = payout_request("no_webhook", method=PSP_METHOD[psp]), payout_request("lost", method=PSP_METHOD[psp])
    await connector.create_payout(silent)
    await connector.create_payout(lost)

    assert await eventually(lambda: _payout_status_is(connector, silent.payout_id, "paid"))
    await stays(lambda: not receiver.for_payment(silent.payout_id) and not receiver.for_payment(lost.payout_id))
    assert (await connector.get_payout(lost.payout_id)).status == "pending"


@pytest.mark.parametrize("psp", NEW_PSPS)
async def test_payout_flaky_and_unknown(psp: str, connectors: dict[str, HttpPspConnector]) -> None:
    connector = connectors[psp]
    req = payout_request("flaky", method=PSP_METHOD[psp])
    for _ in range(2):
        with pytest.raises(PspTransientError):
            await connector.create_payout(req)
    assert (await connector.create_payout(req)).status == "pending"
    with pytest.raises(PspNotFound):
        await connector.get_payout("po_never_created")
    for scenario in ("challenge", "underpaid", "soft_decline"):
        with pytest.raises(PspRequestRejected) as rejected:
            await connector.create_payout(payout_request(scenario, method=PSP_METHOD[psp]))
        assert rejected.value.code == "unknown_scenario"


async def _payout_status_is(connector: PspConnector, payout_id: str, status: str) -> bool:
    return (await connector.get_payout(payout_id)).status == status


# -- pay-by-bank: the bank redirect ---------------------------------------------------------------


async def test_paybybank_redirects_to_a_bank_page_then_authorises_and_settles(
    paybybank: PayByBankConnector, http: httpx.AsyncClient, receiver: WebhookReceiver, sandbox: RunningSandbox
) -> None:
    req = payment_request(method="bank_transfer")

    created = await paybybank.create_payment(req)

    assert created.status == "requires_action"
    assert created.redirect_url == f"{sandbox.url}/paybybank/banks/{created.psp_reference}"
    page = await http.get(created.redirect_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text and '<select name="bank">' in page.text
    assert 'value="success"' in page.text and 'value="fail"' in page.text and "50.00 EUR" in page.text
    await stays(lambda: not receiver.for_payment(req.payment_id), duration=0.2)

    submitted = await http.post(created.redirect_url, data={"bank": "Demo Sparkasse", "outcome": "success"})

    assert submitted.status_code == 303 and submitted.headers["location"] == RETURN_URL
    await wait_for_webhooks(receiver, req.payment_id)
    assert verified(paybybank, receiver, req.payment_id)[0].status == "authorized"
    await wait_for_webhooks(receiver, req.payment_id, count=2)
    raw = [r.json for r in receiver.for_payment(req.payment_id)]
    assert [(b["type"], b["data"]["status"]) for b in raw] == [
        ("payment.authorised", "authorised"), ("payment.settled", "settled"),
    ]
    assert "<form" not in (await http.get(created.redirect_url)).text  # closed once used
    again = await http.post(created.redirect_url, data={"outcome": "fail"})
    assert again.status_code == 303
    assert (await paybybank.get_payment(req.payment_id)).status == "captured"


async def test_paybybank_refused_at_the_bank_fails(
    paybybank: PayByBankConnector, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    req = payment_request(method="bank_transfer")
    created = await paybybank.create_payment(req)
    assert created.redirect_url

    await http.post(created.redirect_url, data={"outcome": "fail"})

    await wait_for_webhooks(receiver, req.payment_id)
    [event] = verified(paybybank, receiver, req.payment_id)
    assert (event.status, event.failure_code) == ("failed", "authorisation_rejected")
    assert receiver.for_payment(req.payment_id)[0].json["type"] == "payment.rejected"


@pytest.mark.parametrize("scenario", ["challenge", "3ds_fail"])
async def test_paybybank_has_no_3ds_so_challenge_scenarios_are_the_plain_redirect(
    scenario: str, paybybank: PayByBankConnector, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    payment_id, _ = await start_payment("paybybank", paybybank, http, scenario)
    await wait_for_webhooks(receiver, payment_id, count=2)
    assert [e.status for e in verified(paybybank, receiver, payment_id)] == ["authorized", "captured"]


async def test_bank_page_for_unknown_or_card_reference_is_404(
    http: httpx.AsyncClient, sandbox: RunningSandbox, card: HttpPspConnector
) -> None:
    challenged = await card.create_payment(payment_request("challenge"))
    for reference in ("paybybank_nope", challenged.psp_reference):
        url = f"{sandbox.url}/paybybank/banks/{reference}"
        response = await http.get(url)
        assert response.status_code == 404 and response.json()["error_code"] == "authorisation_not_found"
        assert (await http.post(url, data={"outcome": "success"})).status_code == 404


# -- crypto: confirmations and under/over-payment -------------------------------------------------


async def test_crypto_awaits_payment_then_confirms_with_a_webhook_per_confirmation(
    crypto: CryptoConnector, http: httpx.AsyncClient, receiver: WebhookReceiver, sandbox: RunningSandbox
) -> None:
    req = payment_request(method="crypto")

    created = await crypto.create_payment(req)

    assert (created.status, created.redirect_url, created.amount_minor) == ("pending", None, 5000)
    await wait_for_webhooks(receiver, req.payment_id, count=3)
    invoices = [r.json["invoice"] for r in receiver.for_payment(req.payment_id)]
    assert [(i["state"], i["confirmations"]) for i in invoices] == [("pending", 1), ("pending", 2), ("confirmed", 3)]
    assert all(i["confirmations_required"] == 3 and i["received_amount"] == "5000" for i in invoices)
    assert [e.status for e in verified(crypto, receiver, req.payment_id)] == ["authorized", "authorized", "captured"]
    answer = (await http.get(f"{sandbox.url}/crypto/v1/payments/{req.payment_id}")).json()
    assert (answer["state"], answer["confirmations"], answer["price_amount"]) == ("confirmed", 3, "5000")
    assert answer["deposit_address"].startswith("tb1q")


@pytest.mark.parametrize(("scenario", "received"), [("underpaid", 4500), ("overpaid", 5500)])
async def test_crypto_under_and_overpayment_report_the_amount_received(
    scenario: str, received: int, crypto: CryptoConnector, receiver: WebhookReceiver
) -> None:
    req = payment_request(scenario, method="crypto")
    created = await crypto.create_payment(req)
    assert created.amount_minor == 5000

    await wait_for_webhooks(receiver, req.payment_id, count=3)

    final = verified(crypto, receiver, req.payment_id)[-1]
    assert (final.status, final.amount_minor, final.currency) == ("captured", received, "EUR")
    invoice = receiver.for_payment(req.payment_id)[-1].json["invoice"]
    assert (invoice["price_amount"], invoice["received_amount"]) == ("5000", str(received))
    payment = await crypto.get_payment(req.payment_id)
    assert (payment.status, payment.amount_minor) == ("captured", received)


async def test_crypto_prices_stay_in_fiat_minor_units(crypto: CryptoConnector, receiver: WebhookReceiver) -> None:
    req = payment_request("underpaid", method="crypto", amount_minor=1234, currency="JPY")
    await crypto.create_payment(req)
    await wait_for_webhooks(receiver, req.payment_id, count=3)
    invoice = receiver.for_payment(req.payment_id)[-1].json["invoice"]
    assert (invoice["price_amount"], invoice["price_currency"], invoice["received_amount"]) == ("1234", "JPY", "1110")


@pytest.mark.parametrize("psp", ["card", "ewallet", "paybybank"])
@pytest.mark.parametrize("scenario", ["underpaid", "overpaid"])
async def test_under_and_overpaid_are_crypto_only(
    psp: str, scenario: str, connectors: dict[str, HttpPspConnector]
) -> None:
    with pytest.raises(PspRequestRejected) as rejected:
        await connectors[psp].create_payment(payment_request(scenario, method=PSP_METHOD[psp]))
    assert rejected.value.code == "unknown_scenario"


# -- scenarios that produce the PSPs' own error codes ---------------------------------------------


@pytest.mark.parametrize(
    ("psp", "code"),
    [("card", "rate_limited"), ("ewallet", "too_many_requests"), ("paybybank", "rate_limit_exceeded"),
     ("crypto", "rate_limit")],
)
async def test_rate_limited_is_retried_then_goes_through(
    psp: str, code: str, connectors: dict[str, HttpPspConnector]
) -> None:
    connector = connectors[psp]
    req = payment_request("rate_limited", method=PSP_METHOD[psp])
    for _ in range(2):
        with pytest.raises(PspTransientError) as limited:
            await connector.create_payment(req)
        assert type(limited.value) is PspTransientError and limited.value.code == code
    created = await connector.create_payment(req)
    assert created.status in {"pending", "requires_action"}
    payout = payout_request("rate_limited", method=PSP_METHOD[psp])
    with pytest.raises(PspTransientError):
        await connector.create_payout(payout)


@pytest.mark.parametrize(
    ("psp", "code"),
    [("card", "issuer_unavailable"), ("ewallet", "wallet_backend_unavailable"), ("paybybank", "bank_unavailable"),
     ("crypto", "node_unavailable")],
)
async def test_issuer_unavailable_fails_over_and_creates_nothing(
    psp: str, code: str, connectors: dict[str, HttpPspConnector]
) -> None:
    connector = connectors[psp]
    req = payment_request("issuer_unavailable", method=PSP_METHOD[psp])
    for _ in range(3):  # every time: retrying this PSP cannot help
        with pytest.raises(PspFailover) as failover:
            await connector.create_payment(req)
        assert failover.value.code == code
    with pytest.raises(PspNotFound):  # so the workflow knows it may go to the next PSP
        await connector.get_payment(req.payment_id)


@pytest.mark.parametrize(("psp", "code"), [("card", "authentication_required"), ("ewallet", "sca_required")])
async def test_soft_decline_asks_for_step_up(
    psp: str, code: str, connectors: dict[str, HttpPspConnector], receiver: WebhookReceiver
) -> None:
    connector = connectors[psp]
    req = payment_request("soft_decline", method=PSP_METHOD[psp])

    with pytest.raises(PspStepUpRequired) as step_up:
        await connector.create_payment(req)

    assert step_up.value.code == code
    payment = await connector.get_payment(req.payment_id)
    assert (payment.status, payment.failure_code) == ("failed", code)
    with pytest.raises(PspStepUpRequired):  # a retried create gets the same answer
        await connector.create_payment(req)
    await stays(lambda: not receiver.for_payment(req.payment_id), duration=0.2)


@pytest.mark.parametrize("psp", ["paybybank", "crypto"])
async def test_soft_decline_is_not_a_scenario_where_there_is_no_sca_to_add(
    psp: str, connectors: dict[str, HttpPspConnector]
) -> None:
    with pytest.raises(PspRequestRejected):
        await connectors[psp].create_payment(payment_request("soft_decline", method=PSP_METHOD[psp]))
