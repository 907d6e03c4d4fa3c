"""The hand-written migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, insert, inspect, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from entrypoints.migrate import alembic_config, all_tables, upgrade
from ledger.models import ledger_accounts
from payloop.db import utcnow


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, all_tables())


async def test_migrated_schema_matches_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert diff == []
    assert {"alembic_version", "ledger_accounts", "ledger_transfers", "players", "player_deposit_limits",
            "idempotency_keys", "webhook_events", "audit_log", "payments", "refunds", "disputes", "payouts",
            "psp_fees"} <= tables


async def test_upgrade_is_idempotent(fresh_db: Any, engine: AsyncEngine) -> None:
    await upgrade(fresh_db.url, schema=fresh_db.schema)
    async with engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_database_refuses_a_player_overdraft(engine: AsyncEngine) -> None:
    # The CHECK constraint is the last line of defence, independent of the service code.
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            insert(ledger_accounts).values(
                id="player:p1:EUR",
                currency="EUR",
                kind="player",
                owner="p1",
                floor=0,
                created_at=now,
                updated_at=now,
            )
        )
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                update(ledger_accounts).where(ledger_accounts.c.id == "player:p1:EUR").values(posted_balance=-1)
            )
