"""The hand-written migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
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


def _alembic(connection: Connection, step: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, step)(config, revision)


async def test_webhook_event_kinds_migrate_old_rows_and_come_off_again(engine: AsyncEngine) -> None:
    before = ScriptDirectory.from_config(alembic_config()).get_revision("0012_webhook_event_kinds").down_revision
    old_row = text(
        "INSERT INTO webhook_events (psp, event_id, payment_id, psp_reference, status, amount_minor, currency, state,"
        " received_at, updated_at) VALUES ('card', :event_id, :reference, 'card_1', 'captured', 5000, 'EUR',"
        " 'signalled', :now, :now)"
    )
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "downgrade", before)
    async with engine.begin() as conn:
        columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("webhook_events")})
        assert not {"kind", "fee_minor", "dispute_id", "reason_code"} & columns
        for event_id, reference in [("evt_1", "pay_" + "a" * 24), ("evt_2", "po_" + "b" * 24), ("evt_3", "pox_1")]:
            await conn.execute(old_row, {"event_id": event_id, "reference": reference, "now": utcnow()})
        await conn.run_sync(_alembic, "upgrade", "head")
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT event_id, kind, fee_minor, dispute_id, reason_code FROM webhook_events ORDER BY event_id"))).all()
    # A payout's event (our payout ids are po_…) says so; every other old event was a payment's.
    assert [tuple(r) for r in rows] == [
        ("evt_1", "payment", None, None, None), ("evt_2", "payout", None, None, None),
        ("evt_3", "payment", None, None, None),
    ]


async def test_reconciliation_comes_off_and_on_again_keeping_payments(engine: AsyncEngine) -> None:
    reconciliation_tables = {"recon_runs", "recon_lines", "recon_settlements", "recon_cases"}
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "downgrade", "0012_webhook_event_kinds")
    async with engine.begin() as conn:
        assert not reconciliation_tables & await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        await conn.execute(text(
            "INSERT INTO payments (payment_id, client_id, player_id, method, currency, amount_minor, status,"
            " created_at, updated_at, captured_minor) VALUES ('pay_1', 'c1', 'p1', 'card', 'EUR', 500, 'credited',"
            " :now, :now, 500)"), {"now": utcnow()})
        await conn.run_sync(_alembic, "upgrade", "head")
    async with engine.connect() as conn:
        # A payment captured before the column existed keeps NULL: reconciliation reads its created_at instead.
        assert (await conn.execute(text("SELECT captured_at FROM payments"))).scalar_one() is None
        assert await conn.run_sync(_diff) == []
    # The payments table kept its constraints through SQLite's batch copy.
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE payments SET refunded_minor = 600"))
