"""Schema migrations: Alembic `upgrade head`, run programmatically on an async engine (no alembic.ini)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, MetaData

# Every module that defines tables of the one database: importing them registers their tables on payloop.db's
# metadata, which Alembic compares the migrations with (an entry point may import every package).
import api.models  # noqa: F401
import events.models  # noqa: F401
import incidents.models  # noqa: F401
import ledger.fx  # noqa: F401
import ledger.games  # noqa: F401
import ledger.models  # noqa: F401
import payloop.alerts  # noqa: F401
import players.audit  # noqa: F401
import players.controls  # noqa: F401
import players.notifications  # noqa: F401
import players.wallets  # noqa: F401
import psp.inbox  # noqa: F401
import psp.routing.health  # noqa: F401
import psp.routing.switches  # noqa: F401
import risk.models  # noqa: F401
from payloop.db import create_engine, metadata

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def all_tables() -> MetaData:
    """The metadata with every table of the one database: the ledger, player controls, the API's stores."""
    return metadata


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def upgrade(url: str, schema: str | None = None, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision`; on PostgreSQL, inside `schema` (search_path) when given."""
    engine = create_engine(url, schema=schema, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_upgrade, revision)
    finally:
        await engine.dispose()


def _run_upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    # env.py picks the connection up from here, so alembic_version lands in the same database/schema.
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
