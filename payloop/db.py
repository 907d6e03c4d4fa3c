"""The one database: metadata shared by the ledger and the API stores, and the async engine factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import DateTime, TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, schema: str | None = None, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """An async engine for PostgreSQL (asyncpg) or SQLite (aiosqlite).

    `schema` pins PostgreSQL's search_path (tests give each test its own schema). `pre_ping` tests each
    PostgreSQL connection with a round trip as it leaves the pool, so one left dead by a database restart is
    replaced instead of failing its first statement; without it, that first failure discards every pooled
    connection opened before it.
    """
    if is_sqlite(url):
        # The plain AsyncEngine made here is dropped at once; the subclass proxies its Engine instead.
        engine = _SQLiteEngine(create_async_engine(url, connect_args={"timeout": 30}).sync_engine)
        _serialize_sqlite_writers(engine)
        return engine
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping, connect_args=connect_args
    )


# Execution option set by _SQLiteEngine.begin(): the connection will write, so it begins with BEGIN IMMEDIATE.
_SQLITE_WRITER = "payloop_sqlite_writer"


class _SQLiteEngine(AsyncEngine):
    """An AsyncEngine whose `begin()` transactions take SQLite's write lock up front; `connect()` ones read.

    Every write in payloop goes through `engine.begin()` and every read through `engine.connect()`, whose
    transaction SQLAlchemy begins on the first statement. The "begin" event cannot tell those two apart, so
    `begin()` marks its connection with an execution option before beginning, and the event reads it.
    """

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self.connect() as conn:
            await conn.execution_options(**{_SQLITE_WRITER: True})
            async with conn.begin():
                yield conn

    def execution_options(self, **opt: Any) -> AsyncEngine:
        # AsyncEngine.execution_options builds a plain AsyncEngine, which would begin every transaction deferred.
        return _SQLiteEngine(self.sync_engine.execution_options(**opt))


def _serialize_sqlite_writers(engine: AsyncEngine) -> None:
    # SQLite allows one writer. A deferred transaction that later upgrades to a write lock can fail at once
    # with "database is locked" (the busy handler cannot help), so a write transaction (`engine.begin()`) takes
    # the write lock up front with BEGIN IMMEDIATE and waits its turn for up to `timeout` seconds. A read
    # (`engine.connect()`) begins deferred: under WAL it reads the last committed snapshot without waiting for
    # the writer, in this process and in the others (API, worker).
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_SQLITE_WRITER) else "BEGIN")


async def insert_if_missing(conn: AsyncConnection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on either backend; True when this call inserted the row."""
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    result = await conn.execute(stmt)
    return result.rowcount == 1


async def upsert_newer(
    conn: AsyncConnection, table: Table, values: dict[str, Any], *, clock: str,
    overrides: Callable[[Any], dict[str, Any]] | None = None,
) -> None:
    """Insert `values`, or update the row with the same primary key unless the stored `clock` column is newer.

    Equal clocks update (the same write again changes nothing). An update writes every non-key column of `values`;
    `overrides(excluded)` replaces some of them by SQL expressions (of the stored row's columns and of `excluded`,
    the values offered).
    """
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert_(table).values(**values)
    keys = [column.name for column in table.primary_key.columns]
    updates = {name: stmt.excluded[name] for name in values if name not in keys}
    updates |= overrides(stmt.excluded) if overrides else {}
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=keys, set_=updates, where=table.c[clock] <= stmt.excluded[clock]
    ))



class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, so tz is re-attached on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
