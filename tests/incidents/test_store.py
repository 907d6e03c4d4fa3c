"""incidents/store.py on SQLite and PostgreSQL: a pass opens, dedupes per class and scope, updates (a timeline entry
only when figures change), resolves on clear; ops resolve and the next pass reopens; a pass applied twice changes
nothing the second time."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from incidents import store
from incidents.config import Thresholds
from incidents.detection import Condition
from incidents.models import incident_events
from ledger.errors import RecordNotFound
from tests.incidents.helpers import NOW, seconds


def failing(failed: int, ids: list[str], scope: str = "psp=card,method=card") -> Condition:
    return Condition("failed_deposits", scope, f"{failed} of 10 failed", {"failed": failed, "ended": 10},
                     payment_ids=ids, first_seen_at=NOW - seconds(60))


def kept(count: int, full: bool = False) -> dict[str, object]:
    return {store.AFFECTED_KEPT: count, store.AFFECTED_FULL: full}


async def events(engine: AsyncEngine) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(incident_events.c.incident_id, incident_events.c.kind)
                                  .order_by(incident_events.c.event_id))
        return [(row.incident_id, row.kind) for row in rows]


async def test_a_pass_opens_dedupes_updates_and_resolves(engine: AsyncEngine) -> None:
    first = await store.apply(engine, [failing(6, ["pay_1"]), failing(9, ["pay_9"], "psp=card_b,method=card")], NOW)
    assert first.opened == ["failed_deposits", "failed_deposits"]
    [card_b, card] = await store.list_incidents(engine, state="open")  # newest first; same time: id descending
    card = card if card.scope == "psp=card,method=card" else card_b
    assert card.figures_at_open == card.figures_now == {"failed": 6, "ended": 10, **kept(1)}
    assert card.first_seen_at == NOW - seconds(60)

    same = await store.apply(engine, [failing(6, ["pay_1"]), failing(9, ["pay_9"], "psp=card_b,method=card")],
                             NOW + seconds(60))
    assert (same.opened, same.updated, same.resolved) == ([], [], [])

    worse = await store.apply(engine, [failing(8, ["pay_2"]), failing(9, ["pay_9"], "psp=card_b,method=card")],
                              NOW + seconds(120))
    assert worse.updated == ["failed_deposits"]
    now = await store.get(engine, card.incident_id)
    assert now is not None and now.figures_at_open == {"failed": 6, "ended": 10, **kept(1)}
    assert now.figures_now == {"failed": 8, "ended": 10, **kept(2)} and now.updated_at == NOW + seconds(120)
    assert [(a.kind, a.object_id) for a in await store.affected(engine, card.incident_id)] == [
        ("payment", "pay_1"), ("payment", "pay_2")]

    cleared = await store.apply(engine, [failing(9, ["pay_9"], "psp=card_b,method=card")], NOW + seconds(180))
    assert cleared.resolved == ["failed_deposits"]
    resolved = await store.get(engine, card.incident_id)
    assert resolved is not None and (resolved.state, resolved.resolved_by) == ("resolved", "monitor")
    # Its figures changed within timeline_update_seconds of its opening: kept current, not on its timeline.
    assert [e.kind for e in await store.timeline(engine, card.incident_id)] == ["opened", "resolved"]
    assert len(await store.list_incidents(engine, state="open")) == 1


async def test_the_same_pass_applied_twice_changes_nothing_the_second_time(engine: AsyncEngine) -> None:
    await store.apply(engine, [failing(6, ["pay_1"])], NOW)
    before = await events(engine)
    again = await store.apply(engine, [failing(6, ["pay_1"])], NOW)
    assert (again.opened, again.updated, again.resolved) == ([], [], []) and await events(engine) == before
    await store.apply(engine, [], NOW + seconds(60))
    resolved = await events(engine)
    assert (await store.apply(engine, [], NOW + seconds(60))).resolved == [] and await events(engine) == resolved


async def test_ops_resolve_and_the_next_pass_reopens_while_the_cause_holds(engine: AsyncEngine) -> None:
    await store.apply(engine, [failing(6, ["pay_1"])], NOW)
    [incident] = await store.list_incidents(engine)
    audited = []

    async def on_resolved(conn, resolved: store.Incident) -> None:  # noqa: ANN001
        audited.append(resolved.incident_id)

    done = await store.resolve(engine, incident.incident_id, "ops-client", "card_b took over", NOW + seconds(10),
                               on_resolved=on_resolved)
    assert (done.state, done.resolved_by, audited) == ("resolved", "ops-client", [incident.incident_id])
    with pytest.raises(store.IncidentAlreadyResolved):
        await store.resolve(engine, incident.incident_id, "ops-client", "again", NOW + seconds(20))
    with pytest.raises(RecordNotFound):
        await store.resolve(engine, "inc_" + "0" * 32, "ops-client", "?", NOW)

    reopened = await store.apply(engine, [failing(6, ["pay_1"])], NOW + seconds(60))
    assert reopened.opened == ["failed_deposits"]
    [new, old] = await store.list_incidents(engine)
    assert old.incident_id == incident.incident_id and new.state == "open"
    [event] = await store.timeline(engine, new.incident_id)
    assert event.kind == "reopened" and event.details["previous_incident_id"] == incident.incident_id


async def test_keyset_pages_and_filters(engine: AsyncEngine) -> None:
    for n in range(3):
        await store.apply(engine, [failing(6, [f"pay_{n}"], f"psp=p{m},method=card") for m in range(n + 1)],
                          NOW + seconds(n))
    page = await store.list_incidents(engine, limit=2)
    rest = await store.list_incidents(engine, limit=2, before=page[-1].incident_id)
    assert len(page) == 2 and len(rest) == 1
    assert [i.opened_at for i in page + rest] == sorted((i.opened_at for i in page + rest), reverse=True)
    assert await store.list_incidents(engine, incident_class="gateway_downtime") == []
    with pytest.raises(RecordNotFound):
        await store.list_incidents(engine, before="inc_" + "0" * 32)
    async with engine.connect() as conn:
        assert await store.open_counts(conn) == {"failed_deposits": 3}


async def test_timeline_updates_are_coalesced_to_one_per_interval_with_the_figures_then(engine: AsyncEngine) -> None:
    every = store.DEFAULTS.timeline_update_seconds
    await store.apply(engine, [failing(6, ["pay_1"])], NOW)
    [incident] = await store.list_incidents(engine)
    for minute in range(1, 4):  # a pass a minute, its failure count changing each time
        assert (await store.apply(engine, [failing(6 + minute, ["pay_1"])], NOW + seconds(60 * minute))).updated
    assert [e.kind for e in await store.timeline(engine, incident.incident_id)] == ["opened"]
    assert (await store.get(engine, incident.incident_id)).figures_now["failed"] == 9  # type: ignore[union-attr]

    await store.apply(engine, [failing(9, ["pay_1"])], NOW + seconds(every))  # unchanged since the last pass ...
    timeline = await store.timeline(engine, incident.incident_id)
    assert [e.kind for e in timeline] == ["opened"]  # ... so no pass writes (figures_now is already 9)
    await store.apply(engine, [failing(10, ["pay_1"])], NOW + seconds(every + 60))
    timeline = await store.timeline(engine, incident.incident_id)
    assert [e.kind for e in timeline] == ["opened", "updated"] and timeline[-1].details["figures"]["failed"] == 10
    await store.apply(engine, [failing(11, ["pay_1"])], NOW + seconds(every + 120))  # too soon after that one
    assert len(await store.timeline(engine, incident.incident_id)) == 2


async def test_the_affected_ids_kept_stop_at_the_cap_and_the_figures_say_so(engine: AsyncEngine) -> None:
    capped = Thresholds(affected_ids_kept_max=3)
    await store.apply(engine, [failing(6, ["pay_1", "pay_2"])], NOW, capped)
    [incident] = await store.list_incidents(engine)
    assert incident.figures_now == {"failed": 6, "ended": 10, **kept(2)}
    await store.apply(engine, [failing(7, ["pay_1", "pay_3", "pay_4", "pay_5"])], NOW + seconds(60), capped)
    now = await store.get(engine, incident.incident_id)
    assert now is not None and now.figures_now == {"failed": 7, "ended": 10, **kept(3, full=True)}
    assert [a.object_id for a in await store.affected(engine, incident.incident_id)] == ["pay_1", "pay_2", "pay_3"]
    # Naming only ids it keeps changes nothing; it stays marked full.
    assert not (await store.apply(engine, [failing(7, ["pay_1"])], NOW + seconds(120), capped)).updated

    await store.apply(engine, [failing(6, [f"pay_{n}" for n in range(5)], "psp=card_b,method=card")], NOW, capped)
    [opened_full] = await store.list_incidents(engine, state="open", incident_class="failed_deposits", limit=1)
    assert opened_full.figures_at_open == {"failed": 6, "ended": 10, **kept(3, full=True)}
    assert len(await store.affected(engine, opened_full.incident_id)) == 3
