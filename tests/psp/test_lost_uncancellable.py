"""`lost_uncancellable`, for payments and payouts at every sandbox PSP: like `lost` (never resolves, no webhook,
look-ups keep the status it was left in), but every cancel is refused with 409 `not_cancellable`."""

from __future__ import annotations

import httpx
import pytest

from psp.base import PspRequestRejected
from psp.scenarios import PAYOUT_SCENARIOS, PSPS, SCENARIOS, SILENT_SCENARIOS
from tests.psp.psp_testkit import (
    PSP_METHOD,
    RunningSandbox,
    WebhookReceiver,
    deliveries,
    make_connector,
    payment_request,
    payout_request,
    stays,
)

SCENARIO = "lost_uncancellable"
NEVER = 0.3  # well past the sandbox's settle delay (0.05 s; crypto's 3 confirmations take 0.15 s)


def test_it_is_a_silent_scenario_the_api_lets_through() -> None:
    assert SCENARIO in SCENARIOS and SCENARIO in PAYOUT_SCENARIOS and SCENARIO in SILENT_SCENARIOS


@pytest.mark.parametrize("psp", PSPS)
async def test_a_payment_answers_like_lost_and_refuses_every_cancel(
    psp: str, sandbox: RunningSandbox, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = make_connector(psp, sandbox.url, http)
    lost = payment_request("lost", method=PSP_METHOD[psp])
    uncancellable = payment_request(SCENARIO, method=PSP_METHOD[psp])

    lost_created = await connector.create_payment(lost)
    created = await connector.create_payment(uncancellable)

    # The create answer is what `lost` gives (card: pending, no 3DS redirect; pay-by-bank: the bank redirect).
    assert (created.status, created.amount_minor, created.failure_code) == (
        lost_created.status, lost_created.amount_minor, lost_created.failure_code,
    )
    assert (created.redirect_url is None) == (lost_created.redirect_url is None)
    assert created.status == ("requires_action" if PSP_METHOD[psp] == "bank_transfer" else "pending")
    for _ in range(2):
        with pytest.raises(PspRequestRejected) as refused:
            await connector.cancel_payment(uncancellable.payment_id)
        assert refused.value.code == "not_cancellable"
    await stays(lambda: not receiver.for_payment(uncancellable.payment_id), duration=NEVER)
    assert (await connector.get_payment(uncancellable.payment_id)).status == created.status
    assert await deliveries(http, sandbox, uncancellable.payment_id) == []
    # `lost` itself can still be cancelled.
    assert (await connector.cancel_payment(lost.payment_id)).status == "cancelled"


async def test_at_pay_by_bank_it_stays_authorised_after_the_bank_and_still_refuses_cancels(
    sandbox: RunningSandbox, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = make_connector("paybybank", sandbox.url, http)
    req = payment_request(SCENARIO, method="bank_transfer")
    created = await connector.create_payment(req)
    assert created.redirect_url

    await http.post(created.redirect_url, data={"bank": "Sandbox Bank", "outcome": "success"})

    await stays(lambda: not receiver.for_payment(req.payment_id), duration=NEVER)
    assert (await connector.get_payment(req.payment_id)).status == "authorized"
    with pytest.raises(PspRequestRejected) as refused:
        await connector.cancel_payment(req.payment_id)
    assert refused.value.code == "not_cancellable"


@pytest.mark.parametrize("psp", PSPS)
async def test_a_payout_stays_pending_silently_and_refuses_every_cancel(
    psp: str, sandbox: RunningSandbox, http: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    connector = make_connector(psp, sandbox.url, http)
    req = payout_request(SCENARIO, method=PSP_METHOD[psp])

    created = await connector.create_payout(req)

    assert (created.status, created.amount_minor, created.failure_code) == ("pending", 5000, None)
    for _ in range(2):
        with pytest.raises(PspRequestRejected) as refused:
            await connector.cancel_payout(req.payout_id)
        assert refused.value.code == "not_cancellable"
    await stays(lambda: not receiver.for_payment(req.payout_id), duration=NEVER)
    assert (await connector.get_payout(req.payout_id)).status == "pending"
    assert await deliveries(http, sandbox, req.payout_id) == []


@pytest.mark.parametrize("kind", ["payments", "payouts"])
async def test_the_refusal_is_a_409_in_the_providers_error_shape(
    kind: str, sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    connector = make_connector("paybybank", sandbox.url, http)
    if kind == "payments":
        payment = payment_request(SCENARIO, method="bank_transfer")
        reference = payment.payment_id
        await connector.create_payment(payment)
    else:
        payout = payout_request(SCENARIO, method="bank_transfer")
        reference = payout.payout_id
        await connector.create_payout(payout)

    response = await http.post(f"{sandbox.url}/paybybank/v1/{kind}/{reference}/cancel")

    assert response.status_code == 409
    assert (response.json()["error_code"], response.json()["status"]) == ("not_cancellable", 409)
