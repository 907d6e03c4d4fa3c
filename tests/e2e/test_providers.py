"""The pay-by-bank and crypto providers end to end: their own wire formats and signature schemes, through the
same workflows; crypto under- and over-payments are never credited as the amount asked."""

from __future__ import annotations

from tests.e2e.conftest import Stack, eventually, new_player


async def test_pay_by_bank_redirects_then_settles_later(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="bank_transfer", amount="80.00", player_id=player)
    assert init["status"] == "requires_action" and init["psp"] == "paybybank"
    assert "/paybybank/banks/" in init["redirect_url"]
    page = await stack.sandbox.get(init["redirect_url"])
    assert page.status_code == 200 and "<form" in page.text
    done = await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
    assert done.status_code == 303
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "80.00"
    await stack.check_invariants()


async def test_crypto_is_credited_after_its_confirmations(stack: Stack) -> None:
    player = new_player()
    init = await stack.deposit(method="crypto", amount="40.00", player_id=player)
    assert init["psp"] == "crypto"
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    assert await stack.balance(player) == "40.00"
    await stack.check_invariants()


async def test_crypto_under_and_over_payment_go_to_review_uncredited(stack: Stack) -> None:
    """The rule: a crypto payment whose received amount differs from the amount asked is not credited at all
    (neither as asked nor as received); it goes to review with an alert, and ops settle it with the player."""
    for scenario in ("underpaid", "overpaid"):
        player = new_player()
        init = await stack.deposit(method="crypto", amount="40.00", player_id=player, scenario=scenario)
        payment = await stack.wait_final(init["payment_id"])
        assert payment["status"] == "in_review" and payment["review_reason"] == "amount_mismatch", payment
        assert await stack.balance(player) == "0.00"
    await eventually(lambda: stack.worker_metric("payloop_alerts_total", kind="deposit.amount_mismatch"),
                     lambda count: count >= 1, timeout=10)
    await stack.check_invariants()
