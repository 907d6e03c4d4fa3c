"""The checkout's pages: deposit, withdrawal and the status of what a form started, in the player's language.

Every page is opened by the session's signed token in its path (sessions.py); the player's browser holds no cookie
and no key. Deposits and payouts start through the same functions as `POST /v1/payments/init` and
`POST /v1/payouts/init`, as the session's client, for the session's player only, with the Idempotency-Key
`checkout:<session>:<attempt>`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from babel.numbers import get_territory_currencies
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from api.auth import Principal
from api.checkout import i18n, messages
from api.checkout.messages import Outcome
from api.checkout.rendering import CheckoutRoute, GoTo, render, render_fragment
from api.checkout.sessions import Attempt, AttemptKind, CheckoutRefused, CheckoutSession, CheckoutSessions
from api.problems import Problem
from api.routes.payments import initiate_deposit, owned_payment
from api.routes.payouts import initiate_withdrawal, owned_payout
from api.routes.routing import available_psps, health_store, methods_now
from api.schemas import PaymentInitRequest, PaymentMeta, PayoutInitRequest, PayoutMeta
from ledger import parse_account, player_account
from payloop.db import utcnow
from payloop.money import CURRENCY_EXPONENTS, MoneyError, currency_exponent, to_decimal_string, to_minor_units
from players import PlayerStore
from psp.registry import PROVIDERS
from psp.routing import payout_choice
from psp.scenarios import PAYOUT_SCENARIOS, SCENARIOS

router = APIRouter(prefix="/checkout", include_in_schema=False, route_class=CheckoutRoute)

ATTEMPT_ID = re.compile(r"^[A-Za-z0-9_-]{16,40}$")
DEFAULT_CURRENCY = "EUR"
# What a checkout form may hold: a few short text fields (attempt, amount, currency, method, scenario, lang).
FORM_LIMITS = {"max_files": 0, "max_fields": 16, "max_part_size": 1024}
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Visit:
    """One request to a session's page: the session, the page's language and how its URLs are made."""

    request: Request
    token: str
    session: CheckoutSession
    lang: i18n.Language
    chosen_lang: str | None  # the player's own choice of language (?lang=), kept on every link and form

    @property
    def base(self) -> str:
        return f"/checkout/{self.token}"

    def url(self, path: str = "", **params: str | None) -> str:
        query = {name: value for name, value in params.items() if value}
        if self.chosen_lang:
            query["lang"] = self.chosen_lang
        return f"{self.base}{path}" + (f"?{urlencode(query)}" if query else "")

    def language_url(self, code: str) -> str:
        """This page in another language: the same GET page and query; a form's answer links to its form."""
        request = self.request
        if request.method == "GET":
            query = {name: value for name, value in request.query_params.items() if name != "lang"}
            return f"{request.url.path}?{urlencode(query | {'lang': code})}"
        form_page = "/withdraw" if request.url.path.endswith("/payouts") else ""
        return f"{self.base}{form_page}?{urlencode({'lang': code})}"

    @property
    def principal(self) -> Principal:
        """The session's client as the payment routes know it: `wallet` only when the key that opened the session
        had it."""
        return Principal(self.session.client_id,
                         frozenset({"payments", "wallet"} if self.session.may_withdraw else {"payments"}))

    @property
    def withdrawals(self) -> bool:
        return self.session.may_withdraw

    def page(self, template: str, *, status_code: int = 200, **context: Any) -> Response:
        return render(self.request, template, self.lang, status_code=status_code, session=self.session,
                      visit=self, **context)


def sessions_of(request: Request) -> CheckoutSessions:
    return request.app.state.checkout_sessions


async def visit(request: Request, token: str, *, for_status: bool = False) -> Visit:
    """The session the token opens (CheckoutRefused otherwise), counted against its rate limit."""
    session = await sessions_of(request).open(token, utcnow(), for_status=for_status)
    if (refusal := await request.app.state.rate_limits.check_checkout(session.session_id)) is not None:
        raise CheckoutRefused(429, refusal.retry_after_seconds)
    return _in_language(request, token, session, request.query_params.get("lang"))


def _in_language(request: Request, token: str, session: CheckoutSession, asked: str | None) -> Visit:
    chosen = i18n.supported(asked)
    code = (chosen or session.locale or i18n.from_accept_language(request.headers.get("accept-language"))
            or i18n.DEFAULT_LOCALE)
    return Visit(request, token, session, i18n.language(code), chosen)


async def posted_form(request: Request, token: str) -> tuple[Visit, FormData]:
    """A form post's session (opened before the body is read) and its few short fields, in the language it asks
    for; a body of another kind or size is refused unread."""
    here = await visit(request, token)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        raise Problem(415, "unsupported_media_type", "Unsupported form", "a checkout form is posted url-encoded")
    if (refusal := await request.app.state.rate_limits.check_client(here.session.client_id)) is not None:
        # A payment started from a checkout counts against its platform's limit, as one started by its API would.
        raise CheckoutRefused(429, refusal.retry_after_seconds)
    form = await request.form(**FORM_LIMITS)
    asked = form.get("lang")
    return _in_language(request, token, here.session, asked if isinstance(asked, str) else None), form


def _store(request: Request) -> PlayerStore:
    return PlayerStore(request.app.state.engine, request.app.state.fx_rates)


def _country(request: Request, session: CheckoutSession) -> str | None:
    return session.country or i18n.region_of(request.headers.get("accept-language"))


def _device_class(request: Request) -> str:
    # Payments are counted per device class on /metrics; the browser's own word is all the checkout has.
    agent = request.headers.get("user-agent", "")
    return "tablet" if "iPad" in agent or "Tablet" in agent else "mobile" if "Mobi" in agent else "desktop"


def _typed_amount(lang: i18n.Language, text: str, currency: str) -> tuple[int | None, str | None]:
    """(minor units, None) or (None, the form error's code) for an amount the player typed."""
    if not text.strip():
        return None, "amount_required"
    value = lang.parse_amount(text)
    if value is None:
        return None, "invalid_amount"
    if value <= 0:
        return None, "amount_not_positive"
    try:
        return to_minor_units(format(value, "f"), currency), None
    except MoneyError as err:
        return None, err.code


def _currency(value: str | None) -> str | None:
    return value if value in CURRENCY_EXPONENTS else None


async def _preselected_currency(here: Visit) -> str:
    """The deposit's currency when the session names none: the one the player already holds money in, else their
    country's (from the session, else the browser's language region), else EUR."""
    request = here.request
    held = [b.currency for b in await request.app.state.ledger.player_balances(here.session.player_id)
            if b.available > 0]
    country = _country(request, here.session)
    local = [cur for cur in (get_territory_currencies(country) if country else []) if cur in CURRENCY_EXPONENTS]
    return next(iter(held + local), DEFAULT_CURRENCY)


def _new_attempt() -> str:
    return secrets.token_urlsafe(18)


def _attempt_key(session: CheckoutSession, attempt_id: str) -> str:
    return f"checkout:{session.session_id}:{attempt_id}"


def _back_to_platform(session: CheckoutSession, **params: str) -> str:
    """The platform's return URL with what happened added to its query."""
    parts = urlsplit(session.return_url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


# --- deposit ---------------------------------------------------------------------------------------------------


@router.get("/{token}")
async def deposit_page(request: Request, token: str) -> Response:
    """The deposit form: first the amount (unless the session fixes it), then the methods for that amount."""
    here = await visit(request, token)
    session, lang = here.session, here.lang
    currency = (session.currency or _currency(request.query_params.get("currency"))
                or await _preselected_currency(here))
    amount_minor, error = session.amount_minor, None
    typed = request.query_params.get("amount")
    if amount_minor is None and typed is not None:
        amount_minor, error = _typed_amount(lang, typed, currency)
    return await _deposit_form(here, currency=currency, amount_minor=amount_minor, typed_amount=typed,
                               errors={"amount": error} if error else {})


async def _deposit_form(here: Visit, *, currency: str, amount_minor: int | None, typed_amount: str | None,
                        errors: dict[str, str], chosen_method: str | None = None, status_code: int = 200) -> Response:
    request, session = here.request, here.session
    now = utcnow()
    store = _store(request)
    profile = await store.profile(session.player_id, now)
    blocked = ("account_closed" if profile.closed else "self_excluded" if profile.self_excluded
               else "kyc_rejected" if profile.kyc_status == "rejected" else None)
    if blocked:
        return here.page("blocked.html", status_code=403 if status_code == 200 else status_code,
                         outcome=messages.DEPOSIT_CODES[blocked], return_url=_back_to_platform(session))
    methods = []
    if amount_minor is not None and not errors.get("amount"):
        methods = await methods_now(request, currency, amount_minor, _country(request, session))
    in_progress = await _deposit_in_progress(here)
    return here.page(
        "deposit.html", status_code=status_code,
        currency=currency, currency_fixed=session.currency is not None, currencies=sorted(CURRENCY_EXPONENTS),
        amount_minor=None if errors.get("amount") else amount_minor, amount_fixed=session.amount_minor is not None,
        typed_amount=typed_amount or "", methods=methods, chosen_method=chosen_method,
        amount_example=here.lang.decimal_input(50 * 10 ** currency_exponent(currency), currency),
        errors=errors, attempt=_new_attempt(),
        limits=await store.deposit_headroom(session.player_id, now), period_names=messages.PERIOD_NAMES,
        in_progress=in_progress,
        scenarios=messages.SANDBOX_DEPOSIT_CHOICES if request.app.state.settings.checkout_sandbox_scenarios else (),
    )


async def _deposit_in_progress(here: Visit) -> str | None:
    """The attempt page of the session's latest deposit while it is not final (a reloaded or re-opened form says
    so rather than only offering to pay again)."""
    sessions = sessions_of(here.request)
    latest = await sessions.latest(here.session, AttemptKind.DEPOSIT)
    if latest is None:
        return None
    attempt_id, payment_id = latest
    try:
        state = await owned_payment(here.request, here.principal, payment_id)
    except Problem:  # not started after all (a start that timed out), or unreadable now: the form is what matters
        return None
    return None if messages.deposit_outcome(state.status, state.failure_code).final else here.url(
        f"/attempts/{attempt_id}")


@router.post("/{token}/deposits")
async def start_deposit(request: Request, token: str) -> Response:
    here, form = await posted_form(request, token)
    session = here.session
    currency = session.currency or _currency(str(form.get("currency", ""))) or DEFAULT_CURRENCY
    amount_minor = session.amount_minor
    errors: dict[str, str] = {}
    if amount_minor is None:
        try:  # the form's hidden amount is the API's decimal string, whatever the page's language
            amount_minor = to_minor_units(str(form.get("amount", "")), currency)
        except MoneyError as err:
            errors["amount"] = err.code
    method = str(form.get("method", ""))
    if method not in request.app.state.methods:
        errors["method"] = "method_required"
    attempt_id = _attempt_id(form, errors)

    async def again() -> Response:
        return await _deposit_form(here, currency=currency, amount_minor=amount_minor, typed_amount=None,
                                   errors=errors, chosen_method=method or None, status_code=422)

    if errors:
        return await again()
    assert amount_minor is not None
    return_token = sessions_of(request).return_token(session, attempt_id)
    lang = f"?{urlencode({'lang': here.chosen_lang})}" if here.chosen_lang else ""
    body = PaymentInitRequest(
        amount=to_decimal_string(amount_minor, currency), currency=currency, method=method,
        player_id=session.player_id,
        return_url=f"{request.app.state.settings.checkout_url}/checkout/return/{return_token}{lang}",
        meta=PaymentMeta(country=_country(request, session), device_class=_device_class(request),
                         sandbox_scenario=_scenario(request, form, SCENARIOS)))
    started = await _start(here, attempt_id, AttemptKind.DEPOSIT,
                           lambda key: initiate_deposit(request, here.principal, body, key))
    if isinstance(started, Problem):
        errors[_field_of(started)] = _form_code(started)
        return await again()
    status, answer = started
    redirect_url = answer.get("redirect_url") if status == 201 else None
    if not _web_address(redirect_url):  # a PSP's page; anything else is not followed
        redirect_url = None
    return RedirectResponse(redirect_url or here.url(f"/attempts/{attempt_id}"), status_code=303)


def _attempt_id(form: FormData, errors: dict[str, str]) -> str:
    attempt_id = str(form.get("attempt", ""))
    if not ATTEMPT_ID.fullmatch(attempt_id):
        errors["form"] = "form_expired"
    return attempt_id


def _web_address(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").scheme in ("https", "http")


async def _start(
    here: Visit, attempt_id: str, kind: AttemptKind,
    initiate: Callable[[str], Awaitable[tuple[int, dict[str, Any], bool]]],
) -> tuple[int, dict[str, Any]] | Problem:
    """Starts the deposit or payout of a form once per attempt and records it: (status, answer) — a decline or a
    refusal included: its status page tells the player what happened — or the Problem of a form the API refused
    (4xx), for the form to show. A failure that may have come after the start (5xx) goes to the status page, which
    finds out whether anything started: the player is never told "nothing happened" and asked to pay again."""
    try:
        status, answer, _replayed = await initiate(_attempt_key(here.session, attempt_id))
    except Problem as problem:
        if problem.status < 500:
            return problem
        if problem.resource_id is None:
            raise
        await _record(here, attempt_id, Attempt(kind, problem.resource_id))
        raise GoTo(here.url(f"/attempts/{attempt_id}")) from None
    resource_id = answer["payment_id" if kind is AttemptKind.DEPOSIT else "payout_id"]
    await _record(here, attempt_id, Attempt(kind, resource_id))
    return status, answer


async def _record(here: Visit, attempt_id: str, attempt: Attempt) -> None:
    recorded = await sessions_of(here.request).record_attempt(here.session, attempt_id, attempt, utcnow())
    if recorded != attempt:  # an attempt id of this session reused for another payment (a crafted form)
        raise Problem(409, "attempt_reused", "Form already used", "this form's attempt started another payment")


def _scenario(request: Request, form: FormData, allowed: frozenset[str]) -> str | None:
    if not request.app.state.settings.checkout_sandbox_scenarios:
        return None
    scenario = str(form.get("scenario", ""))
    return scenario if scenario in allowed else None


def _field_of(problem: Problem) -> str:
    for error in problem.errors:
        if error.get("field") in ("amount", "currency", "method"):
            return "currency" if error["field"] == "currency" else error["field"]
    return "form"


def _form_code(problem: Problem) -> str:
    # A changed form sent again under an attempt id already used: a fresh form (new attempt id) fixes it.
    return "form_expired" if problem.code == "idempotency_key_reused" else problem.code


# --- withdrawal ------------------------------------------------------------------------------------------------


@router.get("/{token}/withdraw")
async def withdrawal_page(request: Request, token: str) -> Response:
    here = await visit(request, token)
    if not here.withdrawals:
        raise Problem(404, "not_found", "Not found", "this checkout offers no withdrawals")
    currency = here.session.currency or _currency(request.query_params.get("currency"))
    return await _withdrawal_form(here, currency=currency, typed_amount=None, errors={})


async def _withdrawal_form(here: Visit, *, currency: str | None, typed_amount: str | None, errors: dict[str, str],
                           status_code: int = 200) -> Response:
    request, session = here.request, here.session
    balances = {b.currency: b.available for b in await request.app.state.ledger.player_balances(session.player_id)}
    if currency is None:
        currency = next((cur for cur, available in balances.items() if available > 0), DEFAULT_CURRENCY)
    available_minor = balances.get(currency, 0)
    preview_minor = session.amount_minor or available_minor
    destination = await _payout_destination(request, session, currency, preview_minor) if preview_minor else None
    return here.page(
        "withdraw.html", status_code=status_code, currency=currency, currency_fixed=session.currency is not None,
        currencies=sorted(set(balances) | {currency}), available_minor=available_minor,
        amount_minor=session.amount_minor, typed_amount=typed_amount or "", destination=destination,
        errors=errors, attempt=_new_attempt(),
        scenarios=messages.SANDBOX_PAYOUT_CHOICES if request.app.state.settings.checkout_sandbox_scenarios else (),
    )


@dataclass(frozen=True)
class Destination:
    method: str
    closed_loop: bool  # back to the method the player last deposited with
    fee_minor: int
    eta: str


async def _payout_destination(request: Request, session: CheckoutSession, currency: str,
                              amount_minor: int) -> Destination | None:
    """Where a payout of `amount_minor` would go now, as the withdrawal's routing step decides it."""
    config = request.app.state.routing
    settings = request.app.state.settings
    last_deposit = await request.app.state.ledger.last_credit(player_account(session.player_id, currency), "deposit")
    deposit_psp = parse_account(last_deposit.debit_account)[1] if last_deposit is not None else None
    # The fallback PSP's methods as its connector states them (psp.registry), as the routing step reads them.
    fallback = next((p.payout_methods for p in PROVIDERS if p.name == settings.payout_fallback_psp), frozenset())
    choice = payout_choice(config, deposit_psp=deposit_psp, fallback_methods=fallback,
                           currency=currency, amount_minor=amount_minor, country=_country(request, session),
                           available=available_psps(), health=await health_store(request).states())
    if choice is None:
        return None
    method, candidate = choice
    psp = config.psp(candidate.psp)
    return Destination(method, candidate.psp == deposit_psp, candidate.fee_minor, psp.payout_eta if psp else "")


@router.post("/{token}/payouts")
async def start_payout(request: Request, token: str) -> Response:
    here, form = await posted_form(request, token)
    session = here.session
    if not here.withdrawals:
        raise Problem(404, "not_found", "Not found", "this checkout offers no withdrawals")
    currency = session.currency or _currency(str(form.get("currency", ""))) or DEFAULT_CURRENCY
    typed = str(form.get("amount", ""))
    errors: dict[str, str] = {}
    amount_minor = session.amount_minor
    if amount_minor is None:
        amount_minor, error = _typed_amount(here.lang, typed, currency)
        if error:
            errors["amount"] = error
    if amount_minor is not None and not errors:
        balance = await request.app.state.ledger.account_balance(player_account(session.player_id, currency))
        if amount_minor > (balance.available if balance else 0):
            # Told before anything starts; the payout's hold still decides when two withdrawals race.
            errors["amount"] = "over_balance"
    attempt_id = _attempt_id(form, errors)
    if errors:
        return await _withdrawal_form(here, currency=currency, typed_amount=typed, errors=errors, status_code=422)
    assert amount_minor is not None
    body = PayoutInitRequest(
        amount=to_decimal_string(amount_minor, currency), currency=currency, player_id=session.player_id,
        meta=PayoutMeta(country=_country(request, session),
                        sandbox_scenario=_scenario(request, form, PAYOUT_SCENARIOS)))
    started = await _start(here, attempt_id, AttemptKind.PAYOUT,
                           lambda key: initiate_withdrawal(request, here.principal, body, key))
    if isinstance(started, Problem):
        errors[_field_of(started)] = _form_code(started)
        return await _withdrawal_form(here, currency=currency, typed_amount=typed, errors=errors, status_code=422)
    return RedirectResponse(here.url(f"/attempts/{attempt_id}"), status_code=303)


# --- status ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What the status page shows of one attempt."""

    kind: AttemptKind
    resource_id: str
    status: str
    outcome: Outcome
    amount: str | None  # None: it never started
    started: str | None  # when, in the page's language
    method: str | None
    continue_url: str | None
    links: dict[str, str]  # retry / other_method / back: where each next step goes


async def _progress(here: Visit, attempt_id: str) -> Progress:
    attempt = await sessions_of(here.request).attempt(here.session, attempt_id) if ATTEMPT_ID.fullmatch(
        attempt_id) else None
    if attempt is None:
        raise Problem(404, "attempt_not_found", "Not found", "no payment of this checkout has this address")
    try:
        return await _progress_of(here, attempt)
    except Problem as problem:
        if problem.code not in ("payment_not_found", "payout_not_found"):
            raise
    # Its start failed before the workflow existed (the form's answer was a 5xx): nothing was charged.
    retry = here.url("" if attempt.kind is AttemptKind.DEPOSIT else "/withdraw")
    return Progress(attempt.kind, attempt.resource_id, "not_started", messages.NOT_STARTED, None, None, None, None,
                    {"retry": retry, "back": _back_to_platform(here.session)})


async def _progress_of(here: Visit, attempt: Attempt) -> Progress:
    if attempt.kind is AttemptKind.DEPOSIT:
        deposit = await owned_payment(here.request, here.principal, attempt.resource_id)
        outcome = messages.deposit_outcome(deposit.status, deposit.failure_code)
        amount = here.lang.money(deposit.amount_minor, deposit.currency)
        again = {"amount": to_decimal_string(deposit.amount_minor, deposit.currency), "currency": deposit.currency}
        links = {"retry": here.url("", **again), "other_method": here.url("", **again),
                 "back": _back_to_platform(here.session, payment_id=deposit.payment_id, status=deposit.status)}
        continue_url = deposit.redirect_url if deposit.status == "requires_action" else None
        return Progress(AttemptKind.DEPOSIT, deposit.payment_id, deposit.status, outcome, amount,
                        here.lang.moment(datetime.fromisoformat(deposit.created_at)), deposit.method,
                        continue_url if _web_address(continue_url) else None,
                        links)
    payout = await owned_payout(here.request, here.principal, attempt.resource_id)
    outcome = messages.payout_outcome(payout.status, payout.failure_code)
    links = {"retry": here.url("/withdraw", currency=payout.currency),
             "back": _back_to_platform(here.session, payout_id=payout.payout_id, status=payout.status)}
    return Progress(AttemptKind.PAYOUT, payout.payout_id, payout.status, outcome,
                    here.lang.money(payout.amount_minor, payout.currency),
                    here.lang.moment(datetime.fromisoformat(payout.created_at)), None, None, links)


@router.get("/{token}/attempts/{attempt_id}")
async def attempt_page(request: Request, token: str, attempt_id: str) -> Response:
    """Where a form and a PSP's page send the player: the payment's status, followed live until final."""
    here = await visit(request, token, for_status=True)
    progress = await _progress(here, attempt_id)
    return here.page("status.html", progress=progress, poll_url=here.url(f"/attempts/{attempt_id}/status"))


@router.get("/{token}/attempts/{attempt_id}/status")
async def attempt_status(request: Request, token: str, attempt_id: str) -> JSONResponse:
    """The status panel, for the page's script to swap in: its HTML, the sentence to announce, whether final."""
    here = await visit(request, token, for_status=True)
    progress = await _progress(here, attempt_id)
    outcome = progress.outcome
    html = render_fragment("status_panel.html", here.lang, visit=here, progress=progress)
    return JSONResponse({"state": f"{progress.status}:{outcome.title}", "final": outcome.final, "html": html,
                         "announce": f"{here.lang.gettext(outcome.title)}. {here.lang.gettext(outcome.detail)}"},
                        headers={"cache-control": "no-store"})


@router.get("/return/{return_token}")
async def back_from_psp(request: Request, return_token: str) -> Response:
    """Where a PSP sends the player back: its token opens one attempt's status page, which this redirects to."""
    session, attempt_id = await sessions_of(request).open_return(return_token, utcnow())
    token = sessions_of(request).token(session)
    here = _in_language(request, token, session, request.query_params.get("lang"))
    return RedirectResponse(here.url(f"/attempts/{attempt_id}"), status_code=303)


@router.get("/{token}/{rest:path}")
async def no_such_page(request: Request, token: str, rest: str) -> Response:
    """Any other address under a checkout URL: a page saying so, not the API's problem+json."""
    raise Problem(404, "not_found", "Not found", "no checkout page has this address")
