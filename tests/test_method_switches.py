"""psp/routing/switches.py on SQLite and PostgreSQL: the in-process cache of the methods switched off that deposit
init reads — another process's switch is seen once the TTL has run out, this process's own at once (`forget`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from psp.routing import switches
from tests.incidents.helpers import NOW


async def nothing_to_audit(_conn: object) -> None:
    return None


async def test_switches_are_read_at_most_once_per_ttl_and_at_once_after_forget(engine: AsyncEngine) -> None:
    clock = [100.0]
    cached = switches.DisabledMethods(engine, ttl_seconds=5, clock=lambda: clock[0])
    assert await cached.get() == frozenset()

    await switches.switch(engine, "ewallet", False, "ops", NOW, on_switched=nothing_to_audit)
    clock[0] += 4.9
    assert await cached.get() == frozenset()  # switched by "another process": not seen within the TTL
    clock[0] += 0.1
    assert await cached.get() == {"ewallet"}  # ... and seen once it has run out

    await switches.switch(engine, "ewallet", True, "ops", NOW, on_switched=nothing_to_audit)
    assert await cached.get() == {"ewallet"}
    cached.forget()  # switched through this process
    assert await cached.get() == frozenset()
