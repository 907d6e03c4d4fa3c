"""The outbox: an event is inserted in the transaction of the state change it describes, with one pending delivery
per active endpoint of its client that wants its type; a second insert of the same change finds its dedupe key and
adds nothing. Public ids (`evt_<zero-padded sequence>`) sort as a client's events were committed, so
`GET /v1/events?after=` (one client's events) never skips one: on PostgreSQL a client's inserts take a
transaction-scoped advisory lock of that client, held to the commit, so none of its sequence numbers is committed
after a higher one (SQLite has one writer anyway); other clients' commits do not wait. Every emitting transaction
emits last, after its row and account locks, so that lock never waits inside another lock's queue: a hook that
takes a lock after `emit_in` could deadlock against an account lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.models import event_deliveries, event_endpoints, events
from events.payloads import (
    EventDraft,
    dispute_event,
    kyc_required_event,
    notification_event,
    payment_event,
    payout_event,
    refund_event,
)
from ledger.disputes import DisputeRecord
from ledger.models import payments
from ledger.payments import PaymentRecord
from ledger.payouts import PayoutRecord
from ledger.refunds import RefundRecord
from payloop.db import utcnow

EVENT_ID_PREFIX = "evt_"
EVENT_ID_DIGITS = 16
_EVENT_ID = re.compile(rf"^{EVENT_ID_PREFIX}(\d{{{EVENT_ID_DIGITS}}})$")
# pg_advisory_xact_lock(namespace, key)'s namespace of the outbox's insert order per client (the key is a hash of
# the client id); any int4 no other lock of ours uses.
_ORDER_LOCK_NAMESPACE = 0x706C6F70  # "plop"
PENDING, DELIVERING, DELIVERED, FAILED = "pending", "delivering", "delivered", "failed"
LIST_LIMIT_MAX = 500


def event_id(seq: int) -> str:
    return f"{EVENT_ID_PREFIX}{seq:0{EVENT_ID_DIGITS}d}"


def event_seq(public_id: str) -> int | None:
    """The sequence number of a public event id; None when it is not one."""
    match = _EVENT_ID.match(public_id)
    return int(match.group(1)) if match else None


def wants(endpoint_types: list[str] | None, event_type: str) -> bool:
    return endpoint_types is None or event_type in endpoint_types


async def emit_in(conn: AsyncConnection, draft: EventDraft) -> bool:
    """Insert the event and its deliveries in the caller's transaction; False when it was emitted before."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:client_id))"),
                           {"namespace": _ORDER_LOCK_NAMESPACE, "client_id": draft.client_id})
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    seq = (await conn.execute(insert_(events).values(
        type=draft.type, client_id=draft.client_id, ordering_key=draft.ordering_key, dedupe_key=draft.dedupe_key,
        data=draft.data, created_at=now,
    ).on_conflict_do_nothing().returning(events.c.seq))).scalar_one_or_none()
    if seq is None:
        return False
    endpoints = await conn.execute(sa.select(event_endpoints.c.id, event_endpoints.c.event_types).where(
        event_endpoints.c.client_id == draft.client_id, event_endpoints.c.deleted_at.is_(None)))
    rows = [{"event_seq": seq, "endpoint_id": endpoint.id, "ordering_key": draft.ordering_key, "state": PENDING,
             "attempts": 0, "next_attempt_at": now, "created_at": now}
            for endpoint in endpoints if wants(endpoint.event_types, draft.type)]
    if rows:
        await conn.execute(event_deliveries.insert(), rows)
    return True


# -- the hooks the activities hand to the ledger's writes (each called in the write's transaction) --------------


async def emit_payment(conn: AsyncConnection, record: PaymentRecord) -> None:
    if (draft := payment_event(record)) is not None:
        await emit_in(conn, draft)


async def emit_payout(conn: AsyncConnection, record: PayoutRecord) -> None:
    if (draft := payout_event(record)) is not None:
        await emit_in(conn, draft)


async def emit_refund(conn: AsyncConnection, record: RefundRecord) -> None:
    if (draft := refund_event(record)) is not None:
        await emit_in(conn, draft)


async def emit_dispute(conn: AsyncConnection, record: DisputeRecord) -> None:
    """A dispute's client is its payment's (the dispute came from the PSP, not from a client)."""
    client_id = (await conn.execute(sa.select(payments.c.client_id)
                                    .where(payments.c.payment_id == record.payment_id))).scalar_one()
    if (draft := dispute_event(record, client_id)) is not None:
        await emit_in(conn, draft)


async def emit_kyc_required(engine: AsyncEngine, *, client_id: str, player_id: str, subject: str, subject_id: str,
                            reason: str | None) -> None:
    """The screening that finds KYC missing writes nothing else; its decision is this event, once per subject."""
    async with engine.begin() as conn:
        await emit_in(conn, kyc_required_event(client_id=client_id, player_id=player_id, subject=subject,
                                               subject_id=subject_id, reason=reason))


async def emit_notification(conn: AsyncConnection, *, client_id: str, player_id: str, kind: str, reference: str,
                            details: dict[str, str]) -> None:
    await emit_in(conn, notification_event(client_id=client_id, player_id=player_id, kind=kind,
                                           reference=reference, details=details))


# -- reads -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    type: str
    client_id: str
    ordering_key: str
    data: dict[str, Any]
    created_at: datetime

    @property
    def id(self) -> str:
        return event_id(self.seq)

    def body(self) -> dict[str, Any]:
        """What is delivered and listed: `{id, type, created_at, data}`."""
        return {"id": self.id, "type": self.type, "created_at": self.created_at.isoformat(), "data": self.data}


def _event(row: Any) -> Event:
    return Event(row.seq, row.type, row.client_id, row.ordering_key, row.data, row.created_at)


async def client_events(engine: AsyncEngine, client_id: str, *, after_seq: int, limit: int) -> list[Event]:
    """The client's events after `after_seq`, ascending."""
    query = (sa.select(events).where(events.c.client_id == client_id, events.c.seq > after_seq)
             .order_by(events.c.seq).limit(limit))
    async with engine.connect() as conn:
        return [_event(row) for row in await conn.execute(query)]


async def get_event(conn: AsyncConnection, seq: int) -> Event:
    return _event((await conn.execute(sa.select(events).where(events.c.seq == seq))).one())


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    event_id: str
    event_type: str
    client_id: str
    endpoint_id: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


_DELIVERY_COLUMNS = (event_deliveries, events.c.type, events.c.client_id)


def _delivery(row: Any) -> Delivery:
    return Delivery(row.id, event_id(row.event_seq), row.type, row.client_id, row.endpoint_id, row.state,
                    row.attempts, row.next_attempt_at, row.last_status_code, row.last_error, row.created_at,
                    row.delivered_at)


async def list_deliveries(engine: AsyncEngine, *, state: str | None, limit: int, before: int | None
                          ) -> tuple[list[Delivery], int | None]:
    """Deliveries newest first (by id), of one state or all, and the `before` of the next page (None on the last);
    `before` is the previous page's."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIST_LIMIT_MAX}")
    query = (sa.select(*_DELIVERY_COLUMNS).join(events, events.c.seq == event_deliveries.c.event_seq)
             .order_by(event_deliveries.c.id.desc()).limit(limit + 1))
    if state is not None:
        query = query.where(event_deliveries.c.state == state)
    if before is not None:
        query = query.where(event_deliveries.c.id < before)
    async with engine.connect() as conn:
        page = [_delivery(row) for row in await conn.execute(query)]
    return page[:limit], page[limit - 1].id if len(page) > limit else None


async def get_delivery(engine: AsyncEngine, delivery_id: int) -> Delivery:
    async with engine.connect() as conn:
        return _delivery((await conn.execute(sa.select(*_DELIVERY_COLUMNS)
                                             .join(events, events.c.seq == event_deliveries.c.event_seq)
                                             .where(event_deliveries.c.id == delivery_id))).one())


class ReplayRefused(Exception):
    """`code`: delivery_not_final (still pending or being sent), endpoint_deleted."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def replay_in(conn: AsyncConnection, delivery_id: int, now: datetime) -> bool:
    """A failed or delivered delivery becomes pending, due now, with a fresh attempt count; False if there is no
    such delivery. ReplayRefused while it is still on its way, or when its endpoint was deleted."""
    row = (await conn.execute(
        sa.select(event_deliveries.c.state, event_endpoints.c.deleted_at)
        .join(event_endpoints, event_endpoints.c.id == event_deliveries.c.endpoint_id)
        .where(event_deliveries.c.id == delivery_id))).one_or_none()
    if row is None:
        return False
    if row.deleted_at is not None:
        raise ReplayRefused("endpoint_deleted", "the delivery's endpoint was deleted")
    replayed = await conn.execute(
        event_deliveries.update()
        .where(event_deliveries.c.id == delivery_id, event_deliveries.c.state.in_((FAILED, DELIVERED)))
        .values(state=PENDING, attempts=0, next_attempt_at=now, last_error=None, last_status_code=None))
    if replayed.rowcount != 1:
        raise ReplayRefused("delivery_not_final", f"the delivery is {row.state}")
    return True
