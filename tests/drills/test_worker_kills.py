"""Drill 1: the worker is killed (SIGKILL) again and again during a run of deposits, payouts and game rounds —
while PSP calls are in flight, while ledger posts are inside their transaction, while payments wait for their
webhook — and a new worker process is started each time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.drills.harness import (
    PSP_ACTIVITIES,
    Workload,
    open_drill,
    retried_activities,
)
from tests.processes import PostgresServer


@pytest.mark.drill
async def test_worker_killed_during_psp_calls_ledger_posts_and_webhook_waits(
    drill_postgres: PostgresServer, tmp_path: Path
) -> None:
    async with open_drill(drill_postgres, tmp_path, slow_seconds=2.0) as drill:
        load = Workload(drill, players=16, deposits=64, payouts=20, rounds=64, concurrency=8, seed=1)
        load.start()

        # 1. PSP calls: the card PSP answers slowly for a moment, so creates and look-ups are in flight.
        await load.until(lambda: load.deposits_started >= 10, "10 deposits started")
        await drill.set_psp_mode("card", "slow")
        await drill.kill_worker_during(PSP_ACTIVITIES, "PSP calls")
        await drill.set_psp_mode("card", "up")

        # 2. Ledger posts: credits and payout holds block on a row lock inside their transaction.
        await load.until(lambda: load.deposits_done >= 20, "20 deposits finished")
        assert await drill.kill_worker_during_ledger_posts() >= 2

        # 3. Webhook waits: payments accepted by their PSP, waiting for its webhook (or a timer).
        await load.until(lambda: load.deposits_started >= 45, "45 deposits started")
        waiting = await drill.waiting_workflow_ids()
        await drill.kill_worker(why=f"while {len(waiting)} workflows wait for a webhook, timer or signal")

        figures = await drill.verify(load)
        ids = [f"deposit-{d.payment_id}" for d in load.deposits if d.payment_id]
        ids += [f"withdrawal-{p.payout_id}" for p in load.payouts if p.payout_id]
        retried = await retried_activities(drill.client, ids)
        print(f"retried activities: {dict(retried)}")
        assert drill.chaos.worker_kills == 3 and drill.worker.starts == 4, figures
        # The PSP-call kill landed where it was aimed: the killed attempts were retried (the ledger-post kill was
        # aimed by the row lock: transactions were inside a post when the worker died).
        assert set(retried) & PSP_ACTIVITIES, retried
