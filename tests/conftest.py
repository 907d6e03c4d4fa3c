"""Shared fixtures: a fresh, migrated database per test on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
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


class FreshDatabase:
    """A migrated database of its own: a SQLite file, or a PostgreSQL schema that is dropped afterwards."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self.schema: str | None = None
        self.url = ""

    async def __aenter__(self) -> "FreshDatabase":
        if self.backend == "sqlite":
            self.url = f"sqlite+aiosqlite:///{self.workdir / f'ledger-{uuid.uuid4().hex[:8]}.db'}"
        else:
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
