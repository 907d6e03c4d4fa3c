"""Shared fixtures: a fresh, migrated database per test on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from entrypoints.migrate import upgrade
from payloop.db import create_engine

PG_URL_ENV = "PAYLOOP_TEST_DATABASE_URL"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def postgres_url() -> str:
    url = os.environ.get(PG_URL_ENV, "")
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_URL_ENV} must be set in CI: PostgreSQL is never skipped there")
        pytest.skip(f"{PG_URL_ENV} is not set; PostgreSQL tests need it (CI always sets it)")
    return url


REDIS_URL_ENV = "PAYLOOP_TEST_REDIS_URL"


def redis_url() -> str:
    """The Redis of the shared rate limiter's tests; like PostgreSQL, never skipped in CI."""
    url = os.environ.get(REDIS_URL_ENV, "")
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{REDIS_URL_ENV} must be set in CI: Redis is never skipped there")
        pytest.skip(f"{REDIS_URL_ENV} is not set; the shared rate-limiter tests need Redis (CI always sets it)")
    return url


# SQLite: the migrations run once per session, into this template, and each fresh database is a copy of it (a
# copy takes about a millisecond, the migrations about 0.15 s, and over 250 tests open a fresh SQLite database).
_SQLITE_TEMPLATE_DIR = tempfile.TemporaryDirectory(prefix="payloop-sqlite-template-")
_SQLITE_TEMPLATE = Path(_SQLITE_TEMPLATE_DIR.name) / "migrated.db"


async def _copy_of_migrated_sqlite(target: Path) -> None:
    if not _SQLITE_TEMPLATE.exists():
        # Built aside and renamed into place, so a copy never sees a half-migrated template.
        building = _SQLITE_TEMPLATE.with_name(f"building-{uuid.uuid4().hex[:8]}.db")
        await upgrade(f"sqlite+aiosqlite:///{building}")
        os.replace(building, _SQLITE_TEMPLATE)
    # SQLite's backup API: a consistent copy whatever the template's journal (WAL) holds.
    with contextlib.closing(sqlite3.connect(_SQLITE_TEMPLATE)) as source, \
            contextlib.closing(sqlite3.connect(target)) as copy:
        source.backup(copy)


class FreshDatabase:
    """A migrated database of its own: a SQLite file (a copy of the session's migrated template), or a PostgreSQL
    schema that is dropped afterwards."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self.schema: str | None = None
        self.url = ""

    async def __aenter__(self) -> "FreshDatabase":
        if self.backend == "sqlite":
            path = self.workdir / f"ledger-{uuid.uuid4().hex[:8]}.db"
            self.url = f"sqlite+aiosqlite:///{path}"
            await _copy_of_migrated_sqlite(path)
            return self
        self.url = postgres_url()
        self.schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_engine(self.url, pool_size=1)
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        await admin.dispose()
        await upgrade(self.url, schema=self.schema)
        return self

    def engine(self, pool_size: int = 10) -> AsyncEngine:
        return create_engine(self.url, schema=self.schema, pool_size=pool_size)

    async def __aexit__(self, *exc: object) -> None:
        if self.schema:
            admin = create_engine(self.url, pool_size=1)
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            await admin.dispose()


@pytest.fixture(params=BACKENDS)
async def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FreshDatabase]:
    async with FreshDatabase(request.param, tmp_path) as db:
        yield db


@pytest.fixture
async def engine(fresh_db: FreshDatabase) -> AsyncIterator[AsyncEngine]:
    eng = fresh_db.engine()
    yield eng
    await eng.dispose()
