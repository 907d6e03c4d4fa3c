"""What the checkout keeps from others: its token out of the access log and away from PSPs, forms it reads only
within bounds, a start whose answer failed followed rather than repeated, withdrawals only for sessions whose key may
see the wallet, the sandbox's scenarios refused in production. Over plain HTTP on both backends."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from api.checkout.sessions import Attempt, AttemptKind
from api.idempotency import IdempotencyStore, answer_once
from api.problems import Problem
from entrypoints.startup import startup_problems
from payloop.db import utcnow
from payloop.settings import Settings
from tests.e2e.conftest import Stack, eventually, new_player
from tests.e2e.test_checkout_http import RETURN_URL, attempt_of, html_page, open_session, session_store


@pytest.fixture
async def player_browser(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client as a player's browser is: no API key, no redirects followed."""
    async with httpx.AsyncClient(base_url=stack.settings.api_url, follow_redirects=False, timeout=30) as client:
        yield client


async def method_step(browser: httpx.AsyncClient, path: str) -> dict[str, str]:
    page = html_page(await browser.get(path, params={"amount": "20.00", "currency": "EUR"}), 200)
    return {"attempt": attempt_of(page), "amount": "20.00", "currency": "EUR"}


async def test_the_access_log_shows_where_a_checkout_was_never_its_token(
    stack: Stack, player_browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    session = await open_session(stack, currency="EUR")
    token = session.path.removeprefix("/checkout/")
    with caplog.at_level(logging.INFO, logger="payloop.api.access"):
        assert (await player_browser.get(session.path)).status_code == 200
        assert (await player_browser.get(f"{session.path}/withdraw")).status_code == 200

        def access_lines() -> list[str]:
            return [record.getMessage() for record in caplog.records if record.name == "payloop.api.access"]

        # The line is written once the response went out: it may follow the client's read by a moment.
        await eventually(lambda: asyncio.sleep(0, access_lines()),
                         lambda lines: any("/checkout/{token}/withdraw" in line for line in lines), timeout=5)
    assert not any(token in line or token in str(getattr(record, "path", "")) for record in caplog.records
                   for line in [record.getMessage()])


async def test_a_psp_gets_a_return_address_that_opens_one_status_page_and_nothing_else(
    stack: Stack, player_browser: httpx.AsyncClient
) -> None:
    player = new_player()
    session = await open_session(stack, player, currency="EUR", country="DE")
    token = session.path.removeprefix("/checkout/")
    form = await method_step(player_browser, session.path) | {"method": "card", "scenario": "challenge"}
    started = await player_browser.post(f"{session.path}/deposits", data=form)
    assert started.status_code == 303, started.text
    challenge = started.headers["location"]
    assert challenge.startswith(stack.settings.sandbox_psp_url), challenge  # the PSP's 3-D Secure page
    async with httpx.AsyncClient(follow_redirects=False) as psp_page:
        back = await psp_page.post(challenge, data={"outcome": "success"})
    return_url = back.headers["location"]  # what the PSP was given
    assert return_url.startswith(f"{stack.settings.checkout_url}/checkout/return/") and token not in return_url
    arrived = await player_browser.get(return_url)
    assert arrived.status_code == 303 and arrived.headers["location"] == f"{session.path}/attempts/{form['attempt']}"
    return_token = urlsplit_path(return_url).removeprefix("/checkout/return/")
    for forged in (f"/checkout/{return_token}", f"/checkout/{return_token}/withdraw"):
        assert (await player_browser.get(forged)).status_code == 403  # no form opens with it
    assert (await player_browser.post(f"/checkout/{return_token}/deposits", data=form)).status_code == 403
    payment_id = re.search(r"pay_[0-9a-f]{24}", (await player_browser.get(arrived.headers["location"])).text)
    assert payment_id is not None
    await stack.wait_final(payment_id.group(0))
    await stack.check_invariants()


def urlsplit_path(url: str) -> str:
    return httpx.URL(url).path


async def test_a_form_is_read_only_url_encoded_and_small_and_an_odd_region_is_no_500(
    stack: Stack, player_browser: httpx.AsyncClient
) -> None:
    player = new_player()
    session = await open_session(stack, player, currency="EUR")
    form = await method_step(player_browser, session.path) | {"method": "ewallet"}
    multipart = await player_browser.post(f"{session.path}/deposits", data=form,
                                          files={"note": ("n.txt", b"x" * 4096, "text/plain")})
    assert multipart.status_code == 415 and "<form" not in multipart.text
    too_long = await player_browser.post(f"{session.path}/deposits", data=form | {"method": "x" * 5000})
    assert 400 <= too_long.status_code < 500
    # A region that is letters but not ASCII (a latin-1 header): no country, not a 500.
    odd = await player_browser.post(f"{session.path}/deposits", data=form,
                                    headers={"Accept-Language": "de-ÄÖ".encode("latin-1")})
    assert odd.status_code == 303, odd.text
    payment_id = re.search(r"pay_[0-9a-f]{24}", (await player_browser.get(odd.headers["location"])).text)
    assert payment_id is not None
    await stack.wait_final(payment_id.group(0))
    await stack.check_invariants()


async def test_an_answer_that_failed_after_the_start_names_what_it_may_have_started(stack: Stack) -> None:
    store = IdempotencyStore(stack.engine, timedelta(hours=24))
    seen: list[str] = []

    async def start_then_lose_the_answer(resource_id: str) -> tuple[int, dict]:
        seen.append(resource_id)
        raise Problem(503, "temporal_unavailable", "Service unavailable")

    key = secrets.token_hex(8)
    with pytest.raises(Problem) as failed:
        await answer_once(store, "casino-a", "TEST /start", key, {"a": 1}, "pay", start_then_lose_the_answer)
    assert failed.value.resource_id == seen[0] and "resource_id" not in failed.value.body()
    with pytest.raises(Problem) as again:  # the key was released: a retry reaches the same resource
        await answer_once(store, "casino-a", "TEST /start", key, {"a": 1}, "pay", start_then_lose_the_answer)
    assert again.value.resource_id == seen[0] == seen[1]


async def test_a_status_page_of_a_payment_that_never_started_says_so_and_offers_to_try_again(
    stack: Stack, player_browser: httpx.AsyncClient
) -> None:
    session = await open_session(stack, currency="EUR")
    record = await session_store(stack).open(session.path.removeprefix("/checkout/"), utcnow())
    attempt_id = secrets.token_urlsafe(18)
    never = f"pay_{secrets.token_hex(12)}"  # what a 5xx answer named, though its workflow never began
    await session_store(stack).record_attempt(record, attempt_id, Attempt(AttemptKind.DEPOSIT, never), utcnow())
    page = html_page(await player_browser.get(f"{session.path}/attempts/{attempt_id}"), 200)
    assert "Payment not started" in page.by_id("status-panel").text
    poll = (await player_browser.get(f"{session.path}/attempts/{attempt_id}/status")).json()
    assert poll["final"] is True


async def test_a_session_whose_key_cannot_see_the_wallet_offers_no_withdrawal(
    stack: Stack, player_browser: httpx.AsyncClient
) -> None:
    token, _ = await session_store(stack).create(
        client_id="casino-a", player_id=new_player(), currency="EUR", amount_minor=None, country=None, locale=None,
        return_url=RETURN_URL, may_withdraw=False, now=utcnow())
    assert (await player_browser.get(f"/checkout/{token}")).status_code == 200
    assert (await player_browser.get(f"/checkout/{token}/withdraw")).status_code == 404
    form = {"attempt": secrets.token_urlsafe(18), "amount": "1.00", "currency": "EUR"}
    assert (await player_browser.post(f"/checkout/{token}/payouts", data=form)).status_code == 404


def test_the_api_refuses_the_sandbox_scenarios_outside_dev_mode() -> None:
    settings = Settings(checkout_sandbox_scenarios=True)
    assert "PAYLOOP_CHECKOUT_SANDBOX_SCENARIOS" in [name for name, _ in startup_problems(settings, "api")]
    assert "PAYLOOP_CHECKOUT_SANDBOX_SCENARIOS" not in [name for name, _ in startup_problems(Settings(), "api")]
