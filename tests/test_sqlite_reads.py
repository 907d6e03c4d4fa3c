"""SQLite: reads (`engine.connect()`) do not wait for the writer; writes (`engine.begin()`) still take turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payloop.db import create_engine

READ_WAIT_SECONDS_MAX = 2


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'locks.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE numbers (n INTEGER NOT NULL)"))
        await conn.execute(text("INSERT INTO numbers VALUES (1)"))
    yield engine
    await engine.dispose()


async def _numbers(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT n FROM numbers ORDER BY n"))).scalars())


async def test_a_read_does_not_wait_for_an_open_write_and_sees_only_what_is_committed(
    sqlite_engine: AsyncEngine,
) -> None:
    async with sqlite_engine.begin() as writer:
        await writer.execute(text("INSERT INTO numbers VALUES (2)"))
        seen_during_write = await asyncio.wait_for(_numbers(sqlite_engine), READ_WAIT_SECONDS_MAX)
    assert seen_during_write == [1]
    assert await _numbers(sqlite_engine) == [1, 2]


@pytest.mark.parametrize("writer_engine", [
    pytest.param(lambda engine: engine, id="engine"),
    # Ledger-style engines derived with execution_options() must keep taking the write lock up front.
    pytest.param(lambda engine: engine.execution_options(logging_token="second"), id="execution_options"),
])
async def test_write_transactions_still_take_turns(
    sqlite_engine: AsyncEngine, writer_engine: Callable[[AsyncEngine], AsyncEngine],
) -> None:
    async def second_write() -> list[int]:
        async with writer_engine(sqlite_engine).begin() as conn:
            # Began after the first committed, so it sees the first's row.
            seen = list((await conn.execute(text("SELECT n FROM numbers ORDER BY n"))).scalars())
            await conn.execute(text("INSERT INTO numbers VALUES (3)"))
        return seen

    async with sqlite_engine.begin() as first:
        await first.execute(text("INSERT INTO numbers VALUES (2)"))
        second = asyncio.create_task(second_write())
        await asyncio.sleep(0.5)
        assert not second.done(), "the second write transaction began while the first held the write lock"
    assert await asyncio.wait_for(second, 10) == [1, 2]
    assert await _numbers(sqlite_engine) == [1, 2, 3]
