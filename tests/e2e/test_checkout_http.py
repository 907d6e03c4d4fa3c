"""The players' checkout over plain HTTP on the real stack (both backends), no browser: the session API, what a
checkout URL opens (tampered 403, expired 410, the status page's grace), the headers, the forms' refusals as
pages with their ARIA ties, double submits, whose player a form pays for, the per-session rate limit, and no 500
for odd paths or values. The browser side (rendering, keyboard, axe) is tested elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeSerializer

from api.app import create_app
from api.checkout import i18n
from api.checkout.messages import form_error
from api.checkout.sessions import Attempt, AttemptKind, CheckoutRefused, CheckoutSessions
from api.models import checkout_attempts, checkout_sessions
from ledger import player_account
from ledger.models import ledger_transfers
from payloop.db import utcnow
from tests.e2e.conftest import API_KEY, WALLET_ONLY_KEY, Stack, free_port, metric_value, new_player, serve
from tests.e2e.test_payouts import assert_settled, funded_player, wait_payout
from workflows.deposit import DepositWorkflow

PROBLEM_JSON = "application/problem+json"
RETURN_URL = "https://casino.example/cashier/return"
FRAMED_BY_CASINO = "frame-ancestors 'self' https://casino.example"
FRAMED_BY_NOBODY = "frame-ancestors 'none'"
# A page with no session behind it (a refused link, an error) has nothing to click: any casino's frame may show it.
FRAMED_BY_ANYONE = "frame-ancestors *"
# Elements without an end tag: never open, so text after them is not theirs.
VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                           "track", "wbr"})


# --- reading pages ---------------------------------------------------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""  # every text inside it, entities decoded


class Page(HTMLParser):
    """A page's elements in document order, with their attributes and text: enough to follow ids and ARIA ties."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.elements.append(element)
        if tag not in VOID_ELEMENTS:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def find(self, tag: str | None = None, **attrs: str) -> list[Element]:
        return [e for e in self.elements if (tag is None or e.tag == tag)
                and all(e.attrs.get(name.replace("_", "-")) == value for name, value in attrs.items())]

    def by_id(self, element_id: str) -> Element:
        [element] = self.find(id=element_id)
        return element


def html_page(response: httpx.Response, status: int) -> Page:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html"), response.headers
    return Page(response.text)


def attempt_of(page: Page) -> str:
    """The attempt id a rendered form carries."""
    [hidden] = page.find("input", name="attempt")
    return hidden.attrs["value"]


def assert_form_refused(response: httpx.Response, field_name: str, code: str, lang: str = "en") -> Page:
    """A 422 page whose error summary (role=alert) says what `code` means, with the field tied to its error."""
    page = html_page(response, 422)
    message = i18n.language(lang).gettext(form_error(code))
    [summary] = page.find(role="alert")
    assert message in summary.text, summary.text
    for link in page.find("a"):  # the summary's links (and the skip link) lead to an element of this page
        if link.attrs["href"].startswith("#"):
            page.by_id(link.attrs["href"][1:])
    if field_name == "form":  # the whole form, no field to tie it to
        return page
    error = page.by_id(f"{field_name}-error")
    assert message in error.text
    control = page.by_id("method-options" if field_name == "method" else field_name)
    assert f"{field_name}-error" in control.attrs["aria-describedby"].split()
    if field_name == "amount":
        assert control.attrs.get("aria-invalid") == "true"
    return page


# --- sessions and what they started ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    player_id: str
    session_id: str
    url: str
    path: str  # /checkout/<token>


async def open_session(stack: Stack, player_id: str | None = None, *, api: httpx.AsyncClient | None = None,
                       **fields: Any) -> Session:
    body = {"player_id": player_id or new_player(), "return_url": RETURN_URL} | fields
    response = await (api or stack.api).post("/v1/checkout/sessions", json=body)
    assert response.status_code == 201, response.text
    answer = response.json()
    return Session(body["player_id"], answer["session_id"], answer["url"],
                   "/checkout/" + answer["url"].rsplit("/checkout/", 1)[1])


def session_store(stack: Stack, keys: str | None = None) -> CheckoutSessions:
    """The stack's checkout sessions as the API keeps them (its signing keys unless `keys`)."""
    settings = stack.settings
    return CheckoutSessions(stack.engine, keys or settings.checkout_signing_keys,
                            lifetime=timedelta(minutes=settings.checkout_session_minutes),
                            status_grace=timedelta(minutes=settings.checkout_status_grace_minutes))


async def session_rows(stack: Stack) -> int:
    async with stack.engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(checkout_sessions))).scalar_one()


async def attempts_of(stack: Stack, session_id: str) -> list[tuple[str, str, str]]:
    """(attempt id, kind, resource id) of every form the session took."""
    async with stack.engine.connect() as conn:
        rows = await conn.execute(sa.select(checkout_attempts.c.attempt_id, checkout_attempts.c.kind,
                                            checkout_attempts.c.resource_id)
                                  .where(checkout_attempts.c.session_id == session_id))
        return [tuple(row) for row in rows]


async def deposits_of(stack: Stack, player_id: str) -> list[dict[str, Any]]:
    """The player's deposits in the ops list (a deposit's row is written as it moves on, not at its start)."""
    response = await stack.api.get("/v1/ops/payments", params={"player_id": player_id})
    assert response.status_code == 200, response.text
    return response.json()["payments"]


async def deposit_workflows_of(stack: Stack, player_id: str) -> list[str]:
    """The player's deposit workflows: each publishes its player before it answers its start, so a deposit form's
    answer comes after its workflow is listed here."""
    query = f"WorkflowType = 'DepositWorkflow' AND PlayerId = '{player_id}'"
    return [execution.id async for execution in stack.client.list_workflows(query)]


async def payout_holds_of(stack: Stack, player_id: str, currency: str = "EUR") -> list[str]:
    """The ids of the payout holds ever placed on the player's wallet (each payout places exactly one)."""
    async with stack.engine.connect() as conn:
        return list((await conn.execute(sa.select(ledger_transfers.c.id).where(
            ledger_transfers.c.debit_account_id == player_account(player_id, currency),
            ledger_transfers.c.id.like("payout:%:hold")))).scalars())


@pytest.fixture
async def browser(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The player's browser: no API key, no cookie jar of use (the checkout sets none), redirects not followed."""
    async with httpx.AsyncClient(base_url=stack.settings.checkout_url, timeout=30) as client:
        yield client


async def deposit_form(browser: httpx.AsyncClient, session: Session, amount: str = "50.00") -> dict[str, str]:
    """The deposit form's fields as the page renders them for `amount` EUR, with card and the sandbox's approve."""
    page = html_page(await browser.get(session.path, params={"amount": amount, "currency": "EUR"}), 200)
    assert page.find("input", type="radio", name="method", value="card"), "card should be offered"
    return {"attempt": attempt_of(page), "amount": amount, "currency": "EUR", "method": "card",
            "scenario": "approve"}


async def withdrawal_form(browser: httpx.AsyncClient, session: Session, amount: str) -> dict[str, str]:
    page = html_page(await browser.get(f"{session.path}/withdraw"), 200)
    return {"attempt": attempt_of(page), "amount": amount, "currency": "EUR", "scenario": "approve"}


# --- 1. POST /v1/checkout/sessions -----------------------------------------------------------------------------


@pytest.mark.parametrize(("asked", "negotiated"), [("de-AT", "de"), ("fr", None), (None, None)])
async def test_a_session_answers_an_absolute_url_that_expires_with_the_setting(
    stack: Stack, asked: str | None, negotiated: str | None
) -> None:
    before = utcnow()
    response = await stack.api.post("/v1/checkout/sessions", json={
        "player_id": new_player(), "return_url": RETURN_URL, **({"locale": asked} if asked else {})})
    after = utcnow()

    assert response.status_code == 201, response.text
    answer = response.json()
    url = urlsplit(answer["url"])
    assert (url.scheme, url.netloc) == ("http", f"127.0.0.1:{stack.settings.api_port}")  # absolute
    assert answer["url"].startswith(stack.settings.checkout_url + "/checkout/")
    lifetime = timedelta(minutes=stack.settings.checkout_session_minutes)
    expires_at = datetime.fromisoformat(answer["expires_at"])
    assert before + lifetime <= expires_at <= after + lifetime
    assert expires_at <= after + timedelta(minutes=30)
    assert answer["locale"] == negotiated


REFUSED_SESSIONS = [
    pytest.param({}, {}, 401, "unauthorized", id="no-key"),
    pytest.param({"Authorization": f"Bearer {WALLET_ONLY_KEY}"}, {}, 403, "insufficient_scope", id="no-payments-scope"),
    pytest.param(None, {"amount": "50.00"}, 422, "currency_required", id="amount-without-currency"),
    pytest.param(None, {"amount": "50.00", "currency": "XYZ"}, 422, "unsupported_currency",
                 id="unsupported-currency-with-amount"),
    pytest.param(None, {"currency": "XYZ"}, 422, "unsupported_currency", id="unsupported-currency"),
    pytest.param(None, {"amount": "50.001", "currency": "EUR"}, 422, "amount_precision", id="too-many-decimals"),
    pytest.param(None, {"locale": "de_DE;q=1"}, 422, "validation_error", id="malformed-locale"),
    pytest.param(None, {"return_url": "javascript:alert(1)"}, 422, "validation_error", id="return-url-not-http"),
    pytest.param(None, {"player": "alice"}, 422, "validation_error", id="extra-field"),
    pytest.param(None, {"player_id": "."}, 422, "validation_error", id="player-dot"),
    pytest.param(None, {"player_id": ".."}, 422, "validation_error", id="player-dot-dot"),
]


@pytest.mark.parametrize(("headers", "fields", "status", "code"), REFUSED_SESSIONS)
async def test_a_refused_session_is_a_problem_and_stores_nothing(
    stack: Stack, headers: dict[str, str] | None, fields: dict[str, str], status: int, code: str
) -> None:
    rows_before = await session_rows(stack)
    body = {"player_id": new_player(), "return_url": RETURN_URL} | fields
    if headers is None:
        response = await stack.api.post("/v1/checkout/sessions", json=body)
    else:  # a client of its own: the stack's sends the full key on every request
        async with httpx.AsyncClient(base_url=stack.settings.api_url, headers=headers, timeout=30) as client:
            response = await client.post("/v1/checkout/sessions", json=body)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["code"] == code
    assert await session_rows(stack) == rows_before


# --- 2. what a URL opens ---------------------------------------------------------------------------------------


def _changed(token: str, index: int) -> str:
    return token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1:]


async def test_the_url_names_no_player_and_a_tampered_token_opens_only_a_refusal(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    session = await open_session(stack)
    assert session.player_id not in session.url and "casino-a" not in session.url
    token = session.path.removeprefix("/checkout/")
    payload, signature = token.rsplit(".", 1)
    html_page(await browser.get(session.path), 200)  # the token as issued opens the form
    store = session_store(stack)
    _, (session_id, expires_epoch) = URLSafeSerializer("unused").loads_unsafe(token)  # read, not verified
    assert session_id == session.session_id
    other_key = URLSafeSerializer("another-key-of-at-least-32-characters", salt="payloop-checkout")
    tampered = {
        # A middle character: the last one of a base64 part may only change padding bits.
        "signature": f"{payload}.{_changed(signature, len(signature) // 2)}",
        "payload": f"{_changed(payload, len(payload) // 2)}.{signature}",
        "another key": other_key.dumps([session.session_id, expires_epoch]),
    }
    for what, forged in tampered.items():
        for path in (f"/checkout/{forged}", f"/checkout/{forged}/withdraw"):
            page = html_page(await browser.get(path), 403)
            assert page.find("form") == [], what
            assert "This link is not valid" in page.by_id("main").text, what
        posted = await browser.post(f"/checkout/{forged}/deposits", data={"method": "card"})
        assert posted.status_code == 403, what
        with pytest.raises(CheckoutRefused) as refused:
            await store.open(forged, utcnow())
        assert refused.value.status == 403
    assert await attempts_of(stack, session.session_id) == []


async def test_an_expired_session_refuses_its_forms_but_shows_its_status_within_the_grace(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    player = new_player()
    store = session_store(stack)
    opened_at = utcnow() - timedelta(minutes=stack.settings.checkout_session_minutes + 1)
    token, session = await store.create(client_id="casino-a", player_id=player, currency=None, amount_minor=None,
                                        country=None, locale=None, return_url=RETURN_URL, may_withdraw=True,
                                        now=opened_at)
    deposit = await stack.deposit(player_id=player)  # what a form of the session started while it was open
    attempt_id = secrets.token_urlsafe(18)
    await store.record_attempt(session, attempt_id, Attempt("deposit", deposit["payment_id"]), opened_at)
    path = f"/checkout/{token}"

    for page_path in (path, f"{path}/withdraw"):
        page = html_page(await browser.get(page_path), 410)
        assert page.find("form") == [] and "This link has expired" in page.by_id("main").text
    status = html_page(await browser.get(f"{path}/attempts/{attempt_id}"), 200)
    assert deposit["payment_id"] in status.by_id("status-panel").text
    assert (await browser.get(f"{path}/attempts/{attempt_id}/status")).status_code == 200
    form = {"attempt": secrets.token_urlsafe(18), "amount": "50.00", "currency": "EUR", "method": "card"}
    assert (await browser.post(f"{path}/deposits", data=form)).status_code == 410
    assert (await browser.post(f"{path}/payouts", data=form)).status_code == 410
    assert [row[0] for row in await attempts_of(stack, session.session_id)] == [attempt_id]
    assert await deposit_workflows_of(stack, player) == [DepositWorkflow.workflow_id(deposit["payment_id"])]

    # Past the grace, the status page closes too.
    grace = timedelta(minutes=stack.settings.checkout_status_grace_minutes)
    long_ago = utcnow() - timedelta(minutes=stack.settings.checkout_session_minutes) - grace - timedelta(minutes=1)
    old_token, old = await store.create(client_id="casino-a", player_id=player, currency=None, amount_minor=None,
                                        country=None, locale=None, return_url=RETURN_URL, may_withdraw=True,
                                        now=long_ago)
    await store.record_attempt(old, attempt_id, Attempt("deposit", deposit["payment_id"]), long_ago)
    html_page(await browser.get(f"/checkout/{old_token}/attempts/{attempt_id}"), 410)
    await stack.wait_final(deposit["payment_id"])
    await stack.check_invariants()


async def test_a_session_whose_row_is_gone_is_410(stack: Stack, browser: httpx.AsyncClient) -> None:
    session = await open_session(stack)
    html_page(await browser.get(session.path), 200)
    async with stack.engine.begin() as conn:
        await conn.execute(checkout_sessions.delete().where(checkout_sessions.c.session_id == session.session_id))
    page = html_page(await browser.get(session.path), 410)
    assert page.find("form") == []


async def test_a_session_signed_with_the_old_key_opens_while_rotating_and_not_after(stack: Stack) -> None:
    old_key, new_key = "old-key-" + "o" * 32, "new-key-" + "n" * 32
    before = session_store(stack, old_key)
    rotating = session_store(stack, f"{new_key},{old_key}")
    after = session_store(stack, new_key)
    now = utcnow()
    fields: dict[str, Any] = {"client_id": "casino-a", "player_id": new_player(), "currency": "EUR",
                              "amount_minor": 5000, "country": None, "locale": None, "return_url": RETURN_URL,
                              "may_withdraw": True}

    old_token, made = await before.create(**fields, now=now)
    assert (await rotating.open(old_token, now)).session_id == made.session_id
    with pytest.raises(CheckoutRefused) as retired:
        await after.open(old_token, now)
    assert retired.value.status == 403

    new_token, made_rotating = await rotating.create(**fields, now=now)  # signed with the first key
    assert (await after.open(new_token, now)).session_id == made_rotating.session_id
    with pytest.raises(CheckoutRefused) as unknown:
        await before.open(new_token, now)
    assert unknown.value.status == 403


async def test_the_withdraw_tab_shows_only_where_the_session_may_withdraw(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    for may_withdraw in (True, False):
        token, _ = await session_store(stack).create(
            client_id="casino-a", player_id=new_player(), currency="EUR", amount_minor=None, country=None,
            locale=None, return_url=RETURN_URL, may_withdraw=may_withdraw, now=utcnow())
        page = html_page(await browser.get(f"/checkout/{token}"), 200)
        assert len(page.find("a", href=f"/checkout/{token}")) == 1  # the Deposit tab
        assert len(page.find("a", href=f"/checkout/{token}/withdraw")) == int(may_withdraw)


async def test_a_payment_that_never_started_shows_neither_an_amount_nor_a_date(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    session = await open_session(stack, currency="EUR")
    store = session_store(stack)
    record = await store.open(session.path.removeprefix("/checkout/"), utcnow())
    attempt_id, never = secrets.token_urlsafe(18), f"pay_{secrets.token_hex(12)}"
    await store.record_attempt(record, attempt_id, Attempt(AttemptKind.DEPOSIT, never), utcnow())
    page = html_page(await browser.get(f"{session.path}/attempts/{attempt_id}"), 200)
    assert [term.text for term in page.find("dt")] == ["Reference"]
    assert page.find("dd")[0].text == never and "None" not in page.by_id("status-panel").text


# --- 3. headers ------------------------------------------------------------------------------------------------


def assert_checkout_headers(response: httpx.Response, frame_ancestors: str, cache: str = "no-store") -> None:
    headers = response.headers
    assert headers["referrer-policy"] == "no-referrer", response.url
    assert headers["cache-control"] == cache, response.url
    assert headers["x-content-type-options"] == "nosniff", response.url
    assert "set-cookie" not in headers, response.url
    assert headers["content-security-policy"].endswith(frame_ancestors), (response.url, headers)


async def test_every_checkout_response_has_the_headers_and_only_session_pages_may_be_framed_by_the_casino(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    player = await funded_player(stack, "60.00")
    session = await open_session(stack, player)
    deposit_page = await browser.get(session.path, params={"amount": "50.00", "currency": "EUR"})
    withdrawal_page = await browser.get(f"{session.path}/withdraw")
    form = await withdrawal_form(browser, session, "10.00")
    started = await browser.post(f"{session.path}/payouts", data=form)
    assert started.status_code == 303, started.text
    status_page = await browser.get(started.headers["location"])
    status_poll = await browser.get(started.headers["location"] + "/status")
    refused_form = await browser.post(f"{session.path}/payouts", data=form | {"attempt": "x" * 16, "amount": "abc"})
    for response, status in ((deposit_page, 200), (withdrawal_page, 200), (status_page, 200),
                             (refused_form, 422)):
        assert response.status_code == status, response.text
        assert_checkout_headers(response, FRAMED_BY_CASINO)
        assert response.headers["content-security-policy"].startswith("default-src 'self';")
    assert status_poll.status_code == 200 and status_poll.headers["content-type"] == "application/json"
    for response in (started, status_poll):
        assert_checkout_headers(response, FRAMED_BY_NOBODY)
    for asset in ("checkout.css", "checkout.js"):  # nobody's data: cached
        assert_checkout_headers(await browser.get(f"/checkout/static/{asset}"), FRAMED_BY_NOBODY,
                                "public, max-age=3600")

    # Only the return URL's scheme, host and port reach the header: not its credentials, nor a smuggled directive.
    for return_url, ancestors in (("https://user:pw@casino.example:8443/r", "'self' https://casino.example:8443"),
                                  ("https://casino.example;sandbox/r", "'self'")):
        odd = await open_session(stack, player, return_url=return_url)
        header = (await browser.get(odd.path)).headers["content-security-policy"]
        assert header.endswith(f"frame-ancestors {ancestors}"), header

    token = session.path.removeprefix("/checkout/")
    errors = {
        403: await browser.get(f"/checkout/{_changed(token, len(token) // 2)}"),
        404: await browser.get(f"{session.path}/attempts/{'x' * 24}"),
        405: await browser.delete(session.path),
    }
    for status, response in errors.items():
        assert response.status_code == status, response.text
        assert_checkout_headers(response, FRAMED_BY_NOBODY if status == 405 else FRAMED_BY_ANYONE)
    [payout_id] = [resource for _, kind, resource in await attempts_of(stack, session.session_id) if kind == "payout"]
    await assert_settled(stack, await wait_payout(stack, payout_id))
    await stack.check_invariants()


# --- 4. forms the player got wrong -----------------------------------------------------------------------------


@pytest.mark.parametrize(("currency", "locale", "example"), [("EUR", "de", "50,00"), ("JPY", "en", "50"),
                                                             ("BHD", "en", "50.000")])
async def test_the_amount_hint_is_typed_with_the_currency_s_decimal_places(
    stack: Stack, browser: httpx.AsyncClient, currency: str, locale: str, example: str
) -> None:
    session = await open_session(stack, currency=currency, locale=locale)
    hint = html_page(await browser.get(session.path), 200).by_id("amount-hint")
    assert hint.text == i18n.language(locale).gettext("For example %(example)s") % {"example": example}


async def test_a_withdrawal_amount_typed_wrong_is_a_422_page_and_starts_nothing(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    player = await funded_player(stack, "80.00")
    english = await open_session(stack, player)
    german = await open_session(stack, player, locale="de")  # there "50,001" is fifty and a thousandth
    cases = [(english, "abc", "invalid_amount", "en"), (english, "0", "amount_not_positive", "en"),
             (english, "", "amount_required", "en"), (german, "50,001", "amount_precision", "de"),
             (english, "80.01", "over_balance", "en")]
    for session, typed, code, lang in cases:
        form = await withdrawal_form(browser, session, typed)
        page = assert_form_refused(await browser.post(f"{session.path}/payouts", data=form), "amount", code, lang)
        assert page.by_id("amount").attrs["value"] == typed  # given back to correct, not retyped
        assert attempt_of(page) != form["attempt"]  # a fresh form
    assert await payout_holds_of(stack, player) == []
    assert await attempts_of(stack, english.session_id) == [] and await attempts_of(stack, german.session_id) == []
    assert await stack.balance(player) == "80.00"
    await stack.check_invariants()


async def test_a_deposit_form_without_a_method_or_with_a_changed_amount_is_a_422_page_and_starts_nothing(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    session = await open_session(stack)
    form = await deposit_form(browser, session)
    without_method = {name: value for name, value in form.items() if name != "method"}

    assert_form_refused(await browser.post(f"{session.path}/deposits", data=without_method), "method",
                        "method_required")
    assert_form_refused(await browser.post(f"{session.path}/deposits", data=form | {"method": "cheque"}), "method",
                        "method_required")
    for changed, code in (("50.001", "amount_precision"), ("-5", "invalid_amount"), ("abc", "invalid_amount")):
        assert_form_refused(await browser.post(f"{session.path}/deposits", data=form | {"amount": changed}),
                            "amount", code)
    assert await deposit_workflows_of(stack, session.player_id) == []
    assert await deposits_of(stack, session.player_id) == []
    assert await attempts_of(stack, session.session_id) == []


# --- 5. double submits -----------------------------------------------------------------------------------------


async def test_a_deposit_form_sent_twice_at_once_pays_once_and_changed_under_its_attempt_is_expired(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    session = await open_session(stack)
    form = await deposit_form(browser, session)

    first, second = await asyncio.gather(*(browser.post(f"{session.path}/deposits", data=form) for _ in range(2)))

    attempt_page = f"{session.path}/attempts/{form['attempt']}"
    assert (first.status_code, second.status_code) == (303, 303), (first.text, second.text)
    assert first.headers["location"] == second.headers["location"] == attempt_page
    [(attempt_id, kind, payment_id)] = await attempts_of(stack, session.session_id)
    assert (attempt_id, kind) == (form["attempt"], "deposit")
    assert await deposit_workflows_of(stack, session.player_id) == [DepositWorkflow.workflow_id(payment_id)]

    changed = await browser.post(f"{session.path}/deposits", data=form | {"method": "ewallet"})
    assert_form_refused(changed, "form", "form_expired")
    assert (await stack.wait_final(payment_id))["status"] == "credited"
    assert [d["payment_id"] for d in await deposits_of(stack, session.player_id)] == [payment_id]
    assert await deposit_workflows_of(stack, session.player_id) == [DepositWorkflow.workflow_id(payment_id)]
    assert await stack.balance(session.player_id) == "50.00"
    await stack.check_invariants()


async def test_a_withdrawal_form_sent_twice_at_once_holds_once_and_changed_under_its_attempt_is_expired(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    player = await funded_player(stack, "100.00")
    session = await open_session(stack, player)
    form = await withdrawal_form(browser, session, "40.00")

    first, second = await asyncio.gather(*(browser.post(f"{session.path}/payouts", data=form) for _ in range(2)))

    attempt_page = f"{session.path}/attempts/{form['attempt']}"
    assert (first.status_code, second.status_code) == (303, 303), (first.text, second.text)
    assert first.headers["location"] == second.headers["location"] == attempt_page
    [hold] = await payout_holds_of(stack, player)
    [(_, kind, payout_id)] = await attempts_of(stack, session.session_id)
    assert kind == "payout" and hold == f"payout:{payout_id}:hold"

    changed = await browser.post(f"{session.path}/payouts", data=form | {"amount": "30.00"})
    assert_form_refused(changed, "form", "form_expired")
    await assert_settled(stack, await wait_payout(stack, payout_id))
    assert await payout_holds_of(stack, player) == [hold]
    assert await stack.balance(player) == "60.00"
    await stack.check_invariants()


# --- 6. the player is the session's ----------------------------------------------------------------------------


async def test_a_form_pays_for_the_session_s_player_whatever_it_says_and_attempts_stay_in_their_session(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    session, other = await open_session(stack), await open_session(stack)
    form = await deposit_form(browser, session)

    # No Origin or Referer: the signed URL is what authorises the form (it sets no cookie to ride along).
    started = await browser.post(f"{session.path}/deposits", data=form | {
        "player_id": other.player_id, "client_id": "casino-b", "currency_fixed": "USD"})

    assert started.status_code == 303, started.text
    [(_, _, payment_id)] = await attempts_of(stack, session.session_id)
    assert (await stack.wait_final(payment_id))["status"] == "credited"
    [deposit] = await deposits_of(stack, session.player_id)
    assert (deposit["payment_id"], deposit["client_id"]) == (payment_id, "casino-a")
    assert await deposits_of(stack, other.player_id) == []
    # The attempt is this session's: on another session's URL it is no page (nor a poll).
    for path in (f"{other.path}/attempts/{form['attempt']}", f"{other.path}/attempts/{form['attempt']}/status"):
        page = html_page(await browser.get(path), 404)
        assert deposit["payment_id"] not in page.by_id("main").text
    # The same attempt id sent in the other session is that session's own attempt: its player's deposit.
    other_form = await deposit_form(browser, other, "20.00")
    reused = await browser.post(f"{other.path}/deposits", data=other_form | {"attempt": form["attempt"]})
    assert reused.status_code == 303 and reused.headers["location"] == f"{other.path}/attempts/{form['attempt']}"
    [(_, _, other_payment_id)] = await attempts_of(stack, other.session_id)
    assert other_payment_id != payment_id
    assert (await stack.wait_final(other_payment_id))["status"] == "credited"
    [other_deposit] = await deposits_of(stack, other.player_id)
    assert (other_deposit["payment_id"], other_deposit["amount"]) == (other_payment_id, "20.00")
    assert (await stack.balance(session.player_id), await stack.balance(other.player_id)) == ("50.00", "20.00")
    await stack.check_invariants()


# --- 7. rate limit ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def api_limiting_checkouts(stack: Stack, limit: str) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                                 httpx.AsyncClient]]:
    """The stack's API once more, on a port of its own, limiting each checkout session to `limit` (the stack's
    own API keeps its settings for the other tests): (the platform's client, a player's browser)."""
    settings = stack.settings.model_copy(update={"rate_limit_checkout": limit, "api_port": free_port()})
    async with (
        serve(create_app(settings, engine=stack.engine, temporal=stack.client), settings.api_port),
        httpx.AsyncClient(base_url=settings.api_url, timeout=30,
                          headers={"Authorization": f"Bearer {API_KEY}"}) as platform,
        httpx.AsyncClient(base_url=settings.checkout_url, timeout=30) as player_browser,
    ):
        yield platform, player_browser


async def test_a_session_over_its_rate_limit_gets_429_and_another_session_does_not(stack: Stack) -> None:
    async with api_limiting_checkouts(stack, "5/minute") as (platform, player_browser):
        busy, calm = await open_session(stack, api=platform), await open_session(stack, api=platform)
        for _ in range(5):
            assert (await player_browser.get(busy.path)).status_code == 200

        refused = await player_browser.get(busy.path)

        page = html_page(refused, 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert page.find("form") == [] and "Too many requests" in page.by_id("main").text
        assert (await player_browser.post(f"{busy.path}/deposits", data={"method": "card"})).status_code == 429
        assert (await player_browser.get(calm.path)).status_code == 200
        metrics = (await platform.get("/metrics")).text
    assert metric_value(metrics, "payloop_rate_limited_total", limit="checkout") == 2


# --- 8. never a 500 --------------------------------------------------------------------------------------------


async def test_unknown_attempts_odd_paths_and_odd_values_are_never_a_500(
    stack: Stack, browser: httpx.AsyncClient
) -> None:
    player = await funded_player(stack, "20.00")
    session = await open_session(stack, player)
    path = session.path
    for poll in (f"{path}/attempts/{'a' * 24}/status", f"{path}/attempts/{'a' * 41}/status",
                 f"{path}/attempts/short/status"):
        page = html_page(await browser.get(poll), 404)
        assert "Page not found" in page.by_id("main").text
    odd_gets = [
        "/checkout", "/checkout/", "/checkout/%00", "/checkout/..%2f..%2fops", f"{path}/nope",
        f"{path}/attempts/{'a' * 24}/status/more", f"{path}/withdraw/extra", "/checkout/a.b.c/withdraw",
        f"/checkout/{'x' * 5000}", f"{path}/attempts/%F0%9F%92%B8", "/checkout/static/none.css",
        f"{path}?amount=NaN", f"{path}?amount=sNaN", f"{path}?amount=Infinity", f"{path}?amount=1e999999999",
        f"{path}?amount=-0", f"{path}?amount=%00", f"{path}?currency=%00&amount=5", f"{path}?lang=%00",
        f"{path}?lang={'de-' * 400}", f"{path}/withdraw?currency=ZZZ", f"{path}?amount=1&currency=JPY",
    ]
    for odd in odd_gets:
        response = await browser.get(odd, headers={"Accept-Language": "de-AT;q=x, *;q=0.5, " + "fi," * 50})
        assert response.status_code < 500, (odd, response.status_code, response.text[:300])
    for unknown in (f"{path}/nope", f"{path}/withdraw/extra"):  # a page for the player, not the API's JSON
        assert "Page not found" in html_page(await browser.get(unknown), 404).by_id("main").text
    form = await withdrawal_form(browser, session, "NaN")
    for amount in ("NaN", "sNaN", "Infinity", "1e999999999", "1E-999999", "50.00.00", "\x00"):
        response = await browser.post(f"{path}/payouts", data=form | {"amount": amount})
        assert response.status_code == 422, (amount, response.status_code, response.text[:300])
    uploads = {"lang": ("lang.txt", b"de", "text/plain"), "amount": ("a.txt", b"5", "text/plain")}
    response = await browser.post(f"{path}/payouts", data={"attempt": form["attempt"]}, files=uploads)
    assert response.status_code < 500, response.text[:300]
    assert await payout_holds_of(stack, player) == []
    await stack.check_invariants()
