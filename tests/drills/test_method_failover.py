"""Drill 7: every method keeps working with one of its PSPs down. The first PSP of each method (card, ewallet,
paybybank, crypto) is down (sandbox control) for the whole run: deposits of all four methods fail over to the
method's second PSP (card_b, ewallet_b, paybybank_b, crypto_b) and players' payouts go out there; nothing is lost
or made up. Then the closed loop: players who deposited at the first PSPs while they were up withdraw after the
first PSPs went down again, and their payouts go out through the method's other PSP."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.drills.harness import DrillStack, Workload, open_drill
from tests.e2e.conftest import Stack, eventually
from tests.processes import PostgresServer

FIRST_AND_SECOND = {"card": ("card", "card_b"), "ewallet": ("ewallet", "ewallet_b"),
                    "bank_transfer": ("paybybank", "paybybank_b"), "crypto": ("crypto", "crypto_b")}
EVERY_METHOD_MIX = [("card", "approve", 30), ("card", "challenge", 10), ("ewallet", "approve", 25),
                    ("bank_transfer", "approve", 20), ("crypto", "approve", 15)]


@pytest.mark.drill
async def test_every_method_keeps_working_with_its_first_psp_down(
    drill_postgres: PostgresServer, tmp_path: Path,
) -> None:
    async with open_drill(drill_postgres, tmp_path) as drill:
        for first, _second in FIRST_AND_SECOND.values():
            await drill.set_psp_mode(first, "down")
        drill.log("the first PSP of every method is down")
        load = Workload(drill, players=12, deposits=36, payouts=12, rounds=12, concurrency=12, seed=7,
                        deposit_mix=EVERY_METHOD_MIX, payout_mix=[("approve", 1)])
        load.start()
        await drill.verify(load)
        for method, (first, second) in FIRST_AND_SECOND.items():
            credited = [d.final for d in load.deposits if d.method == method and d.final]
            assert credited and all(f.status == "credited" and f.psp == second for f in credited), (method, credited)
        # The workload's payouts name no country, so bank transfers (paid out in their countries only) go to the
        # fallback method; the closed loop below pays out to every method, bank transfers included.
        paid = [p.final for p in load.payouts if p.final]
        assert paid and all(p.status == "paid" and p.psp in {s for _, s in FIRST_AND_SECOND.values()} for p in paid)

        await closed_loop_through_the_other_psp(drill)
        await drill.stack.check_invariants()


async def closed_loop_through_the_other_psp(drill: DrillStack) -> None:
    """The first PSPs back up (their health forgotten): a player per method deposits there; the first PSPs go down
    again; each player's payout goes back to their method, through its other PSP."""
    stack = drill.stack
    players: dict[str, str] = {}
    for method, (first, _second) in FIRST_AND_SECOND.items():
        await stack.psp_mode(first, "up")
        player = players[method] = f"loop-{uuid.uuid4().hex[:10]}"
        await call(stack, "PUT", f"/v1/ops/players/{player}/kyc", {"status": "verified"})
        init = await stack.deposit(method=method, amount="50.00", player_id=player)
        assert init["psp"] == first, init
        if method == "bank_transfer":
            assert (await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})).status_code == 303
        assert (await stack.wait_final(init["payment_id"], timeout=60))["status"] == "credited"
        round_id = f"r-{uuid.uuid4().hex[:10]}"
        for path, kind in (("debit", "bet"), ("credit", "win")):  # played through once: the AML turnover
            await call(stack, "POST", f"/v1/wallet/{path}", {
                "player_id": player, "currency": "EUR", "amount": "50.00", "round_id": round_id,
                "game_id": "slots-1", "transaction_id": f"{kind}-{round_id}"})
    for first, _second in FIRST_AND_SECOND.values():
        await drill.set_psp_mode(first, "down")
    drill.log("the first PSPs are down again: closed-loop payouts")
    payout_ids = {}
    for method, player in players.items():
        answer = await call(stack, "POST", "/v1/payouts/init", {
            "amount": "30.00", "currency": "EUR", "player_id": player, "meta": {"country": "DE"}}, expect=201)
        payout_ids[method] = answer["payout_id"]
    for method, payout_id in payout_ids.items():
        final = await eventually(lambda: call(stack, "GET", f"/v1/payouts/{payout_id}"),  # noqa: B023
                                 lambda p: p["status"] in {"paid", "failed", "rejected", "cancelled"}, timeout=90)
        assert (final["status"], final["method"], final["psp"]) == ("paid", method, FIRST_AND_SECOND[method][1]), final
        assert await stack.balance(players[method]) == "20.00"


async def call(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None,
               expect: int = 200) -> dict[str, Any]:
    response = await stack.api.request(method, path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == expect, response.text
    return response.json()
