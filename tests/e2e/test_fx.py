"""Currency conversion end to end: a USD deposit into a EUR wallet credits at the rate it locked although the rate
source changes while it waits for its PSP; a USD payout from that wallet; the FX legs, margin and invariants per
currency; refunds and chargebacks of a converted deposit given back at its locked rate; the wallet currency's API;
a capture in the wrong currency stays a review, conversion or not."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ledger.models import ledger_accounts
from payloop.codec import data_converter
from tests.e2e.conftest import CODEC_KEYS, Stack, new_player
from tests.e2e.test_money_after_payment import open_dispute, refund, resolve_dispute, wait_dispute, wait_refund
from tests.e2e.test_payouts import set_kyc, wait_payout
from workflows.types import ActivityName, WalletConversion


async def set_rates(stack: Stack, rates: dict[str, str]) -> None:
    response = await stack.sandbox.post("/control/fx", json={"rates": rates})
    assert response.status_code == 200, response.text


async def put_wallet_currency(stack: Stack, player: str, currency: Any) -> Any:
    return await stack.api.put(f"/v1/players/{player}/wallet-currency", json={"currency": currency},
                               headers={"Idempotency-Key": uuid.uuid4().hex})


async def posted(stack: Stack, account_id: str) -> int:
    async with stack.engine.connect() as conn:
        return (await conn.execute(sa.select(ledger_accounts.c.posted_balance)
                                   .where(ledger_accounts.c.id == account_id))).scalar_one_or_none() or 0


async def locked_quote_in_history(stack: Stack, payment_id: str) -> WalletConversion:
    """The quote activity's result as the history records it (a local activity's marker), decoded."""
    history = await stack.client.get_workflow_handle(f"deposit-{payment_id}").fetch_history()
    converter = data_converter(CODEC_KEYS)
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and "result" in marker.details:
            # Core's local-activity marker: `data` names the activity (plain JSON), `result` is its answer.
            data = json.loads(marker.details["data"].payloads[0].data)
            if data.get("activity_type") == ActivityName.QUOTE_CONVERSION:
                return (await converter.decode(marker.details["result"].payloads, [WalletConversion]))[0]
    raise AssertionError("no quote in the history")


async def test_usd_deposit_into_eur_wallet_keeps_its_locked_rate_then_pays_out_in_usd(stack: Stack) -> None:
    started_at = datetime.now(UTC)
    player = new_player()
    await set_kyc(stack, player, "verified")
    assert (await put_wallet_currency(stack, player, "EUR")).json()["wallet_currency"] == "EUR"
    await set_rates(stack, {"USD/EUR": "0.9000"})
    fx_usd, fx_eur = await posted(stack, "house:fx:USD"), await posted(stack, "house:fx:EUR")
    margin_eur = await posted(stack, "house:fx_margin:EUR")

    async with stack.webhooks_held():  # the deposit waits for its PSP's word while the source's rate moves
        init = await stack.deposit(method="ewallet", amount="100.00", currency="USD", player_id=player)
        waiting = await stack.payment(init["payment_id"])
        assert waiting["status"] not in ("credited", "failed") and waiting["fx"]["rate"] == "0.9000"
        await set_rates(stack, {"USD/EUR": "0.5000"})
    payment = await stack.wait_final(init["payment_id"])

    # 100.00 USD at 0.9000 less 50 bps = 89.55 EUR (rounded down); the mid value 90.00, the house's 0.45.
    assert payment["status"] == "credited" and payment["credited_amount"] == "100.00"
    fx = payment["fx"]
    assert (fx["wallet_currency"], fx["wallet_amount"], fx["margin"], fx["spread_bps"]) == ("EUR", "89.55", "0.45", 50)
    assert fx["source"] == "sandbox-fx" and fx["rate_id"].startswith("fxq_") and fx["expires_at"]
    assert await stack.balance(player, "EUR") == "89.55" and await stack.balance(player, "USD") == "0.00"
    quote = await locked_quote_in_history(stack, init["payment_id"])
    assert quote.lock is not None and (quote.lock.rate, quote.lock.rate_id) == ("0.9000", fx["rate_id"])
    assert await posted(stack, "house:fx:USD") - fx_usd == 10000
    assert await posted(stack, "house:fx:EUR") - fx_eur == -9000
    assert await posted(stack, "house:fx_margin:EUR") - margin_eur == 45
    await stack.check_invariants()

    # Money in the wallet: its currency stays until it is gone.
    refused = await put_wallet_currency(stack, player, "GBP")
    assert refused.status_code == 409 and refused.json()["code"] == "wallet_currency_in_use"
    assert (await put_wallet_currency(stack, player, "EUR")).status_code == 200  # the same again: a no-op

    # A USD payout at the source's rate now (0.5000): 20.00 USD charges the wallet 10.05 EUR (plus 50 bps, up).
    # The wallet is played through once in EUR: AML's rapid in-and-out rule measures the USD deposit as the
    # 89.55 EUR it credited, so the payout is not flagged.
    for path, kind in (("debit", "bet"), ("credit", "win")):
        response = await stack.api.post(f"/v1/wallet/{path}", json={
            "player_id": player, "currency": "EUR", "amount": "89.55", "round_id": f"r-{player}",
            "game_id": "slots-1", "transaction_id": f"{kind}-{player}"})
        assert response.status_code == 200, response.text
    response = await stack.api.post("/v1/payouts/init", json={
        "amount": "20.00", "currency": "USD", "player_id": player, "meta": {"country": "DE"}},
        headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 201, response.text
    paid = await wait_payout(stack, response.json()["payout_id"])
    assert paid["status"] == "paid" and paid["hold"] == "posted", (paid["failure_code"], paid["review_reason"])
    assert (paid["fx"]["rate"], paid["fx"]["wallet_amount"], paid["fx"]["margin"]) == ("0.5000", "10.05", "0.05")
    assert await stack.balance(player, "EUR") == "79.50"
    await stack.check_invariants()

    report = (await stack.api.get("/v1/ops/margin", params={
        "from": started_at.isoformat(), "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()})).json()
    eur = [row for row in report["rows"] if (row["currency"], row["psp"]) == ("EUR", "ewallet")]
    assert [row["fx_margin"] for row in eur] == ["0.50"], report


async def test_first_deposit_sets_the_wallet_currency_and_a_wrong_currency_capture_stays_a_review(
        stack: Stack) -> None:
    player = new_player()
    for bad in ("usd", "XXX", 978):
        problem = await put_wallet_currency(stack, player, bad)
        assert problem.status_code == 422 and problem.headers["content-type"] == "application/problem+json", bad
    assert (await stack.api.get(f"/v1/players/{player}")).json()["wallet_currency"] is None

    first = await stack.deposit(method="ewallet", amount="10.00", currency="GBP", player_id=player)
    assert (await stack.wait_final(first["payment_id"]))["fx"] is None
    assert (await stack.api.get(f"/v1/players/{player}")).json()["wallet_currency"] == "GBP"

    # The PSP captures in EUR what was asked in USD, for a GBP wallet: a currency mismatch, never converted.
    init = await stack.deposit(method="card", scenario="wrong_currency", currency="USD", player_id=player)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "in_review" and payment["review_reason"] == "currency_mismatch"
    assert payment["fx"]["wallet_currency"] == "GBP" and payment["credited_amount"] == "0.00"
    assert await stack.balance(player, "GBP") == "10.00"
    assert await posted(stack, f"player:{player}:EUR") == 0 and await posted(stack, f"player:{player}:USD") == 0
    await stack.check_invariants()


async def test_refunds_and_chargebacks_of_converted_deposits_give_back_their_share_at_the_locked_rate(
        stack: Stack) -> None:
    player = new_player()
    assert (await put_wallet_currency(stack, player, "EUR")).status_code == 200
    await set_rates(stack, {"USD/EUR": "0.9000"})
    fx_before = {account: await posted(stack, account)
                 for account in ("house:fx:USD", "house:fx:EUR", "house:fx_margin:EUR")}
    started = [await stack.deposit(method="card", amount="100.00", currency="USD", player_id=player)
               for _ in range(3)]
    refunded, charged_back, won = [
        p["payment_id"] for p in await asyncio.gather(*(stack.wait_final(s["payment_id"]) for s in started))]
    assert await stack.balance(player, "EUR") == "268.65"  # 3 × 89.55

    # 30.00 of 100.00 USD takes 26.87 EUR (26.865 rounded up), the last 70.00 takes the rest of the 89.55.
    first = await refund(stack, refunded, "30.00")
    assert (await wait_refund(stack, first["refund_id"]))["status"] == "succeeded"
    assert await stack.balance(player, "EUR") == "241.78"
    rest = await refund(stack, refunded, "70.00")
    assert (await wait_refund(stack, rest["refund_id"]))["status"] == "succeeded"
    assert await stack.balance(player, "EUR") == "179.10"
    assert (await stack.payment(refunded))["refundable_amount"] == "0.00"

    lost = await open_dispute(stack, charged_back, "100.00")
    opened = await wait_dispute(stack, lost, "opened")
    assert (opened["currency"], opened["held"], opened["shortfall"]) == ("USD", "100.00", "0.00"), opened
    assert await stack.balance(player, "EUR") == "89.55"
    await resolve_dispute(stack, lost, "lost")
    await wait_dispute(stack, lost, "lost")
    assert await stack.balance(player, "EUR") == "89.55"

    kept = await open_dispute(stack, won, "40.00")  # 35.82 EUR held while it is open
    await wait_dispute(stack, kept, "opened")
    assert await stack.balance(player, "EUR") == "53.73"
    await resolve_dispute(stack, kept, "won")
    await wait_dispute(stack, kept, "won")
    assert await stack.balance(player, "EUR") == "89.55"
    assert await stack.balance(player, "USD") == "0.00"

    # Only the deposit still held converted moves the FX accounts: the others gave their margin back too.
    moved = {account: await posted(stack, account) - before for account, before in fx_before.items()}
    assert moved == {"house:fx:USD": 10000, "house:fx:EUR": -9000, "house:fx_margin:EUR": 45}, moved
    await stack.check_invariants()
