"""The ledger tests' `ledger`: a Ledger on the test's fresh database (tests/conftest.py: SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import Ledger


@pytest.fixture
def ledger(engine: AsyncEngine) -> Ledger:
    return Ledger(engine)
