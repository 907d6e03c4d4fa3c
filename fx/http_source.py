"""The sandbox FX service's quotes over HTTP (`POST {base}/fx/quotes`, served by psp/sandbox/fx.py). A provider
with the same answer shape can be used by pointing `PAYLOOP_FX_RATE_SOURCE_URL` at it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from fx.conversion import parse_rate
from fx.quotes import FxQuote, FxUnavailable


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
    """The answer, checked: the pair asked for, a decimal rate, an id and an expiry — or no quote at all."""
    try:
        body: Any = response.json()
        rate, rate_id, source, expires_at = (str(body[k]) for k in ("rate", "rate_id", "source", "expires_at"))
        if (body["from"], body["to"]) != (from_currency, to_currency) or not rate_id or not source:
            raise ValueError("the quote is for another pair, or unnamed")
        if not isinstance(body["rate"], str):
            raise ValueError("a rate must be a decimal string")  # a JSON number may have been a float already
        parse_rate(rate)
        if datetime.fromisoformat(expires_at).tzinfo is None:
            raise ValueError("expires_at without a time zone")
    except (ValueError, KeyError, TypeError) as err:
        raise FxUnavailable(f"FX source answered no usable quote: {err}", retryable=True) from err
    return FxQuote(from_currency, to_currency, rate, source, rate_id, expires_at)
