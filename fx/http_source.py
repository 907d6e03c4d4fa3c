"""The sandbox FX service's quotes over HTTP (`POST {base}/fx/quotes`, served by psp/sandbox/fx.py). A provider
with the same answer shape can be used by pointing `PAYLOOP_FX_RATE_SOURCE_URL` at it."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from fx.conversion import parse_rate
from fx.quotes import FxQuote, FxUnavailable

# What a quote's fields may be: they are recorded in fx_conversions (ledger/fx.py: source String(40), rate_id
# String(100), expires_at String(40)) in the credit's transaction, where a value too long would fail the credit
# after the PSP captured. Letters, digits and a few separators: enough for ids and ISO 8601 times.
MAX_LENGTHS = {"source": 40, "rate_id": 100, "expires_at": 40}
_TOKEN = re.compile(r"[A-Za-z0-9._:+-]+")
# No pair of the currencies we take is anywhere near these; a rate outside them is a broken source.
MIN_RATE, MAX_RATE = Decimal("0.000001"), Decimal("1000000")


class HttpRateSource:
    name = "sandbox"

    def __init__(self, base_url: str, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http

    async def quote(self, from_currency: str, to_currency: str) -> FxQuote:
        try:
            response = await self.http.post(f"{self.base_url}/fx/quotes",
                                             json={"from": from_currency, "to": to_currency})
        except httpx.HTTPError as err:
            raise FxUnavailable(f"FX source unreachable: {type(err).__name__}", retryable=True) from err
        if response.status_code >= 500 or response.status_code == 429:
            raise FxUnavailable(f"FX source answered {response.status_code}", retryable=True)
        if response.status_code != 200:
            raise FxUnavailable(f"FX source refused {from_currency}/{to_currency}: {response.status_code}",
                                retryable=False)
        return _quote(response, from_currency, to_currency)


def _quote(response: httpx.Response, from_currency: str, to_currency: str) -> FxQuote:
    """The answer, checked: the pair asked for, a decimal rate within sane bounds, an id and an expiry that fit
    where they are recorded — or no quote at all (not retryable: the same source answers the same way)."""
    try:
        body: Any = response.json()
        if (body["from"], body["to"]) != (from_currency, to_currency):
            raise ValueError("the quote is for another pair")
        rate, source, rate_id, expires_at = (body[k] for k in ("rate", "source", "rate_id", "expires_at"))
        if not isinstance(rate, str):
            raise ValueError("a rate must be a decimal string")  # a JSON number may have been a float already
        if not MIN_RATE <= parse_rate(rate) <= MAX_RATE:
            raise ValueError(f"rate {rate} is outside {MIN_RATE}..{MAX_RATE}")
        for name, value in (("source", source), ("rate_id", rate_id), ("expires_at", expires_at)):
            if not isinstance(value, str) or not _TOKEN.fullmatch(value) or len(value) > MAX_LENGTHS[name]:
                raise ValueError(f"{name} must be 1 to {MAX_LENGTHS[name]} characters of [A-Za-z0-9._:+-]")
        if datetime.fromisoformat(expires_at).tzinfo is None:
            raise ValueError("expires_at without a time zone")
    except (ValueError, KeyError, TypeError) as err:
        raise FxUnavailable(f"FX source answered no usable quote: {err}", retryable=False) from err
    return FxQuote(from_currency, to_currency, rate, source, rate_id, expires_at)
