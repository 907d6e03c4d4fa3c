"""psp/scenarios.py: the scenario names are exactly what the running sandbox accepts, per PSP, for payments,
payouts and refunds; and the module (what the product API reads) is pure data that pulls in neither FastAPI nor the
sandbox."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from psp.base import CreateRefundRequest, PspRequestRejected
from psp.http_connector import HttpPspConnector
from psp.sandbox import app as sandbox_app
from psp.sandbox.formats import FORMATS
from psp.scenarios import (
    FAMILIES,
    PAYMENT_SCENARIOS_BY_PSP,
    PAYOUT_SCENARIOS,
    PAYOUT_SCENARIOS_BY_PSP,
    PSPS,
    REFUND_SCENARIOS,
    REFUND_SCENARIOS_BY_PSP,
    SCENARIOS,
    SETTLEMENT_SCENARIOS,
    SILENT_SCENARIOS,
)
from tests.psp.psp_testkit import RunningSandbox, make_connector, payment_request, payout_request

# Every name any PSP takes, and some no PSP takes.
CANDIDATES = sorted(SCENARIOS | PAYOUT_SCENARIOS | REFUND_SCENARIOS | {"explode", "LOST", "approve "})


async def _accepted(connector: HttpPspConnector, kind: str, scenario: str) -> bool:
    """Whether the sandbox takes `scenario` for a `kind` at this PSP, asked over HTTP without creating anything:
    the sandbox checks the scenario before the method, so an unsupported method answers `unsupported_method` for a
    scenario it knows and `unknown_scenario` for one it does not."""
    create = connector.create_payment if kind == "payment" else connector.create_payout
    request = payment_request if kind == "payment" else payout_request
    with pytest.raises(PspRequestRejected) as rejected:
        await create(request(scenario, method="no_such_method"))  # type: ignore[arg-type, operator]
    assert rejected.value.code in {"unsupported_method", "unknown_scenario"}, rejected.value
    return rejected.value.code == "unsupported_method"


@pytest.mark.parametrize("kind", ["payment", "payout"])
@pytest.mark.parametrize("psp", PSPS)
async def test_the_scenario_sets_are_what_the_sandbox_accepts(
    psp: str, kind: str, sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    connector = make_connector(psp, sandbox.url, http)
    expected = (PAYMENT_SCENARIOS_BY_PSP if kind == "payment" else PAYOUT_SCENARIOS_BY_PSP)[psp]

    answers = await asyncio.gather(*(_accepted(connector, kind, name) for name in CANDIDATES))

    accepted = {name for name, ok in zip(CANDIDATES, answers, strict=True) if ok}
    assert accepted == expected


async def _refund_accepted(connector: HttpPspConnector, scenario: str) -> bool:
    """As _accepted, for a refund of a payment that does not exist: the scenario is checked first, so a known one
    answers `payment_not_refundable`, an unknown one `unknown_scenario`."""
    request = CreateRefundRequest(refund_id=f"rf_{scenario.strip() or 'x'}", payment_id="pay_none",
                                  psp_reference="none", amount_minor=100, currency="EUR", scenario=scenario)
    with pytest.raises(PspRequestRejected) as rejected:
        await connector.create_refund(request)
    assert rejected.value.code in {"payment_not_refundable", "unknown_scenario"}, rejected.value
    return rejected.value.code == "payment_not_refundable"


@pytest.mark.parametrize("psp", PSPS)
async def test_the_refund_scenarios_are_what_the_sandbox_accepts(
    psp: str, sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    connector = make_connector(psp, sandbox.url, http)

    answers = await asyncio.gather(*(_refund_accepted(connector, name) for name in CANDIDATES))

    assert {name for name, ok in zip(CANDIDATES, answers, strict=True) if ok} == REFUND_SCENARIOS_BY_PSP[psp]


def test_the_unions_and_families() -> None:
    assert set(PSPS) == set(FAMILIES) == set(FORMATS) == set(sandbox_app.METHODS)
    assert SCENARIOS == frozenset().union(*PAYMENT_SCENARIOS_BY_PSP.values())
    assert PAYOUT_SCENARIOS == frozenset().union(*PAYOUT_SCENARIOS_BY_PSP.values())
    assert REFUND_SCENARIOS == frozenset().union(*REFUND_SCENARIOS_BY_PSP.values())
    # A refund's silent and never-settling scenarios mean what they mean for payments and payouts.
    assert REFUND_SCENARIOS & SILENT_SCENARIOS == {"lost", "no_webhook"}
    assert SILENT_SCENARIOS <= SCENARIOS & PAYOUT_SCENARIOS
    # Settlement discrepancies are about a payment's capture line: every PSP takes them for payments only.
    assert all(SETTLEMENT_SCENARIOS <= PAYMENT_SCENARIOS_BY_PSP[psp] for psp in PSPS)
    assert not SETTLEMENT_SCENARIOS & (PAYOUT_SCENARIOS | REFUND_SCENARIOS)
    # PSPs of one family take the same scenarios.
    for psp, family in FAMILIES.items():
        assert PAYMENT_SCENARIOS_BY_PSP[psp] == PAYMENT_SCENARIOS_BY_PSP[family]
        assert PAYOUT_SCENARIOS_BY_PSP[psp] == PAYOUT_SCENARIOS_BY_PSP[family]
        assert REFUND_SCENARIOS_BY_PSP[psp] == REFUND_SCENARIOS_BY_PSP[family]


def _modules_after_import(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return set(out.split())


def test_psp_scenarios_is_pure_data() -> None:
    loaded = _modules_after_import("import psp.scenarios")

    assert not {m for m in loaded if m.split(".")[0] in {"fastapi", "starlette", "pydantic", "httpx"}}
    assert not {m for m in loaded if m.startswith("psp.") and m != "psp.scenarios"}


def test_the_product_api_routes_do_not_import_the_sandbox() -> None:
    loaded = _modules_after_import("import api.routes.payments, api.routes.payouts")

    assert "psp.scenarios" in loaded
    assert not {m for m in loaded if m == "psp.sandbox" or m.startswith("psp.sandbox.")}
