"""What every HTTP PSP connector shares: transport errors, error classification, answer and webhook parsing.

A provider module subclasses `HttpPspConnector` (its wire format: request bodies, answers, error bodies and its
error table) and `SignedWebhookVerifier` (its signature scheme and webhook body).

Error classification (a GSM-style table per provider): `ERROR_TABLE` maps the provider's error codes to a
`PspDecision` (payloop/psp_decision.py, the vocabulary the activities and workflows share): `RETRY`
(PspTransientError: retry the same PSP), `FAILOVER` (PspFailover: go to the next PSP now), `HARD_DECLINE`
(PspDeclined) or `STEP_UP` (PspStepUpRequired: needs 3DS / SCA). Codes not in the table: 402 → HARD_DECLINE,
5xx / 408 / 429 → RETRY, 404 → NOT_FOUND (PspNotFound on a look-up or cancel), any other 4xx → REJECTED
(PspRequestRejected: our request is wrong or illegal in the record's state; like a hard decline it is never
retried and never failed over).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, NoReturn, Protocol
from urllib.parse import quote

import httpx

from payloop.money import to_minor_units
from payloop.psp_decision import PspDecision
from payloop.settlement import (
    GROSS_SIGNS,
    MalformedReport,
    SettlementLine,
    SettlementTerms,
)
from psp import signatures
from psp.base import (
    DISPUTE_STATUSES,
    PAYMENT_STATUSES,
    PAYOUT_STATUSES,
    REFUND_STATUSES,
    CreatePaymentRequest,
    CreatePayoutRequest,
    CreateRefundRequest,
    InvalidWebhook,
    PspDeclined,
    PspError,
    PspFailover,
    PspNotFound,
    PspPayment,
    PspPayout,
    PspRefund,
    PspRequestRejected,
    PspStepUpRequired,
    PspTransientError,
    WebhookEvent,
)

# 408 and 429 are "try again later", not "your request is wrong".
_TRANSIENT_4XX = frozenset({408, 429})
_ERRORS: dict[PspDecision, type[PspError]] = {
    PspDecision.RETRY: PspTransientError,
    PspDecision.FAILOVER: PspFailover,
    PspDecision.HARD_DECLINE: PspDeclined,
    PspDecision.STEP_UP: PspStepUpRequired,
}
# Any malformed JSON or value: JSON and MoneyError are ValueErrors; json raises RecursionError on deep nesting.
PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, RecursionError)

# Transport errors raised before a request was sent (no connection, or none free in the pool).
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Each event kind's status vocabulary (psp/base.py WebhookEvent).
_STATUSES = {"payment": PAYMENT_STATUSES, "payout": PAYOUT_STATUSES, "refund": REFUND_STATUSES,
             "dispute": DISPUTE_STATUSES}


class ReportParser(Protocol):
    """Reads one settlement report a line at a time (psp/settlement_parsing.py `LineParser`); raises ValueError and
    co (PARSE_ERRORS) for what it cannot read."""

    def feed(self, text: str) -> SettlementLine | None:
        """The line `text` (without its line break) holds, or None for one that holds none (a header)."""
        ...

    def finish(self) -> None:
        """The report ended here: raise if it cannot have."""
        ...


def classify(table: Mapping[str, PspDecision], status: int, code: str | None) -> PspDecision:
    """The decision for an error answer: the table's for a code it lists (one of
    `PspDecision.table_decisions()`), else by the HTTP status: REJECTED, or NOT_FOUND (only meaningful on a
    request that names one payment or payout)."""
    if code is not None and code in table:
        return PspDecision(table[code])
    if status == 402:
        return PspDecision.HARD_DECLINE
    if status >= 500 or status in _TRANSIENT_4XX:
        return PspDecision.RETRY
    if status == 404:
        return PspDecision.NOT_FOUND
    return PspDecision.REJECTED


class HttpPspConnector:
    """The PspConnector protocol over JSON/HTTP; subclasses give the wire format."""

    ERROR_TABLE: ClassVar[Mapping[str, PspDecision]] = {}
    # Paths under the base URL; `{ref}` is our (escaped) merchant reference.
    PAYMENTS_PATH: ClassVar[str] = "/v1/payments"
    PAYOUTS_PATH: ClassVar[str] = "/v1/payouts"
    REFUNDS_PATH: ClassVar[str] = "/v1/refunds"
    SETTLEMENT_PATH: ClassVar[str] = "/settlement"  # under the reports URL; `?date=YYYY-MM-DD`
    # Its contract's settlement lag and fee tolerance (each provider module says its own).
    settlement_terms: SettlementTerms

    def __init__(
        self,
        name: str,
        methods: frozenset[str],
        base_url: str,
        http: httpx.AsyncClient,
        *,
        payout_methods: frozenset[str] | None = None,
        reports_url: str | None = None,
    ) -> None:
        """`payout_methods`: by default a PSP pays out to the methods it takes payments with. `reports_url`: where
        its reports are downloaded (PSPs serve them apart from their API); by default the sandbox's layout, an API
        at `<root>/<psp>` and its reports at `<root>/reports/<psp>`."""
        self.name = name
        self.methods = methods
        self.payout_methods = methods if payout_methods is None else payout_methods
        self._base_url = base_url.rstrip("/")
        self._reports_url = (reports_url or f"{self._base_url.rpartition('/')[0]}/reports/{name}").rstrip("/")
        self._http = http

    # -- the wire format (subclasses) --------------------------------------------------------------

    def payment_body(self, req: CreatePaymentRequest) -> dict[str, Any]:
        raise NotImplementedError

    def payout_body(self, req: CreatePayoutRequest) -> dict[str, Any]:
        raise NotImplementedError

    def refund_body(self, req: CreateRefundRequest) -> dict[str, Any]:
        raise NotImplementedError

    def parse_payment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`merchant_reference`, `psp_reference`, `status` (ours), `amount_minor`, `currency`, `failure_code`,
        `fee_minor`, `redirect_url` (and, where the PSP tells the card, `bin_country`, `instrument`) from an answer
        about a payment; raises ValueError/KeyError/TypeError when malformed."""
        raise NotImplementedError

    def parse_payout(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """As parse_payment, without `redirect_url`."""
        raise NotImplementedError

    def parse_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """As parse_payout, about a refund (`psp_reference`: the refund's own)."""
        raise NotImplementedError

    def error_of(self, body: Any) -> tuple[str | None, str]:
        """The provider's error code and message in an error answer's JSON."""
        raise NotImplementedError

    def settlement_parser(self, day: date) -> ReportParser:
        """A parser of this provider's settlement report of `day`."""
        raise NotImplementedError

    # -- the protocol ------------------------------------------------------------------------------

    async def create_payment(self, req: CreatePaymentRequest) -> PspPayment:
        response = await self._create(self.PAYMENTS_PATH, self.payment_body(req), req.payment_id)
        return self._payment(response, req.payment_id)

    async def get_payment(self, payment_id: str) -> PspPayment:
        response = await self._send("GET", f"{self.PAYMENTS_PATH}/{quote(payment_id, safe='')}")
        return self._payment(response, payment_id)

    async def cancel_payment(self, payment_id: str) -> PspPayment:
        response = await self._send("POST", f"{self.PAYMENTS_PATH}/{quote(payment_id, safe='')}/cancel")
        return self._payment(response, payment_id)

    async def create_payout(self, req: CreatePayoutRequest) -> PspPayout:
        response = await self._create(self.PAYOUTS_PATH, self.payout_body(req), req.payout_id)
        return self._payout(response, req.payout_id)

    async def get_payout(self, payout_id: str) -> PspPayout:
        response = await self._send("GET", f"{self.PAYOUTS_PATH}/{quote(payout_id, safe='')}", lookup="payout")
        return self._payout(response, payout_id)

    async def cancel_payout(self, payout_id: str) -> PspPayout:
        response = await self._send(
            "POST", f"{self.PAYOUTS_PATH}/{quote(payout_id, safe='')}/cancel", lookup="payout"
        )
        return self._payout(response, payout_id)

    async def create_refund(self, req: CreateRefundRequest) -> PspRefund:
        response = await self._create(self.REFUNDS_PATH, self.refund_body(req), req.refund_id)
        return self._refund(response, req.refund_id)

    async def get_refund(self, refund_id: str) -> PspRefund:
        response = await self._send("GET", f"{self.REFUNDS_PATH}/{quote(refund_id, safe='')}", lookup="refund")
        return self._refund(response, refund_id)

    async def settlement_report(self, day: date) -> AsyncIterator[SettlementLine]:
        """The settlement report of UTC `day`, parsed line by line as it streams in (never read whole)."""
        parser = self.settlement_parser(day)
        number = 0
        with self._transport_errors():
            async with self._http.stream(
                "GET", self._reports_url + self.SETTLEMENT_PATH, params={"date": day.isoformat()}
            ) as response:
                if not response.is_success:
                    await response.aread()  # an error answer: small, and read to say what it is
                    self._raise_for(response, None)
                async for text in response.aiter_lines():
                    number += 1
                    line = self._report_line(parser, text, number, day)
                    if line is not None:
                        yield line
        try:
            parser.finish()
        except PARSE_ERRORS as exc:
            raise MalformedReport(f"{self.name} settlement report of {day}, line {number + 1}: {exc}") from None

    def _report_line(self, parser: ReportParser, text: str, number: int, day: date) -> SettlementLine | None:
        try:
            line = parser.feed(text)
            if line is not None:
                _check_line(line)
            return line
        except PARSE_ERRORS as exc:
            raise MalformedReport(f"{self.name} settlement report of {day}, line {number}: {exc}") from None

    # -- plumbing ----------------------------------------------------------------------------------

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """Where a transport failure, sending a request or reading an answer's body, becomes PspTransientError."""
        try:
            yield
        except _NOT_SENT as exc:
            # The request never left us: the PSP cannot have taken it.
            raise PspTransientError("psp_unreachable", f"{self.name}: {type(exc).__name__}") from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise PspTransientError("psp_timeout", f"{self.name}: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            # Sent, then the connection broke: the PSP may have taken it, so this is not "unreachable".
            raise PspTransientError("psp_connection_lost", f"{self.name}: {type(exc).__name__}") from exc

    async def _create(self, path: str, body: dict[str, Any], key: str) -> httpx.Response:
        # Our id as the key makes a retried create (after a timeout or a 5xx) return the first one, not a second.
        return await self._send("POST", path, json=body, headers={"Idempotency-Key": key}, lookup=None)

    async def _send(
        self, method: str, path: str, *, lookup: str | None = "payment", **kwargs: Any
    ) -> httpx.Response:
        """`lookup`: what the path names, "payment", "payout" or "refund" (a look-up or a cancel), so a 404 means
        the PSP does not know it (PspNotFound); None for a create, where a 404 is a wrong URL (PspRequestRejected)."""
        with self._transport_errors():
            # The client's read timeout also bounds the whole exchange, so an attempt always ends here, with an
            # error the workflow can act on, before its activity times out with our request still in flight.
            async with asyncio.timeout(self._http.timeout.read):
                response = await self._http.request(method, self._base_url + path, **kwargs)
        if response.is_success:
            return response
        self._raise_for(response, lookup)

    def _raise_for(self, response: httpx.Response, lookup: str | None) -> NoReturn:
        status = response.status_code
        try:
            code, message = self.error_of(response.json())
        except PARSE_ERRORS:
            code, message = None, ""
        if not isinstance(code, str) or not code:
            code = None
        message = message or f"{self.name} answered {status}"
        decision = classify(self.ERROR_TABLE, status, code)
        if decision is PspDecision.HARD_DECLINE:
            raise PspDeclined(code or "declined", message)
        if decision in _ERRORS:
            raise _ERRORS[decision](code or f"psp_http_{status}", message)
        if decision is PspDecision.NOT_FOUND and lookup:
            raise PspNotFound(code or f"{lookup}_not_found", message)
        raise PspRequestRejected(code or f"psp_http_{status}", message)

    def _payment(self, response: httpx.Response, payment_id: str) -> PspPayment:
        fields = self._parse(response, payment_id, self.parse_payment, PAYMENT_STATUSES)
        return PspPayment(psp=self.name, payment_id=payment_id, **fields)

    def _payout(self, response: httpx.Response, payout_id: str) -> PspPayout:
        fields = self._parse(response, payout_id, self.parse_payout, PAYOUT_STATUSES)
        return PspPayout(psp=self.name, payout_id=payout_id, **fields)

    def _refund(self, response: httpx.Response, refund_id: str) -> PspRefund:
        fields = self._parse(response, refund_id, self.parse_refund, REFUND_STATUSES)
        return PspRefund(psp=self.name, refund_id=refund_id, **fields)

    def _parse(
        self, response: httpx.Response, merchant_reference: str,
        parse: Callable[[Mapping[str, Any]], dict[str, Any]], statuses: frozenset[str],
    ) -> dict[str, Any]:
        """The fields `parse` reads from an answer about `merchant_reference`, with a status of `statuses`;
        anything malformed, or about another record, is a bad_psp_response."""
        try:
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
            fields = _about(parse(body), merchant_reference)
            _check_status(fields["status"], statuses)
            _check_fee(fields["fee_minor"])
            return fields
        except PARSE_ERRORS as exc:
            raise PspError("bad_psp_response", f"{self.name}: {exc}") from None


def _check_line(line: SettlementLine) -> None:
    """What every settlement line must be, whatever its format: a kind we know, its gross of the kind's sign (zero
    for a chargeback fee), a fee never negative (a fee is charged, never paid to us)."""
    sign = GROSS_SIGNS.get(line.kind)
    if sign is None:
        raise ValueError(f"unknown line kind {line.kind!r}")
    if (line.gross_minor > 0) - (line.gross_minor < 0) != sign:
        raise ValueError(f"a {line.kind} line's gross {line.gross_minor} has the wrong sign")
    if line.fee_minor < 0:
        raise ValueError(f"a negative fee {line.fee_minor}")


def _about(fields: dict[str, Any], merchant_reference: str) -> dict[str, Any]:
    if fields.pop("merchant_reference") != merchant_reference:
        raise ValueError("merchant reference does not match the one asked for")
    return fields


def _check_status(status: Any, statuses: frozenset[str]) -> None:
    if status not in statuses:
        raise ValueError(f"unknown status {status!r}")


def _check_fee(fee_minor: Any) -> None:
    # A fee is charged, never paid to us: negative would turn a cost into income in our ledger.
    if fee_minor is not None and (type(fee_minor) is not int or fee_minor < 0):
        raise ValueError("a fee must be a non-negative amount")


@dataclass(frozen=True)
class SignedWebhookVerifier:
    """Verifies and parses one PSP's webhooks; needs no HTTP client (the API uses it alone).

    `secret`: the valid secrets, newest first ("new,old" or a sequence); any of them verifies.
    """

    SCHEME: ClassVar[signatures.SignatureScheme] = signatures.DESIGN_HMAC

    psp: str
    secret: str | Sequence[str] = field(repr=False)
    tolerance_seconds: float = 300

    def __post_init__(self) -> None:
        object.__setattr__(self, "secret", signatures.parse_secrets(self.secret))

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(self.secret)

    def __call__(self, headers: Mapping[str, str], raw_body: bytes, now: float) -> WebhookEvent:
        """The event in a signed, fresh body; raises InvalidWebhook (and nothing else) for anything refused."""
        message_id = self.SCHEME.verify(self.secrets, headers, raw_body, now, self.tolerance_seconds)
        try:
            body = json.loads(raw_body)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
            fields = self.parse_event(body, message_id)
            statuses = _STATUSES.get(fields["kind"])
            if statuses is None:
                raise ValueError(f"unknown event kind {fields['kind']!r}")
            _check_status(fields["status"], statuses)
            _check_fee(fields.get("fee_minor"))
            _check_dispute_fields(fields)
            return WebhookEvent(psp=self.psp, **fields)
        except PARSE_ERRORS as exc:
            raise InvalidWebhook("malformed_payload", str(exc) or type(exc).__name__) from None

    def parse_event(self, body: Mapping[str, Any], message_id: str | None) -> dict[str, Any]:
        """WebhookEvent's fields but `psp` (`kind`: "payment" | "payout" | "refund" | "dispute"); raises ValueError
        & co."""
        raise NotImplementedError


# The inbox's column sizes (psp/inbox.py): longer values are refused as malformed, not failed on at storage.
_DISPUTE_FIELD_CHARS = {"dispute_id": 200, "reason_code": 50}


def _check_dispute_fields(fields: Mapping[str, Any]) -> None:
    """A dispute event names its dispute and reason code; no other event has them."""
    disputed = fields["kind"] == "dispute"
    for name, max_chars in _DISPUTE_FIELD_CHARS.items():
        value = fields.get(name)
        if not disputed:
            if value is not None:
                raise ValueError(f"{name} belongs to dispute events only")
        elif not isinstance(value, str) or not 0 < len(value) <= max_chars:
            raise ValueError(f"a dispute event needs {name}: 1 to {max_chars} characters")


# -- field helpers for wire formats ---------------------------------------------------------------


def req_str(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def opt_str(body: Mapping[str, Any], name: str) -> str | None:
    return req_str(body, name) if body.get(name) is not None else None


_ZERO = re.compile(r"0(\.0+)?")


def decimal_fee_minor(value: Any, currency: str) -> int:
    """A fee as a decimal string in `currency` ("0.95"): an amount, except that it may be zero ("0.00")."""
    if isinstance(value, str) and _ZERO.fullmatch(value):
        to_minor_units("1" + value[1:], currency)  # the currency's precision rules, as for any amount
        return 0
    return to_minor_units(value, currency)


def req_obj(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body[name]
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object")
    return value


def mapped(vocabulary: Mapping[str, str], value: Any, name: str = "status") -> str:
    """A provider's status word in our vocabulary."""
    if not isinstance(value, str) or value not in vocabulary:
        raise ValueError(f"unknown {name} {value!r}")
    return vocabulary[value]
