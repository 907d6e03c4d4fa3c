"""The rate source protocol's HTTP implementation against the sandbox FX service, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from fx import FxUnavailable, RateSource
from fx.http_source import HttpRateSource
from fx.sources import rate_source
from payloop.settings import Settings
from tests.psp.psp_testkit import RunningSandbox


async def test_quotes_follow_the_control_and_are_unique(http: httpx.AsyncClient, sandbox: RunningSandbox) -> None:
    source: RateSource = HttpRateSource(sandbox.url, http)
    set_rate = await http.post(f"{sandbox.url}/control/fx", json={"rates": {"USD/EUR": "0.9210"}})
    assert set_rate.status_code == 200 and set_rate.json()["rates"]["USD/EUR"] == "0.9210"
    first, second = await source.quote("USD", "EUR"), await source.quote("USD", "EUR")
    assert (first.rate, first.source, first.from_currency, first.to_currency) == ("0.9210", "sandbox-fx", "USD", "EUR")
    assert first.rate_id != second.rate_id and first.expires_at
    assert (await source.quote("EUR", "USD")).rate == "1.085776"  # the inverse of a pair set, to 6 places
    assert (await source.quote("GBP", "JPY")).rate == "191.803279"  # crossed through the euro values


@pytest.mark.parametrize("body", [
    {"rates": {"USD/EUR": 0.92}}, {"rates": {"USD/EUR": "-1"}}, {"rates": {"USD/EUR": "1e3"}},
    {"rates": {"USDEUR": "0.92"}}, {"rates": {"USD/USD": "1"}}, {"rates": {"USD/XXX": "1"}}, {"rates": {}},
    {"rates": {"USD/EUR": "0.92"}, "extra": 1}, ["USD/EUR"],
])
async def test_control_refuses_junk(http: httpx.AsyncClient, sandbox: RunningSandbox, body: object) -> None:
    response = await http.post(f"{sandbox.url}/control/fx", json=body)
    assert response.status_code == 422 and response.json()["error"] == "invalid_rates", response.text


async def test_an_unknown_pair_is_refused_and_a_dead_source_is_retryable(
        http: httpx.AsyncClient, sandbox: RunningSandbox) -> None:
    with pytest.raises(FxUnavailable) as refused:
        await HttpRateSource(sandbox.url, http).quote("USD", "XXX")
    assert not refused.value.retryable
    with pytest.raises(FxUnavailable) as unreachable:
        await HttpRateSource("http://127.0.0.1:9", http).quote("USD", "EUR")
    assert unreachable.value.retryable


def test_settings_name_the_source() -> None:
    async_client = httpx.AsyncClient()
    assert isinstance(rate_source(Settings(fx_rate_source="sandbox"), async_client), HttpRateSource)
    with pytest.raises(ValueError, match="unknown FX rate source"):
        rate_source(Settings(fx_rate_source="nowhere"), async_client)
