"""Drill 4: a webhook storm. The sandbox PSPs send every webhook three times, each copy on its own after a random
delay — concurrently and out of order (a crypto payment's confirmations, a late `authorized` after `captured`) —
and every payment still moves money exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from api.models import webhook_deliveries
from tests.drills.harness import Workload, open_drill
from tests.processes import PostgresServer

COPIES = 3
# Scenarios rich in webhooks: crypto sends one per confirmation, out_of_order a stale one, duplicate_webhook two.
STORM_MIX = [
    ("card", "approve", 25), ("ewallet", "approve", 20), ("crypto", "approve", 15), ("ewallet", "out_of_order", 10),
    ("card", "duplicate_webhook", 10), ("card", "challenge", 10), ("card", "decline", 5), ("card", "flaky", 5),
]


@pytest.mark.drill
async def test_every_webhook_three_times_out_of_order(drill_postgres: PostgresServer, tmp_path: Path) -> None:
    async with open_drill(drill_postgres, tmp_path, webhook_copies=COPIES, webhook_jitter_seconds=0.5) as drill:
        load = Workload(drill, players=16, deposits=64, payouts=24, rounds=32, concurrency=8, seed=4,
                        deposit_mix=STORM_MIX)
        load.start()
        figures = await drill.verify(load)
        # Every event reached the API three times (six for `duplicate_webhook`, which sends its event twice); one
        # delivery was taken, the others were told "duplicate".
        copies = figures.webhooks["delivered_copies"]
        assert copies and all(n and n % COPIES == 0 for n in copies), figures.webhooks
        async with drill.engine.connect() as conn:
            outcomes = dict((await conn.execute(
                sa.select(webhook_deliveries.c.outcome, sa.func.count()).group_by(webhook_deliveries.c.outcome)
            )).all())
        print(f"webhook delivery log: {outcomes}")
        assert outcomes.get("duplicate", 0) >= (COPIES - 1) * figures.webhooks["events"], outcomes
