"""Drill 2: the Temporal dev server (state in a SQLite file) is stopped in the middle of a run and started again
on the same port: workflows, timers and task queues carry on; the API answers 503 (retryable) meanwhile, never 500;
the worker process rides it out without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.drills.harness import Workload, open_drill
from tests.processes import PostgresServer


@pytest.mark.drill
async def test_temporal_restarted_mid_run(drill_postgres: PostgresServer, tmp_path: Path) -> None:
    async with open_drill(drill_postgres, tmp_path) as drill:
        load = Workload(drill, players=16, deposits=64, payouts=20, rounds=64, concurrency=8, seed=2)
        load.start()
        await load.until(lambda: load.deposits_done >= 20, "20 deposits finished")
        player = next(iter(load.players))

        async def while_down() -> None:
            # Nothing that needs Temporal can answer now (the API's client retries ~10 s first), but nothing
            # answers 500 either; the wallet lives in the database and still answers.
            paid = next(d.payment_id for d in load.deposits if d.final is not None)
            await asyncio.gather(
                load.probe_deposit("deposit init while Temporal is down", {503, 504}),
                drill.probe("payment status while Temporal is down", drill.api.get(f"/v1/payments/{paid}"), {503}),
                drill.probe("wallet balance while Temporal is down", drill.api.get(f"/v1/wallet/{player}/balance"),
                            {200}),
            )

        await drill.restart_temporal(down_seconds=4.0, while_down=while_down)
        await drill.verify(load)
        assert drill.worker.starts == 1, "the worker had to be restarted"
