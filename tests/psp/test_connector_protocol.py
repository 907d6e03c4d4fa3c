"""Every registered connector conforms to the connector protocol (psp/base.py `PspConnector`), in the spirit of Go's
`var _ Plugin = &Plugin{}`: an instance is a `PspConnector` (runtime_checkable: every member present), and each
protocol method is there, async (a coroutine function, or an async generator where the protocol returns an
AsyncIterator: `settlement_report`), with the protocol's parameter names, kinds, defaults and types."""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest

from payloop.settings import Settings
from payloop.settlement import SettlementLine, SettlementTerms
from psp.base import (
    CreatePaymentRequest,
    CreatePayoutRequest,
    CreateRefundRequest,
    PspConnector,
    PspPayment,
    PspPayout,
    PspRefund,
)
from psp.registry import PROVIDERS

PROTOCOL_METHODS = {
    name: member for name, member in vars(PspConnector).items() if inspect.isfunction(member) and not name.startswith("_")
}
PROTOCOL_ATTRIBUTES = {
    name: hint for name, hint in typing.get_type_hints(PspConnector).items() if name not in PROTOCOL_METHODS
}


def _streams(function: Any) -> bool:
    """Whether the protocol declares `function` as a stream (it returns an AsyncIterator: an async generator)."""
    return typing.get_origin(typing.get_type_hints(function).get("return")) is collections.abc.AsyncIterator


def _is_async(method: Any, expected: Any) -> bool:
    if _streams(expected):
        return inspect.isasyncgenfunction(method)
    return inspect.iscoroutinefunction(method)


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter but `self`."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()][1:]


def conformance_problems(connector: object) -> list[str]:
    """What keeps `connector` from being a PspConnector; empty when it conforms."""
    problems = []
    if not isinstance(connector, PspConnector):
        problems.append("isinstance(connector, PspConnector) is false: a member is missing")
    for name, hint in PROTOCOL_ATTRIBUTES.items():
        if not isinstance(getattr(connector, name, None), typing.get_origin(hint) or hint):
            problems.append(f"attribute {name} is not a {hint}")
    for name, expected in PROTOCOL_METHODS.items():
        method = getattr(type(connector), name, None)
        if method is None:
            problems.append(f"no method {name}")
            continue
        if not _is_async(method, expected):
            problems.append(f"{name} is not async" + (" (an async generator)" if _streams(expected) else ""))
        if _parameters(method) != _parameters(expected):
            problems.append(f"{name}{inspect.signature(method)} is not {name}{inspect.signature(expected)}")
        elif typing.get_type_hints(method) != typing.get_type_hints(expected):
            problems.append(f"{name}: types {typing.get_type_hints(method)} are not {typing.get_type_hints(expected)}")
    return problems


@pytest.fixture(scope="module")
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def test_the_protocol_is_what_the_activities_call() -> None:
    assert set(PROTOCOL_METHODS) == {
        "create_payment", "get_payment", "cancel_payment", "create_payout", "get_payout", "cancel_payout",
        "create_refund", "get_refund", "settlement_report",
    }
    assert set(PROTOCOL_ATTRIBUTES) == {"name", "methods", "payout_methods", "settlement_terms"}
    # Requests are coroutines; the settlement report streams: a plain `def` returning an AsyncIterator, which an
    # async generator implements (an `async def` without `yield` would be a coroutine returning one).
    assert {name for name, m in PROTOCOL_METHODS.items() if not inspect.iscoroutinefunction(m)} == {
        "settlement_report"}
    assert _streams(PROTOCOL_METHODS["settlement_report"])


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
def test_every_registered_connector_conforms(provider: Any, http_client: httpx.AsyncClient) -> None:
    connector = provider.connector(Settings(), http_client)

    assert conformance_problems(connector) == []
    assert (connector.name, connector.methods, connector.payout_methods) == (
        provider.name, provider.methods, provider.payout_methods,
    )


# The check itself catches what it is for: broken connectors are reported.


class _Complete:
    name = "fake"
    methods = frozenset({"card"})
    payout_methods = frozenset({"card"})
    settlement_terms = SettlementTerms()

    async def create_payment(self, req: CreatePaymentRequest) -> PspPayment: ...
    async def get_payment(self, payment_id: str) -> PspPayment: ...
    async def cancel_payment(self, payment_id: str) -> PspPayment: ...
    async def create_payout(self, req: CreatePayoutRequest) -> PspPayout: ...
    async def get_payout(self, payout_id: str) -> PspPayout: ...
    async def cancel_payout(self, payout_id: str) -> PspPayout: ...
    async def create_refund(self, req: CreateRefundRequest) -> PspRefund: ...
    async def get_refund(self, refund_id: str) -> PspRefund: ...

    async def settlement_report(self, day: date) -> AsyncIterator[SettlementLine]:
        yield SettlementLine("fake", "l1", "capture", "pay_1", "ref_1", "EUR", 100, 1, day)


class _NoPayoutCancel(_Complete):
    cancel_payout = None  # type: ignore[assignment]


class _SyncPayoutCancel(_Complete):
    def cancel_payout(self, payout_id: str) -> PspPayout:  # type: ignore[override]
        raise NotImplementedError


class _RenamedParameter(_Complete):
    async def cancel_payout(self, payment_id: str) -> PspPayout:  # type: ignore[override]
        raise NotImplementedError


class _WrongReturnType(_Complete):
    async def cancel_payout(self, payout_id: str) -> PspPayment:  # type: ignore[override]
        raise NotImplementedError


class _RefundByPaymentId(_Complete):
    async def get_refund(self, payment_id: str) -> PspRefund:  # type: ignore[override]
        raise NotImplementedError


class _NoPayoutMethods(_Complete):
    payout_methods = ["card"]  # type: ignore[assignment]


class _CoroutineReport(_Complete):
    async def settlement_report(self, day: date) -> AsyncIterator[SettlementLine]:  # type: ignore[override]
        raise NotImplementedError  # no `yield`: a coroutine, awaited for an iterator, not iterated


class _ReportByString(_Complete):
    async def settlement_report(self, day: str) -> AsyncIterator[SettlementLine]:  # type: ignore[override]
        yield SettlementLine("fake", "l1", "capture", "pay_1", "ref_1", "EUR", 100, 1, date(2031, 1, 2))


class _NoSettlementTerms(_Complete):
    settlement_terms = "T+2"  # type: ignore[assignment]


def test_a_complete_fake_conforms() -> None:
    assert conformance_problems(_Complete()) == []


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (_NoPayoutCancel, "no method cancel_payout"),
        (_SyncPayoutCancel, "cancel_payout is not async"),
        (_RenamedParameter, "cancel_payout(self, payment_id"),
        (_WrongReturnType, "cancel_payout: types"),
        (_RefundByPaymentId, "get_refund(self, payment_id"),
        (_NoPayoutMethods, "attribute payout_methods"),
        (_CoroutineReport, "settlement_report is not async (an async generator)"),
        (_ReportByString, "settlement_report: types"),
        (_NoSettlementTerms, "attribute settlement_terms"),
    ],
)
def test_a_broken_connector_is_reported(broken: type, problem: str) -> None:
    problems = conformance_problems(broken())

    assert any(problem in p for p in problems), problems
