"""Drill 6: everything at once, at size — 500+ deposits (those in review decided by the drill), 150 payouts,
2,000 game rounds, and partial refunds and disputes of credited deposits, while the worker is killed three times
(during PSP calls, ledger posts and webhook waits), PostgreSQL crashes and restarts, the Temporal dev server
restarts, the card PSP goes down for a while, and every webhook arrives three times, out of order. Its figures
(duration, outcomes, restarts, API answers, webhooks) are printed (`pytest -s`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.drills.harness import PSP_ACTIVITIES, Workload, open_drill
from tests.processes import PostgresServer

DEPOSITS, PAYOUTS, ROUNDS = 500, 150, 2000
# Of the credited card and e-wallet deposits: partly refunded, partly disputed.
REFUND_SHARE, DISPUTE_SHARE = 0.10, 0.05


@pytest.mark.drill
async def test_everything_at_once(drill_postgres: PostgresServer, tmp_path: Path) -> None:
    async with open_drill(drill_postgres, tmp_path, webhook_copies=3, webhook_jitter_seconds=0.5,
                          slow_seconds=2.0) as drill:
        load = Workload(drill, players=100, deposits=DEPOSITS, payouts=PAYOUTS, rounds=ROUNDS, concurrency=8,
                        seed=6, refund_share=REFUND_SHARE, dispute_share=DISPUTE_SHARE)
        load.start()

        def started(share: float) -> bool:
            return load.deposits_started >= share * DEPOSITS

        def done(share: float) -> bool:
            return load.deposits_done >= share * DEPOSITS

        async def card_outage() -> None:
            await load.until(lambda: started(0.25), "a quarter of the deposits started", timeout=300)
            await drill.psp_down("card", seconds=15.0)

        outage = asyncio.create_task(card_outage())

        await load.until(lambda: started(0.1), "10 % of the deposits started")
        await drill.set_psp_mode("ewallet", "slow")
        await drill.kill_worker_during(PSP_ACTIVITIES, "PSP calls")
        await drill.set_psp_mode("ewallet", "up")

        await load.until(lambda: done(0.35), "35 % of the deposits finished", timeout=300)

        async def while_postgres_is_down() -> None:
            await load.probe_deposit("deposit init while PostgreSQL is down", {503})
            player = next(iter(load.players))
            await drill.probe("balance while PostgreSQL is down", drill.api.get(f"/v1/wallet/{player}/balance"),
                              {503})

        await drill.restart_postgres(mode="immediate", down_seconds=5.0, while_down=while_postgres_is_down)

        await load.until(lambda: done(0.5), "half of the deposits finished", timeout=300)
        await drill.kill_worker_during_ledger_posts()

        await load.until(lambda: done(0.65), "65 % of the deposits finished", timeout=300)
        await drill.restart_temporal(down_seconds=5.0)

        await load.until(lambda: started(0.9), "90 % of the deposits started", timeout=300)
        waiting = await drill.waiting_workflow_ids()
        await drill.kill_worker(why=f"while {len(waiting)} workflows wait for a webhook, timer or signal")
        await outage

        figures = await drill.verify(load)
        assert sum(figures.deposits.values()) >= DEPOSITS and sum(figures.payouts.values()) >= PAYOUTS, figures
        assert figures.rounds >= ROUNDS, figures
        # Each kind of ending happened: every review decision, a refund made and one declined, a dispute won and
        # one lost.
        assert len(figures.reviews) == 3, figures.reviews
        assert {"succeeded", "failed"} <= figures.refunds.keys(), figures.refunds
        assert {"won", "lost"} <= figures.disputes.keys(), figures.disputes
        assert (drill.chaos.worker_kills, drill.chaos.postgres_restarts, drill.chaos.temporal_restarts) == (3, 1, 1)
