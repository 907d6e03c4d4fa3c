"""The outbound events' dispatcher, run beside the payments worker (started and stopped with it), and what a
delivery changes besides its own row: a player notification's delivered_at."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.client import Client
from temporalio.runtime import Runtime

from events.delivery import DeliveryPolicy, Dispatcher
from events.outbox import Event
from events.payloads import NOTIFICATION
from payloop.db import utcnow
from payloop.settings import Settings
from players import notifications


async def mark_notification_delivered(conn: AsyncConnection, event: Event) -> None:
    if event.type == NOTIFICATION:
        await notifications.mark_delivered_in(conn, kind=event.data["kind"], reference=event.data["reference"],
                                              now=utcnow())


@contextlib.asynccontextmanager
async def event_dispatcher(client: Client, engine: AsyncEngine, settings: Settings) -> AsyncIterator[None]:
    """The dispatcher running until the block ends (nothing when `events_dispatch_enabled` is off). Its metrics go
    to the worker's Prometheus endpoint, through the Temporal runtime's meter like the payments' own."""
    if not settings.events_dispatch_enabled:
        yield
        return
    meter = (client.service_client.config.runtime or Runtime.default()).metric_meter
    # No redirects: a 3xx is an answer (a failed attempt), never a second URL nobody checked.
    async with httpx.AsyncClient(follow_redirects=False) as http:
        dispatcher = Dispatcher(engine, http, DeliveryPolicy.of(settings),
                                on_delivered=mark_notification_delivered, meter=meter)
        task = asyncio.create_task(dispatcher.run(), name="event-dispatcher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
