"""`payloop event-receiver`: the embedded stack's demo receiver of outbound events. It registers itself as an event
endpoint of the first API key's client (replacing an endpoint of its own URL left by an earlier run), verifies every
delivery's signature with `standardwebhooks`, and logs each event's type and id — so a person trying the product
sees events arrive. Dev mode only: it listens on plain http on loopback."""

from __future__ import annotations

import logging
import uuid

import httpx
import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from payloop.settings import Settings

log = logging.getLogger("payloop.event_receiver")


def receiver_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.events_demo_receiver_port}/events"


def register(settings: Settings) -> str:
    """The secret of a fresh endpoint at this receiver's URL, for the first API key's client."""
    api_key = settings.api_keys.split(";")[0].split(":")[0]
    url = receiver_url(settings)
    with httpx.Client(base_url=settings.api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10) as api:
        for endpoint in api.get("/v1/event-endpoints").raise_for_status().json()["endpoints"]:
            if endpoint["url"] == url:
                api.delete(f"/v1/event-endpoints/{endpoint['id']}").raise_for_status()
        created = api.post("/v1/event-endpoints", json={"url": url}, headers={"Idempotency-Key": uuid.uuid4().hex})
        return created.raise_for_status().json()["secret"]


def receiver_app(secret: str) -> Starlette:
    webhook = Webhook(secret)

    async def receive(request: Request) -> Response:
        try:
            event = webhook.verify(await request.body(), dict(request.headers))
        except WebhookVerificationError as err:
            log.warning("refused a delivery: %s", err)
            return Response(status_code=400)
        log.info("event %s %s", event["type"], event["id"])
        return Response(status_code=204)

    return Starlette(routes=[Route("/events", receive, methods=["POST"])])


def serve(settings: Settings) -> None:
    uvicorn.run(receiver_app(register(settings)), host="127.0.0.1", port=settings.events_demo_receiver_port,
                log_level="warning")
