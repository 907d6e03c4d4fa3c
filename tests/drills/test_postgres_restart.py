"""Drill 3: PostgreSQL (the ledger and every store) is restarted in the middle of a run. While it is down the API
answers 503 problem+json with Retry-After — never 500 — the PSPs' webhooks are refused with 503 and redelivered,
and the worker's activities fail and retry; afterwards everything finishes exactly once."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from api.webhook_inbox import WebhookInbox
from tests.drills.harness import Workload, open_drill
from tests.processes import PostgresServer

DATABASE_DOWN = {503}


@pytest.mark.drill
async def test_postgres_restarted_mid_run(drill_postgres: PostgresServer, tmp_path: Path) -> None:
    async with open_drill(drill_postgres, tmp_path) as drill:
        load = Workload(drill, players=16, deposits=64, payouts=20, rounds=64, concurrency=8, seed=3)
        load.start()
        await load.until(lambda: load.deposits_done >= 20, "20 deposits finished")
        player = next(iter(load.players))
        round_id = f"r-{uuid.uuid4().hex[:8]}"

        async def while_down() -> None:
            api = drill.api
            await load.probe_deposit("deposit init while PostgreSQL is down", DATABASE_DOWN)
            await drill.probe("balance", api.get(f"/v1/wallet/{player}/balance"), DATABASE_DOWN)
            await drill.probe("transactions", api.get(f"/v1/wallet/{player}/transactions"), DATABASE_DOWN)
            await drill.probe("bet", api.post("/v1/wallet/debit", json={
                "player_id": player, "currency": "EUR", "amount": "1.00", "round_id": round_id,
                "game_id": "drill-slots", "transaction_id": f"bet-{round_id}"}), DATABASE_DOWN)
            await drill.probe("payout init", api.post("/v1/payouts/init", json={
                "amount": "1.00", "currency": "EUR", "player_id": player},
                headers={"Idempotency-Key": uuid.uuid4().hex}), DATABASE_DOWN)
            await drill.probe("player profile", api.get(f"/v1/players/{player}"), DATABASE_DOWN)
            await drill.probe("readiness", api.get("/readyz"), DATABASE_DOWN)

        await drill.restart_postgres(mode="fast", down_seconds=5.0, while_down=while_down)
        await drill.verify(load)
        # PSPs that delivered a webhook during the outage were told to come back (503), and did (verify: no 500,
        # none given up, every event in the inbox).
        refused = [d for d in drill.sandbox_app.state.sandbox.webhooks.log if d["status_code"] == 503]
        print(f"webhook deliveries refused with 503 while PostgreSQL was down: {len(refused)}")


@pytest.mark.drill
async def test_database_lost_between_storing_and_marking_webhooks(
    drill_postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The narrow window a restart only sometimes hits, hit on purpose: the connection drops as the inbox marks a
    just-signalled event, for the first events of the run. The API answers 503, the PSP redelivers, and every
    event must still end signalled or dead-lettered."""
    mark = WebhookInbox.mark
    dropped: set[str] = set()

    async def mark_after_a_dropped_connection(self: WebhookInbox, psp: str, event_id: str, state: str,
                                              now: datetime, reason: str | None = None) -> None:
        if len(dropped) < 5 and event_id not in dropped:
            dropped.add(event_id)
            raise DBAPIError("UPDATE webhook_events", {}, ConnectionResetError("connection reset by peer"),
                             connection_invalidated=True)
        await mark(self, psp, event_id, state, now, reason)

    monkeypatch.setattr(WebhookInbox, "mark", mark_after_a_dropped_connection)
    async with open_drill(drill_postgres, tmp_path) as drill:
        load = Workload(drill, players=4, deposits=12, payouts=4, rounds=8, concurrency=4, seed=7)
        load.start()
        await drill.verify(load)
        assert len(dropped) == 5
