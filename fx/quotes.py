"""The rate source protocol: a real provider plugs in by implementing `RateSource` and naming itself in
fx/sources.py (selected by `PAYLOOP_FX_RATE_SOURCE`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FxQuote:
    """One quote: `rate` is the mid rate, units of `to_currency` per unit of `from_currency`, a decimal string.
    `rate_id` names the quote at its source (unique per quote); `expires_at` is ISO 8601 UTC."""

    from_currency: str
    to_currency: str
    rate: str
    source: str
    rate_id: str
    expires_at: str


class FxUnavailable(Exception):
    """The source gave no usable quote (down, refused the pair, or answered something that is not a rate).
    `retryable`: whether asking again may help (a refused pair will not)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class RateSource(Protocol):
    name: str

    async def quote(self, from_currency: str, to_currency: str) -> FxQuote:
        """A fresh quote for the pair; FxUnavailable when there is none."""
        ...
