"""Signed webhook delivery with retries, and the delivery log that tests and ops read."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

logger = logging.getLogger("psp.sandbox.webhooks")


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# `sign(psp, timestamp, body, event_id) -> headers`: the PSP's own signature scheme and current secret.
Signer = Callable[[str, int, bytes, str], dict[str, str]]


@dataclass(frozen=True)
class Outgoing:
    """One webhook: its body in the PSP's wire format, and what the delivery log shows about it."""

    event_id: str
    type: str  # "<payment|payout|refund|dispute>.<our status>"
    merchant_reference: str
    body: dict[str, Any]


class WebhookSender:
    def __init__(
        self,
        url_template: str,
        sign: Signer,
        retry_delays: Sequence[float],
        http: httpx.AsyncClient,
    ) -> None:
        self._url_template = url_template
        self._sign = sign
        self._retry_delays = tuple(retry_delays)
        self._http = http
        self.log: list[dict[str, Any]] = []

    async def deliver_in_order(self, psp: str, events: Sequence[Outgoing]) -> None:
        """Deliver each event (with its retries) before starting the next, so the order is the scenario's."""
        for event in events:
            await self.deliver(psp, event)

    async def deliver(self, psp: str, event: Outgoing) -> bool:
        # Serialized once: every attempt (and a duplicate delivery) carries byte-identical bodies.
        body = json.dumps(event.body, separators=(",", ":")).encode()
        url = self._url_template.format(psp=psp)
        delays = (0.0, *self._retry_delays)
        for attempt, delay in enumerate(delays, start=1):
            if delay:
                await asyncio.sleep(delay)
            headers = self._sign(psp, int(time.time()), body, event.event_id)
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
                    "merchant_reference": event.merchant_reference,
                    "event_id": event.event_id,
                    "type": event.type,
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
            "gave up delivering %s %s to %s after %d attempts", event.type, event.event_id, url, len(delays)
        )
        return False
