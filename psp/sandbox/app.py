"""The sandbox PSP service: a card PSP (3DS) and an e-wallet, taking payments and making payouts, each
behaving per `metadata.sandbox_scenario`.

State lives in memory. Handlers change a payment or payout only in code without `await` between the check
and the change, so each change is atomic on the event loop and no per-record lock is needed.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import httpx
from fastapi import Depends, FastAPI, Form, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from payloop.money import MoneyError, to_decimal_string, to_minor_units
from payloop.settings import Settings
from psp.sandbox.webhooks import WebhookSender, utc_now_iso

logger = logging.getLogger("psp.sandbox")

# Each sandbox PSP takes payments with, and pays out to, its own method.
METHODS: dict[str, frozenset[str]] = {"card": frozenset({"card"}), "ewallet": frozenset({"ewallet"})}
DECLINE_CODES = {"card": "card_declined", "ewallet": "insufficient_funds"}
PAYOUT_DECLINE_CODE = "payout_declined"
PAYOUT_FAILURE_CODE = "beneficiary_rejected"  # the `fail` scenario: accepted, then refused downstream
_COMMON_SCENARIOS = frozenset(
    {"approve", "decline", "no_webhook", "lost", "duplicate_webhook", "out_of_order", "wrong_amount", "flaky", "slow"}
)
SCENARIOS = _COMMON_SCENARIOS | {"challenge", "3ds_fail"}
PAYOUT_SCENARIOS = _COMMON_SCENARIOS | {"fail"}
CHALLENGE_SCENARIOS = frozenset({"challenge", "3ds_fail"})
SILENT_SCENARIOS = frozenset({"no_webhook", "lost"})
CANCELLABLE = frozenset({"pending", "requires_action", "authorized"})
FLAKY_FAILURES = 2
WRONG_AMOUNT_EXTRA_MINOR = 100
Mode = Literal["up", "down", "slow", "error"]


@dataclass
class SandboxConfig:
    webhook_url_template: str  # "http://127.0.0.1:8000/v1/webhooks/{psp}"
    webhook_secret: str
    public_url: str  # this service's own base URL, for challenge redirect URLs
    settle_delay_seconds: float = 0.05
    webhook_retry_delays: tuple[float, ...] = (0.2, 0.5, 1, 2, 4, 8)
    slow_seconds: float = 2.0


def config_from_settings(settings: Settings) -> SandboxConfig:
    return SandboxConfig(
        webhook_url_template=settings.sandbox_webhook_url,
        webhook_secret=settings.sandbox_webhook_secret,
        public_url=settings.sandbox_psp_browser_url,
    )


class SandboxError(Exception):
    """Answered as `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class CreateBody(BaseModel):
    """What payment and payout creates share."""

    # Unknown fields are refused: in particular the sandbox never accepts card or account data.
    model_config = ConfigDict(extra="forbid")

    merchant_reference: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    amount: str
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    method: str
    customer_id: str = Field(min_length=1, max_length=128)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)


class CreatePaymentBody(CreateBody):
    return_url: str = Field(max_length=2048, pattern=r"^https?://\S+$")


class CreatePayoutBody(CreateBody):
    pass


class ControlBody(BaseModel):
    mode: Mode


@dataclass(kw_only=True)
class Record:
    """What payments and payouts share: identity, money, scenario and status."""

    kind: ClassVar[str]  # "payment" | "payout": the webhook type prefix
    settled_status: ClassVar[str]  # where a successful scenario ends
    stale_status: ClassVar[str]  # what `out_of_order` re-sends late, after settled_status

    psp: str
    reference: str
    merchant_reference: str
    amount_minor: int
    currency: str
    scenario: str
    status: str = "pending"
    created_at: str = field(default_factory=utc_now_iso)
    failure_code: str | None = None

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "reference": self.reference,
            "merchant_reference": self.merchant_reference,
            "status": self.status,
            "amount": to_decimal_string(self.amount_minor, self.currency),
            "currency": self.currency,
        }
        if self.failure_code:
            body["failure_code"] = self.failure_code
        return body


@dataclass(kw_only=True)
class Payment(Record):
    kind = "payment"
    settled_status = "captured"
    stale_status = "authorized"

    return_url: str
    redirect_url: str | None = None

    def to_wire(self) -> dict[str, Any]:
        body = super().to_wire()
        if self.redirect_url and self.status == "requires_action":
            body["redirect_url"] = self.redirect_url
        return body


@dataclass(kw_only=True)
class Payout(Record):
    kind = "payout"
    settled_status = "paid"
    stale_status = "pending"


R = TypeVar("R", bound=Record)
B = TypeVar("B", bound=CreateBody)


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass
class Book(Generic[R]):
    """All records of one kind at the sandbox PSPs, with the state their create endpoint keeps."""

    kind: str
    scenarios: frozenset[str]
    records: dict[tuple[str, str], R] = field(default_factory=dict)  # (psp, merchant_reference)
    idempotent: dict[tuple[str, str], StoredResponse] = field(default_factory=dict)  # (psp, Idempotency-Key)
    flaky_attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # (psp, merchant_reference)

    def find(self, psp: str, merchant_reference: str) -> R:
        record = self.records.get((psp, merchant_reference))
        if record is None:
            raise SandboxError(404, f"{self.kind}_not_found", f"no {psp} {self.kind} {merchant_reference!r}")
        return record

    def add(self, record: R) -> None:
        self.records[(record.psp, record.merchant_reference)] = record


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.payments: Book[Payment] = Book("payment", SCENARIOS)
        self.payouts: Book[Payout] = Book("payout", PAYOUT_SCENARIOS)
        self.by_reference: dict[str, Payment] = {}  # for the challenge pages
        self.modes: dict[str, Mode] = {psp: "up" for psp in METHODS}
        self.webhooks: WebhookSender | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # a strong reference, or the task may be garbage-collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- payments and payouts ----------------------------------------------------------------------

    def behaviour(self, psp: str, scenario: str) -> str:
        # An e-wallet has no 3DS: the challenge scenarios behave as approve there.
        if psp != "card" and scenario in CHALLENGE_SCENARIOS:
            return "approve"
        return scenario

    def create_payment(
        self, psp: str, body: CreatePaymentBody, amount_minor: int, scenario: str
    ) -> tuple[int, dict[str, Any]]:
        payment = Payment(
            psp=psp,
            reference=_new_reference(psp),
            merchant_reference=body.merchant_reference,
            amount_minor=amount_minor,
            currency=body.currency,
            return_url=body.return_url,
            scenario=scenario,
        )
        self.by_reference[payment.reference] = payment
        behaviour = self.behaviour(psp, scenario)
        if behaviour in CHALLENGE_SCENARIOS:
            payment.status = "requires_action"
            payment.redirect_url = f"{self.config.public_url.rstrip('/')}/card/challenge/{payment.reference}"
        return self.start(self.payments, payment, behaviour, DECLINE_CODES[psp])

    def create_payout(
        self, psp: str, body: CreatePayoutBody, amount_minor: int, scenario: str
    ) -> tuple[int, dict[str, Any]]:
        payout = Payout(
            psp=psp,
            reference=_new_reference(psp),
            merchant_reference=body.merchant_reference,
            amount_minor=amount_minor,
            currency=body.currency,
            scenario=scenario,
        )
        return self.start(self.payouts, payout, scenario, PAYOUT_DECLINE_CODE)

    def start(self, book: Book[R], record: R, behaviour: str, decline_code: str) -> tuple[int, dict[str, Any]]:
        """Store a new record and play its scenario's first step; the answer is (HTTP status, body)."""
        book.add(record)
        if behaviour == "decline":
            record.status, record.failure_code = "failed", decline_code
            return 402, _error_body(decline_code, f"the {record.kind} was declined")
        # Only a pending record settles by itself: a challenged payment waits for the form, a lost one forever.
        if record.status == "pending" and behaviour != "lost":
            self.spawn(self.settle(record))
        return 201, record.to_wire()

    async def settle(self, record: Record) -> None:
        await asyncio.sleep(self.config.settle_delay_seconds)
        if record.status != "pending":  # cancelled meanwhile
            return
        if record.scenario == "fail":
            record.status, record.failure_code = "failed", PAYOUT_FAILURE_CODE
        else:
            if record.scenario == "wrong_amount":
                record.amount_minor += WRONG_AMOUNT_EXTRA_MINOR
            record.status = record.settled_status
        self.announce(record)

    def complete_challenge(self, payment: Payment, outcome: str) -> None:
        if payment.status != "requires_action":  # a re-submitted form changes nothing
            return
        if outcome == "success" and payment.scenario != "3ds_fail":
            payment.status = "captured"
        else:
            payment.status, payment.failure_code = "failed", "3ds_failed"
        self.announce(payment)

    def cancel(self, payment: Payment) -> None:
        if payment.status == "cancelled":
            return
        if payment.status not in CANCELLABLE:
            raise SandboxError(409, "not_cancellable", f"a {payment.status} payment cannot be cancelled")
        payment.status = "cancelled"
        self.announce(payment)

    # -- webhooks ----------------------------------------------------------------------------------

    def announce(self, record: Record) -> None:
        """Schedule the webhook(s) for the record's new status, shaped by its scenario."""
        if record.scenario in SILENT_SCENARIOS:
            return
        event = _event(record, record.status, utc_now_iso())
        events = [event]
        if record.status == record.settled_status and record.scenario == "duplicate_webhook":
            events.append(event)
        if record.status == record.settled_status and record.scenario == "out_of_order":
            events.append(_event(record, record.stale_status, record.created_at))
        if self.webhooks is None:
            raise RuntimeError("webhooks are sent only while the app runs (its lifespan creates the sender)")
        self.spawn(self.webhooks.deliver_in_order(record.psp, events))


def _new_reference(psp: str) -> str:
    return f"{psp}_{secrets.token_hex(8)}"


def _event(record: Record, status: str, occurred_at: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"evt_{secrets.token_hex(12)}",
        "type": f"{record.kind}.{status}",
        "merchant_reference": record.merchant_reference,
        "reference": record.reference,
        "status": status,
        "amount": to_decimal_string(record.amount_minor, record.currency),
        "currency": record.currency,
        "occurred_at": occurred_at,
    }
    if record.failure_code and status == "failed":
        event["failure_code"] = record.failure_code
    return event


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _fingerprint(body: CreateBody) -> str:
    return json.dumps(body.model_dump(), sort_keys=True)


def _challenge_page(payment: Payment) -> str:
    amount = html.escape(f"{to_decimal_string(payment.amount_minor, payment.currency)} {payment.currency}")
    if payment.status != "requires_action":
        content = f"<p>This authentication is closed (payment {html.escape(payment.status)}).</p>"
    else:
        # No `action`: the form posts back to this page's own URL, wherever the sandbox is mounted.
        content = (
            f"<p>Approve the payment of <strong>{amount}</strong>?</p>\n"
            '<form method="post">\n'
            '  <button type="submit" name="outcome" value="success">Authenticate</button>\n'
            '  <button type="submit" name="outcome" value="fail">Fail authentication</button>\n'
            "</form>"
        )
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sandbox 3-D Secure</title></head>\n"
        f"<body><h1>Sandbox 3-D Secure</h1>\n{content}\n</body></html>\n"
    )


def create_app(config: SandboxConfig) -> FastAPI:
    sandbox = Sandbox(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            sandbox.webhooks = WebhookSender(
                config.webhook_url_template, config.webhook_secret, config.webhook_retry_delays, http
            )
            try:
                yield
            finally:
                await sandbox.shutdown()  # before the client closes under the deliveries

    app = FastAPI(title="payloop sandbox PSPs", lifespan=lifespan)
    app.state.sandbox = sandbox

    @app.exception_handler(SandboxError)
    async def _sandbox_error(request: Request, exc: SandboxError) -> JSONResponse:
        return JSONResponse(_error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = _error_body("invalid_request", "the request is invalid")
        body["error"]["fields"] = [
            {"loc": list(err.get("loc", ())), "message": err.get("msg", "")} for err in exc.errors()
        ]
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        return JSONResponse(_error_body(code, str(exc.detail)), status_code=exc.status_code)

    def known_psp(psp: str) -> str:
        if psp not in METHODS:
            raise SandboxError(404, "unknown_psp", f"no sandbox PSP named {psp!r}")
        return psp

    async def psp_api(psp: str = Depends(known_psp)) -> str:
        """The PSP's API routes, subject to its control mode (the challenge page is the issuer's, so not)."""
        mode = sandbox.modes[psp]
        if mode == "down":
            raise SandboxError(503, "psp_unavailable", f"{psp} is down")
        if mode == "error":
            raise SandboxError(500, "psp_internal_error", f"{psp} failed")
        if mode == "slow":
            await asyncio.sleep(config.slow_seconds)
        return psp

    def replay(book: Book[Any], key: tuple[str, str] | None, fingerprint: str) -> JSONResponse | None:
        stored = book.idempotent.get(key) if key else None
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise SandboxError(422, "idempotency_key_reused", "Idempotency-Key was used with a different body")
        return JSONResponse(stored.body, status_code=stored.status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def create_once(
        book: Book[Any],
        create: Callable[[str, B, int, str], tuple[int, dict[str, Any]]],
        psp: str,
        body: B,
        idempotency_key: str | None,
    ) -> JSONResponse:
        """The create contract payments and payouts share: validation, Idempotency-Key, flaky and slow."""
        scenario = body.metadata.get("sandbox_scenario", "approve")
        if scenario not in book.scenarios:
            raise SandboxError(422, "unknown_scenario", f"unknown sandbox_scenario {scenario!r}")
        if body.method not in METHODS[psp]:
            raise SandboxError(422, "unsupported_method", f"{psp} does not take method {body.method!r}")
        try:
            amount_minor = to_minor_units(body.amount, body.currency)
        except MoneyError as exc:
            raise SandboxError(422, exc.code, str(exc)) from None

        key = (psp, idempotency_key) if idempotency_key else None
        fingerprint = _fingerprint(body)
        if (stored := replay(book, key, fingerprint)) is not None:
            return stored
        if scenario == "slow":
            await asyncio.sleep(config.slow_seconds)
            if (stored := replay(book, key, fingerprint)) is not None:  # a concurrent retry finished first
                return stored
        # No await from here on: the checks and the creation happen atomically.
        ref_key = (psp, body.merchant_reference)
        if scenario == "flaky":
            attempt = book.flaky_attempts[ref_key] = book.flaky_attempts.get(ref_key, 0) + 1
            if attempt <= FLAKY_FAILURES:
                raise SandboxError(503, "psp_unavailable", f"flaky: attempt {attempt} fails")
        if ref_key in book.records:
            raise SandboxError(
                409, "duplicate_merchant_reference", f"a {book.kind} with this merchant_reference exists"
            )
        status, response = create(psp, body, amount_minor, scenario)
        # A decline is stored too: that record exists (failed), so a retry must get the same answer.
        if key:
            book.idempotent[key] = StoredResponse(fingerprint, status, response)
        return JSONResponse(response, status_code=status)

    @app.post("/{psp}/v1/payments", status_code=201)
    async def create_payment(
        body: CreatePaymentBody,
        psp: str = Depends(psp_api),
        idempotency_key: str | None = Header(default=None, max_length=255),
    ) -> JSONResponse:
        return await create_once(sandbox.payments, sandbox.create_payment, psp, body, idempotency_key)

    @app.get("/{psp}/v1/payments/{merchant_reference}")
    async def get_payment(merchant_reference: str, psp: str = Depends(psp_api)) -> dict[str, Any]:
        return sandbox.payments.find(psp, merchant_reference).to_wire()

    @app.post("/{psp}/v1/payments/{merchant_reference}/cancel")
    async def cancel_payment(merchant_reference: str, psp: str = Depends(psp_api)) -> dict[str, Any]:
        payment = sandbox.payments.find(psp, merchant_reference)
        sandbox.cancel(payment)
        return payment.to_wire()

    @app.post("/{psp}/v1/payouts", status_code=201)
    async def create_payout(
        body: CreatePayoutBody,
        psp: str = Depends(psp_api),
        idempotency_key: str | None = Header(default=None, max_length=255),
    ) -> JSONResponse:
        return await create_once(sandbox.payouts, sandbox.create_payout, psp, body, idempotency_key)

    @app.get("/{psp}/v1/payouts/{merchant_reference}")
    async def get_payout(merchant_reference: str, psp: str = Depends(psp_api)) -> dict[str, Any]:
        return sandbox.payouts.find(psp, merchant_reference).to_wire()

    def challenged_payment(reference: str) -> Payment:
        payment = sandbox.by_reference.get(reference)
        if payment is None or payment.psp != "card" or payment.redirect_url is None:
            raise SandboxError(404, "challenge_not_found", "no such 3-D Secure challenge")
        return payment

    @app.get("/card/challenge/{reference}", response_class=HTMLResponse)
    async def challenge_page(reference: str) -> HTMLResponse:
        return HTMLResponse(_challenge_page(challenged_payment(reference)))

    @app.post("/card/challenge/{reference}")
    async def challenge_submit(
        reference: str, outcome: Literal["success", "fail"] = Form()
    ) -> RedirectResponse:
        payment = challenged_payment(reference)
        sandbox.complete_challenge(payment, outcome)
        return RedirectResponse(payment.return_url, status_code=303)

    @app.get("/control/{psp}")
    async def get_control(psp: str = Depends(known_psp)) -> dict[str, str]:
        return {"psp": psp, "mode": sandbox.modes[psp]}

    @app.post("/control/{psp}")
    async def set_control(body: ControlBody, psp: str = Depends(known_psp)) -> dict[str, str]:
        sandbox.modes[psp] = body.mode
        logger.info("sandbox %s is now %s", psp, body.mode)
        return {"psp": psp, "mode": body.mode}

    @app.get("/_sandbox/deliveries")
    async def deliveries(merchant_reference: str | None = Query(default=None)) -> dict[str, Any]:
        log = sandbox.webhooks.log if sandbox.webhooks else []
        return {
            "deliveries": [
                d for d in log if merchant_reference is None or d["merchant_reference"] == merchant_reference
            ]
        }

    return app
