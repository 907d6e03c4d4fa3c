"""The second PSP of the e-wallet, pay-by-bank and crypto methods end to end, through the real API: with the
method's first PSP held open (ops' forced circuit), a deposit goes to the second, its webhooks arrive signed in the
second's own scheme and credit it, a closed-loop payout and a refund go out through it, and its settlement report
reconciles line for line. Every test ends with the ledger invariants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.e2e.conftest import Stack, new_player
from tests.e2e.test_money_after_payment import refund, wait_refund
from tests.e2e.test_payouts import payout, set_kyc, wait_payout
from tests.e2e.test_reconciliation import book_on, clearing_of, counts, own_day, reconcile  # noqa: F401 (fixture)

# (method, first PSP, second PSP, a header only the second's signature scheme sends, its settlement day's offset)
SECOND_PSPS = [
    pytest.param("ewallet", "ewallet", "ewallet_b", "signature", 10, id="ewallet_b"),
    pytest.param("bank_transfer", "paybybank", "paybybank_b", "x-jws-signature", 11, id="paybybank_b"),
    pytest.param("crypto", "crypto", "crypto_b", "x-crypto-signature", 12, id="crypto_b"),
]


@pytest.fixture
async def held_open(stack: Stack) -> AsyncIterator[Any]:
    """`await held_open(psp)`: ops hold the PSP's circuit open until the test ends, then hand it back to its
    breaker."""
    held: list[str] = []

    async def hold(psp: str) -> None:
        response = await stack.api.post(f"/v1/ops/psps/{psp}/circuit", json={"state": "open"})
        assert response.status_code == 200, response.text
        held.append(psp)

    yield hold
    for psp in held:
        response = await stack.api.post(f"/v1/ops/psps/{psp}/circuit", json={"state": "auto"})
        assert response.status_code == 200, response.text


async def play_through(stack: Stack, player: str, amount: str) -> None:
    """A bet and an equal win: the deposit is wagered once (the AML turnover a payout asks for)."""
    round_id = f"r-{uuid.uuid4().hex[:10]}"
    for path, kind in (("debit", "bet"), ("credit", "win")):
        response = await stack.api.post(f"/v1/wallet/{path}", json={
            "player_id": player, "currency": "EUR", "amount": amount, "round_id": round_id, "game_id": "slots-1",
            "transaction_id": f"{kind}-{round_id}"})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "first", "second", "signature_header", "day_offset"), SECOND_PSPS)
async def test_deposit_refund_payout_and_recon_through_the_second_psp(
    stack: Stack, held_open: Any, book_on: Any, method: str, first: str, second: str,  # noqa: F811
    signature_header: str, day_offset: int,
) -> None:
    day = own_day(stack, day_offset)
    await book_on(second, day)
    await held_open(first)
    player = new_player()
    await set_kyc(stack, player, "verified")

    init = await stack.deposit(method=method, amount="60.00", player_id=player)
    assert init["psp"] == second, init
    if method == "bank_transfer":  # the player authorises at the bank's page
        assert f"/{second}/banks/" in init["redirect_url"]
        page = await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
        assert page.status_code == 303
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited", payment
    webhooks = [w for w in stack.webhooks_received if w.path == f"/v1/webhooks/{second}"
                and init["payment_id"].encode() in w.body]
    assert webhooks and all(signature_header in {h.lower() for h in w.headers} for w in webhooks)

    await play_through(stack, player, "60.00")
    paid = await wait_payout(stack, (await payout(stack, player, "20.00", country="DE"))["payout_id"])
    assert (paid["status"], paid["psp"]) == ("paid", second), paid
    refund_id = (await refund(stack, init["payment_id"], "15.00"))["refund_id"]
    assert (await wait_refund(stack, refund_id))["status"] == "succeeded"
    assert await stack.balance(player) == "25.00"

    run = await reconcile(stack, second, day)
    assert counts(run) == {"matched": 3}, run  # the capture, the refund, the payout
    assert await clearing_of(stack, f"psp:{second}:EUR",
                             {init["payment_id"], refund_id, paid["payout_id"]}) == 0
    await stack.check_invariants()
