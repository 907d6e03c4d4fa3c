"""Migration 0014 (the risk engine's tables): on and off again on both backends, keeping players, whose first-seen
moment is backfilled from updated_at."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from entrypoints.migrate import alembic_config

RISK_TABLES = {"risk_observations", "risk_decisions", "risk_cases", "risk_case_events"}


def _alembic(connection: Connection, step: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, step)(config, revision)


async def test_risk_comes_off_and_on_again_keeping_players(engine: AsyncEngine) -> None:
    seen = datetime(2026, 11, 1, 12, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "downgrade", "0013_reconciliation")
    async with engine.begin() as conn:
        assert not RISK_TABLES & await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("players")})
        assert "created_at" not in columns
        await conn.execute(text("INSERT INTO players (id, kyc_status, self_excluded_indefinitely, closed, updated_at)"
                                " VALUES ('p1', 'verified', false, false, :at)"), {"at": seen})
        await conn.execute(text("INSERT INTO player_deposit_limits (player_id, currency, period, amount_minor,"
                                " updated_at) VALUES ('p1', 'EUR', 'day', 100, :at)"), {"at": seen})
        await conn.run_sync(_alembic, "upgrade", "head")
    async with engine.connect() as conn:
        assert RISK_TABLES <= await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        row = (await conn.execute(text("SELECT kyc_status, created_at FROM players WHERE id = 'p1'"))).one()
    assert row.kyc_status == "verified"
    created_at = row.created_at if isinstance(row.created_at, datetime) else datetime.fromisoformat(row.created_at)
    assert created_at.replace(tzinfo=UTC) == seen
