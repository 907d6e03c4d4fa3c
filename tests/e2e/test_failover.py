"""Failover between two card acquirers: card goes down mid-run → deposits go through card_b; card's circuit opens
within a bounded number of failures; card recovers → a half-open probe → traffic returns to card.

The figures printed (run with -s) are measurements for the docs, never assertions on time."""

from __future__ import annotations

import time

from psp.routing import load_routing
from psp.routing.health import HealthStore
from tests.e2e.conftest import Stack, eventually, new_player


async def card_deposit(stack: Stack) -> tuple[dict, float]:
    started = time.monotonic()
    init = await stack.deposit(method="card", amount="20.00", player_id=new_player())
    payment = await stack.wait_final(init["payment_id"])
    return payment, time.monotonic() - started


async def test_card_down_fails_over_to_card_b_then_returns(stack: Stack) -> None:
    health = HealthStore(stack.engine, load_routing(stack.settings))
    thresholds = health.config.thresholds("card")
    await stack.psp_mode("card", "up")
    await stack.psp_mode("card_b", "up")
    before, before_s = await card_deposit(stack)
    assert before["psp"] == "card" and before["status"] == "credited"

    await stack.sandbox.post("/control/card", json={"mode": "down"})
    down_at = time.monotonic()
    try:
        first, first_s = await card_deposit(stack)
        assert first["status"] == "credited" and first["psp"] == "card_b"
        failover_s = time.monotonic() - down_at
        # Opened within that one deposit's retries (and maybe already half-open: open_seconds is short here).
        assert (await health.states())["card"] in ("open", "half_open")
        failures = (await health.snapshot())["card"]
        assert failures.samples <= thresholds.min_samples + 4  # bounded: the threshold plus one deposit's retries
        after_open, after_open_s = await card_deposit(stack)
        assert after_open["psp"] == "card_b"
    finally:
        await stack.sandbox.post("/control/card", json={"mode": "up"})  # recovers, its health kept
    # After open_seconds the circuit lets a probe through; the probe succeeds and traffic returns to card.
    returned = await eventually(lambda: card_deposit(stack), lambda result: result[0]["psp"] == "card",
                                timeout=thresholds.open_seconds + 30, interval=0.5)
    assert (await health.states())["card"] == "closed"
    print(f"\nfailover: card down → first deposit credited via card_b in {failover_s:.2f} s "
          f"(that deposit {first_s:.2f} s; before {before_s:.2f} s; with the circuit open {after_open_s:.2f} s); "
          f"circuit: min_samples={thresholds.min_samples}, failure_rate={thresholds.failure_rate}, "
          f"open_seconds={thresholds.open_seconds}; back on card after recovery in "
          f"{returned[1]:.2f} s for the probing deposit")
    await stack.psp_mode("card", "up")
    await stack.check_invariants()
