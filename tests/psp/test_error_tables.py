"""Error classification per provider (GSM-style tables): code → a PspDecision (retry | failover | hard_decline |
step_up), and the exception each connector raises for it."""

from __future__ import annotations

import httpx
import pytest

from payloop.psp_decision import PspDecision
from psp.base import (
    PspDeclined,
    PspError,
    PspFailover,
    PspNotFound,
    PspRequestRejected,
    PspStepUpRequired,
    PspTransientError,
)
from psp.http_connector import classify
from psp.registry import PROVIDERS, error_tables
from psp.sandbox.app import DECLINE_CODES, PAYOUT_DECLINE_CODE
from psp.sandbox.formats import FORMATS
from psp.scenarios import ERROR_SCENARIO_CODES
from tests.psp.psp_testkit import CONNECTOR_CLASSES, PSP_METHOD, payment_request

EXCEPTION_FOR = {
    PspDecision.RETRY: PspTransientError,
    PspDecision.FAILOVER: PspFailover,
    PspDecision.HARD_DECLINE: PspDeclined,
    PspDecision.STEP_UP: PspStepUpRequired,
}
SCENARIO_DECISION = {
    "soft_decline": PspDecision.STEP_UP, "issuer_unavailable": PspDecision.FAILOVER, "rate_limited": PspDecision.RETRY,
}


def test_error_tables_cover_every_provider_with_known_decisions() -> None:
    tables = error_tables()

    assert set(tables) == {p.name for p in PROVIDERS} == {
        "card", "card_b", "ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto", "crypto_b"}
    for psp, table in tables.items():
        assert table and set(table.values()) <= PspDecision.table_decisions(), psp
        assert all(type(decision) is PspDecision for decision in table.values()), psp
    assert set(tables["card"].values()) == PspDecision.table_decisions()
    assert tables["card"]["authentication_required"] is PspDecision.STEP_UP
    assert tables["card"]["issuer_unavailable"] is PspDecision.FAILOVER
    assert tables["card"]["rate_limited"] is PspDecision.RETRY
    assert tables["card"]["card_declined"] is PspDecision.HARD_DECLINE
    tables["card"]["card_declined"] = PspDecision.RETRY  # a copy: callers cannot change the connector's table
    assert error_tables()["card"]["card_declined"] is PspDecision.HARD_DECLINE


def test_each_provider_table_is_its_connector_class_table() -> None:
    for p in PROVIDERS:
        assert p.error_table == CONNECTOR_CLASSES[p.name].ERROR_TABLE, p.name


def test_every_code_the_sandbox_produces_is_classified() -> None:
    tables = error_tables()
    for psp, codes in ERROR_SCENARIO_CODES.items():
        for scenario, code in codes.items():
            assert tables[psp][code] == SCENARIO_DECISION[scenario], (psp, code)
    for psp, code in DECLINE_CODES.items():
        assert tables[psp][code] is PspDecision.HARD_DECLINE
        assert tables[psp][PAYOUT_DECLINE_CODE] is PspDecision.HARD_DECLINE


@pytest.mark.parametrize(
    ("status", "decision"),
    [(500, PspDecision.RETRY), (502, PspDecision.RETRY), (503, PspDecision.RETRY), (408, PspDecision.RETRY),
     (429, PspDecision.RETRY), (402, PspDecision.HARD_DECLINE), (404, PspDecision.NOT_FOUND),
     (400, PspDecision.REJECTED), (409, PspDecision.REJECTED), (422, PspDecision.REJECTED)],
)
def test_unknown_codes_are_classified_by_http_status(status: int, decision: PspDecision) -> None:
    assert classify({}, status, "never_heard_of_it") is decision
    assert classify({}, status, None) is decision


def test_the_table_wins_over_the_http_status() -> None:
    table = {"issuer_unavailable": PspDecision.FAILOVER, "sca": PspDecision.STEP_UP}
    assert classify(table, 503, "issuer_unavailable") is PspDecision.FAILOVER
    assert classify(table, 402, "sca") is PspDecision.STEP_UP


def _connector(psp: str, status: int, code: str | None) -> object:
    def handler(request: httpx.Request) -> httpx.Response:
        body = FORMATS[psp].error(status, code, "no") if code else None
        return httpx.Response(status, json=body) if body else httpx.Response(status)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return CONNECTOR_CLASSES[psp](psp, frozenset({PSP_METHOD[psp]}), f"http://psp.test/{psp}", http)


@pytest.mark.parametrize(
    ("psp", "code", "decision"),
    [(p.name, code, decision) for p in PROVIDERS for code, decision in sorted(p.error_table.items())],
)
async def test_each_connector_raises_per_its_table(psp: str, code: str, decision: PspDecision) -> None:
    connector = _connector(psp, 400, code)  # the status does not matter for a code in the table

    with pytest.raises(PspError) as raised:
        await connector.create_payment(payment_request(method=PSP_METHOD[psp]))  # type: ignore[attr-defined]

    assert type(raised.value) is EXCEPTION_FOR[decision] and raised.value.code == code


@pytest.mark.parametrize("psp", ["card", "ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto"])
@pytest.mark.parametrize(
    ("status", "code", "error", "expected_code"),
    [
        (503, "mystery", PspTransientError, "mystery"),
        (500, None, PspTransientError, "psp_http_500"),
        (402, "mystery", PspDeclined, "mystery"),
        (402, None, PspDeclined, "declined"),
        (400, "mystery", PspRequestRejected, "mystery"),
        (422, "unknown_scenario", PspRequestRejected, "unknown_scenario"),
    ],
)
async def test_unknown_codes_fall_back_on_the_status(
    psp: str, status: int, code: str | None, error: type[PspError], expected_code: str
) -> None:
    connector = _connector(psp, status, code)
    with pytest.raises(PspError) as raised:
        await connector.create_payment(payment_request(method=PSP_METHOD[psp]))  # type: ignore[attr-defined]
    assert type(raised.value) is error and raised.value.code == expected_code


@pytest.mark.parametrize("psp", ["ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto"])
async def test_a_404_on_a_lookup_is_not_found_in_every_shape(psp: str) -> None:
    connector = _connector(psp, 404, "payment_not_found")
    with pytest.raises(PspNotFound):
        await connector.get_payment("pay_1")  # type: ignore[attr-defined]


def test_new_errors_are_their_own_kinds() -> None:
    for cls in (PspFailover, PspStepUpRequired):
        assert issubclass(cls, PspError)
        assert not issubclass(cls, (PspTransientError, PspDeclined, PspRequestRejected, PspNotFound))
    assert PspFailover("bank_unavailable").code == "bank_unavailable"
