"""Connector for the sandbox PSPs (card, e-wallet): JSON over HTTP, HMAC-signed webhooks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import httpx

from payloop.money import to_decimal_string, to_minor_units
from psp import signatures
from psp.base import (
    PAYMENT_STATUSES,
    PAYOUT_STATUSES,
    CreatePaymentRequest,
    CreatePayoutRequest,
    InvalidWebhook,
    PspDeclined,
    PspError,
    PspNotFound,
    PspPayment,
    PspPayout,
    PspRequestRejected,
    PspTransientError,
    WebhookEvent,
)

# 408 and 429 are "try again later", not "your request is wrong".
_TRANSIENT_4XX = frozenset({408, 429})
# A webhook's `type` is "<family>.<status>"; its status must be one of that family's.
_STATUSES_BY_EVENT_FAMILY = {"payment": PAYMENT_STATUSES, "payout": PAYOUT_STATUSES}

T = TypeVar("T")


@dataclass(frozen=True)
class SandboxWebhookVerifier:
    """Verifies and parses one sandbox PSP's webhooks; needs no HTTP client (the API uses it alone)."""

    psp: str
    secret: str = field(repr=False)
    tolerance_seconds: float = 300

    def __call__(self, headers: Mapping[str, str], raw_body: bytes, now: float) -> WebhookEvent:
        """The event in a signed, fresh body; raises InvalidWebhook (and nothing else) for anything refused."""
        signatures.verify(self.secret, headers, raw_body, now, self.tolerance_seconds)
        try:
            body = json.loads(raw_body)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
            family = _str(body, "type").partition(".")[0]
            if family not in _STATUSES_BY_EVENT_FAMILY:
                raise ValueError(f"unknown event type {body['type']!r}")
            return WebhookEvent(
                psp=self.psp,
                event_id=_str(body, "event_id"),
                payment_id=_str(body, "merchant_reference"),
                occurred_at=_str(body, "occurred_at"),
                **_state(body, _STATUSES_BY_EVENT_FAMILY[family]),
            )
        # JSON, UTF-8 and MoneyError are ValueErrors; json.loads raises RecursionError on deep nesting ("[[[[…").
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise InvalidWebhook("malformed_payload", str(exc) or type(exc).__name__) from None


class SandboxConnector:
    def __init__(
        self,
        name: str,
        methods: frozenset[str],
        base_url: str,
        http: httpx.AsyncClient,
        *,
        payout_methods: frozenset[str] | None = None,
    ) -> None:
        """`payout_methods`: by default a sandbox PSP pays out to the methods it takes payments with."""
        self.name = name
        self.methods = methods
        self.payout_methods = methods if payout_methods is None else payout_methods
        self._base_url = base_url.rstrip("/")
        self._http = http

    async def create_payment(self, req: CreatePaymentRequest) -> PspPayment:
        body = _create_body(req.payment_id, req) | {"return_url": req.return_url}
        response = await self._create("/v1/payments", body)
        return self._payment(response, req.payment_id)

    async def get_payment(self, payment_id: str) -> PspPayment:
        response = await self._send("GET", f"/v1/payments/{quote(payment_id, safe='')}")
        return self._payment(response, payment_id)

    async def cancel_payment(self, payment_id: str) -> PspPayment:
        response = await self._send("POST", f"/v1/payments/{quote(payment_id, safe='')}/cancel")
        return self._payment(response, payment_id)

    async def create_payout(self, req: CreatePayoutRequest) -> PspPayout:
        response = await self._create("/v1/payouts", _create_body(req.payout_id, req))
        return self._payout(response, req.payout_id)

    async def get_payout(self, payout_id: str) -> PspPayout:
        response = await self._send("GET", f"/v1/payouts/{quote(payout_id, safe='')}")
        return self._payout(response, payout_id)

    async def _create(self, path: str, body: dict[str, Any]) -> httpx.Response:
        # Our id as the key makes a retried create (after a timeout or a 5xx) return the first one, not a second.
        key = body["merchant_reference"]
        return await self._send("POST", path, json=body, headers={"Idempotency-Key": key}, lookup=False)

    async def _send(self, method: str, path: str, *, lookup: bool = True, **kwargs: Any) -> httpx.Response:
        """`lookup`: the path names one payment or payout, so a 404 means the PSP does not know it."""
        try:
            response = await self._http.request(method, self._base_url + path, **kwargs)
        except httpx.TimeoutException as exc:
            raise PspTransientError("psp_timeout", f"{self.name}: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise PspTransientError("psp_unreachable", f"{self.name}: {type(exc).__name__}") from exc
        if response.is_success:
            return response
        self._raise_for(response, lookup)

    def _raise_for(self, response: httpx.Response, lookup: bool) -> NoReturn:
        status = response.status_code
        code, message = _error_of(response)
        if status == 402:
            raise PspDeclined(code or "declined", message)
        if status >= 500 or status in _TRANSIENT_4XX:
            raise PspTransientError(code or f"psp_http_{status}", message or f"{self.name} answered {status}")
        if status == 404 and lookup:
            raise PspNotFound(code or "payment_not_found", message)
        raise PspRequestRejected(code or f"psp_http_{status}", message or f"{self.name} answered {status}")

    def _payment(self, response: httpx.Response, payment_id: str) -> PspPayment:
        return self._parse(
            response,
            payment_id,
            lambda body: PspPayment(
                psp=self.name,
                payment_id=payment_id,
                redirect_url=_optional_str(body, "redirect_url"),
                **_state(body, PAYMENT_STATUSES),
            ),
        )

    def _payout(self, response: httpx.Response, payout_id: str) -> PspPayout:
        return self._parse(
            response,
            payout_id,
            lambda body: PspPayout(psp=self.name, payout_id=payout_id, **_state(body, PAYOUT_STATUSES)),
        )

    def _parse(self, response: httpx.Response, merchant_reference: str, build: Callable[[dict[str, Any]], T]) -> T:
        """`build(body)` from an answer about `merchant_reference`; anything malformed is a bad_psp_response."""
        try:
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
            if _str(body, "merchant_reference") != merchant_reference:
                raise ValueError("merchant_reference does not match the one asked for")
            return build(body)
        # JSON and MoneyError are ValueErrors; json raises RecursionError on deep nesting.
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise PspError("bad_psp_response", f"{self.name}: {exc}") from None


def _create_body(merchant_reference: str, req: CreatePaymentRequest | CreatePayoutRequest) -> dict[str, Any]:
    """The fields payment and payout creates share."""
    body: dict[str, Any] = {
        "merchant_reference": merchant_reference,
        "amount": to_decimal_string(req.amount_minor, req.currency),
        "currency": req.currency,
        "method": req.method,
        "customer_id": req.player_id,
        "metadata": {"sandbox_scenario": req.scenario} if req.scenario else {},
    }
    if req.country:
        body["country"] = req.country
    return body


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    """The sandbox's `{error: {code, message}}`, tolerating any other body."""
    try:
        error = response.json()["error"]
        code, message = error.get("code"), error.get("message", "")
        return (code if isinstance(code, str) else None), str(message)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None, ""


def _str(body: Mapping[str, Any], field: str) -> str:
    value = body[field]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty string")
    return value


def _optional_str(body: Mapping[str, Any], field: str) -> str | None:
    return _str(body, field) if body.get(field) is not None else None


def _state(body: Mapping[str, Any], statuses: frozenset[str]) -> dict[str, Any]:
    """The reference, status, money and failure code that answers and webhooks carry alike."""
    status = _str(body, "status")
    if status not in statuses:
        raise ValueError(f"unknown status {status!r}")
    currency = _str(body, "currency")
    return {
        "psp_reference": _str(body, "reference"),
        "status": status,
        "amount_minor": to_minor_units(_str(body, "amount"), currency),
        "currency": currency,
        "failure_code": _optional_str(body, "failure_code"),
    }

