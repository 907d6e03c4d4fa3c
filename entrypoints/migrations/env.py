"""Alembic environment. Runs only on a connection handed over by `entrypoints.migrate` (config.attributes)."""

from __future__ import annotations

from alembic import context

from entrypoints.migrate import all_tables

target_metadata = all_tables()


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through entrypoints.migrate.upgrade(url), which supplies the connection")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
