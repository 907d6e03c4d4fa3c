"""The rate sources by name: `PAYLOOP_FX_RATE_SOURCE` picks one. A real provider adds its entry here."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from fx.http_source import HttpRateSource
from fx.quotes import RateSource
from payloop.settings import Settings

RATE_SOURCES: dict[str, Callable[[Settings, httpx.AsyncClient], RateSource]] = {
    "sandbox": lambda settings, http: HttpRateSource(settings.fx_rate_source_url or settings.sandbox_psp_url, http),
}


def rate_source(settings: Settings, http: httpx.AsyncClient) -> RateSource:
    try:
        build = RATE_SOURCES[settings.fx_rate_source]
    except KeyError:
        raise ValueError(f"unknown FX rate source {settings.fx_rate_source!r}; "
                         f"known: {', '.join(sorted(RATE_SOURCES))}") from None
    return build(settings, http)
