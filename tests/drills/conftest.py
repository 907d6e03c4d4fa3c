"""Failure drills (`-m drill`): each breaks a real stack on purpose — kills the worker, restarts Temporal or
PostgreSQL, storms the webhook endpoint, takes a PSP down — and then checks that no money was lost or made up.
The harness is in tests/drills/harness.py; the PostgreSQL cluster here is private to the drills, so restarting it
disturbs no other test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processes import PostgresServer, private_postgres


@pytest.fixture(scope="session")
def drill_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the drills' own (initdb into a temporary directory, a free port); deleted at the
    end of the session."""
    with private_postgres() as server:
        yield server
