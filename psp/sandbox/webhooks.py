"""Signed webhook delivery with retries, and the delivery log that tests and ops read."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from psp import signatures

logger = logging.getLogger("psp.sandbox.webhooks")


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WebhookSender:
    def __init__(
        self,
        url_template: str,
        secret: str,
        retry_delays: Sequence[float],
        http: httpx.AsyncClient,
    ) -> None:
        self._url_template = url_template
        self._secret = secret
        self._retry_delays = tuple(retry_delays)
        self._http = http
        self.log: list[dict[str, Any]] = []

    async def deliver_in_order(self, psp: str, events: Sequence[dict[str, Any]]) -> None:
        """Deliver each event (with its retries) before starting the next, so the order is the scenario's."""
        for event in events:
            await self.deliver(psp, event)

    async def deliver(self, psp: str, event: dict[str, Any]) -> bool:
        # Serialized once: every attempt (and a duplicate delivery) carries byte-identical bodies.
        body = json.dumps(event, separators=(",", ":")).encode()
        url = self._url_template.format(psp=psp)
        delays = (0.0, *self._retry_delays)
        for attempt, delay in enumerate(delays, start=1):
            if delay:
                await asyncio.sleep(delay)
            headers = signatures.signed_headers(self._secret, int(time.time()), body)
            status_code: int | None = None
            error: str | None = None
            try:
                response = await self._http.post(url, content=body, headers=headers)
                status_code = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            delivered = status_code is not None and 200 <= status_code < 300
            if delivered:
                outcome = "delivered"
            elif attempt == len(delays):
                outcome = "gave_up"
            else:
                outcome = "retrying"
            self.log.append(
                {
                    "psp": psp,
                    "merchant_reference": event["merchant_reference"],
                    "event_id": event["event_id"],
                    "type": event["type"],
                    "attempt": attempt,
                    "status_code": status_code,
                    "error": error,
                    "outcome": outcome,
                    "at": utc_now_iso(),
                }
            )
            if delivered:
                return True
        logger.warning(
            "gave up delivering %s %s to %s after %d attempts", event["type"], event["event_id"], url, len(delays)
        )
        return False
