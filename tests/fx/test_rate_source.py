"""The rate source protocol's HTTP implementation against the sandbox FX service, and against a source that answers
what a test says, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from fx import FxUnavailable, RateSource
from fx.http_source import HttpRateSource
from fx.sources import rate_source
from payloop.settings import Settings
from tests.psp.psp_testkit import RunningSandbox, bound_socket, serve


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


GOOD_QUOTE = {"from": "USD", "to": "EUR", "rate": "0.9210", "source": "fx-x", "rate_id": "q_1",
              "expires_at": "2026-12-01T12:01:00+00:00"}


@pytest.fixture(scope="module")
async def scripted_source() -> AsyncIterator[tuple[str, list[Any]]]:
    """A rate source over real HTTP that answers whatever body the test puts in `answers[0]`."""
    answers: list[Any] = [GOOD_QUOTE]
    app = FastAPI()

    @app.post("/fx/quotes")
    async def quote() -> JSONResponse:
        return JSONResponse(answers[0])

    sock, url = bound_socket()
    async with serve(app, sock):
        yield url, answers


@pytest.mark.parametrize("change", [
    {"source": "s" * 41}, {"rate_id": "q" * 101}, {"expires_at": "2026-12-01T12:01:00.000000+00:00" + "0" * 9},
    {"rate_id": "q 1"}, {"source": "fx\nx"}, {"rate_id": ""}, {"rate_id": 7}, {"source": None},
    {"rate": "0"}, {"rate": "-1"}, {"rate": "1e3"}, {"rate": "0.0000001"}, {"rate": "1000001"}, {"rate": 0.92},
    {"expires_at": "tomorrow"}, {"expires_at": "2026-12-01T12:01:00"}, {"to": "GBP"},
])
async def test_a_quote_that_does_not_fit_is_no_quote(
        http: httpx.AsyncClient, scripted_source: tuple[str, list[Any]], change: dict[str, Any]) -> None:
    url, answers = scripted_source
    answers[0] = GOOD_QUOTE
    assert (await HttpRateSource(url, http).quote("USD", "EUR")).rate_id == "q_1"
    answers[0] = GOOD_QUOTE | change
    with pytest.raises(FxUnavailable, match="no usable quote") as refused:
        await HttpRateSource(url, http).quote("USD", "EUR")
    assert not refused.value.retryable  # the source answered: asking again gets the same
