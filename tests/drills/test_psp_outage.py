"""Drill 5: one PSP (the `card` acquirer) goes down for part of the run. Card deposits fail over to `card_b`
(never charged twice), card payouts wait for their PSP to come back and then go out; nothing is lost."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.drills.harness import Workload, open_drill
from tests.processes import PostgresServer

# No scenario whose end depends on when the PSP answers a status look-up (no_webhook, lost): during the outage
# those rightly go to review (`psp_status_unknown`), which an exact expectation cannot say in advance.
OUTAGE_MIX = [
    ("card", "approve", 45), ("ewallet", "approve", 20), ("card", "challenge", 10), ("card", "duplicate_webhook", 5),
    ("card", "flaky", 5), ("card", "decline", 5), ("ewallet", "out_of_order", 5), ("crypto", "approve", 5),
]


@pytest.mark.drill
async def test_card_psp_down_for_part_of_the_run(drill_postgres: PostgresServer, tmp_path: Path) -> None:
    async with open_drill(drill_postgres, tmp_path) as drill:
        load = Workload(drill, players=16, deposits=64, payouts=24, rounds=32, concurrency=8, seed=5,
                        deposit_mix=OUTAGE_MIX)
        load.start()
        await load.until(lambda: load.deposits_started >= 12, "12 deposits started")
        # Down from the deposits well into the payouts.
        await drill.psp_down("card", seconds=5.0, until=lambda: load.until(lambda: load.payouts_started >= 6,
                                                                            "6 payouts started", timeout=90))
        await drill.verify(load)
        failed_over = [d for d in load.deposits if d.final and any(a.startswith("card: failover")
                                                                    for a in d.final.attempts)]
        print(f"card deposits failed over to card_b: {len(failed_over)}")
        assert failed_over, "no deposit met the outage: the drill missed its aim"
        assert all(d.final.psp == "card_b" for d in failed_over if d.final.status == "credited"), failed_over
        card_payouts = Counter(f"{p.final.method} at {p.final.psp}" + (" (waited)" if p.final.deferred_until else "")
                               for p in load.payouts if p.final and p.final.method == "card")
        print(f"card payouts: {dict(card_payouts)}")
