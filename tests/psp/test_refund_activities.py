"""The refund activities (activities/refunds.py), run in Temporal's activity environment against the sandbox over
real HTTP and a real health store: what the workflow gets back, how PSP errors reach it, what the circuit sees."""

from __future__ import annotations


import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.refunds import RefundActivities
from ledger import Ledger
from payloop.psp_decision import PspDecision
from psp.http_connector import HttpPspConnector
from psp.routing import default_routing_path, load_routing_file
from psp.routing.health import HealthStore, psp_attempts
from tests.psp.psp_testkit import RunningSandbox, captured_payment, eventually, psp_mode
from workflows.types import CreatePspRefundInput, PspRef, PspRefundView


@pytest.fixture
def refunds(engine: AsyncEngine, every_psp: dict[str, HttpPspConnector]) -> RefundActivities:
    routing = load_routing_file(default_routing_path())
    return RefundActivities(Ledger(engine), every_psp, routing, HealthStore(engine, routing))


def refund_input(psp: str, payment_id: str, psp_reference: str, amount_minor: int,
                 scenario: str | None = None) -> CreatePspRefundInput:
    return CreatePspRefundInput(psp=psp, refund_id=f"rf_{payment_id}_{amount_minor}", payment_id=payment_id,
                                psp_payment_reference=psp_reference, amount_minor=amount_minor, currency="EUR",
                                sandbox_scenario=scenario)


async def _attempts(engine: AsyncEngine) -> list[tuple[str, str, str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(psp_attempts.c.psp, psp_attempts.c.operation, psp_attempts.c.outcome,
                                            psp_attempts.c.error_code).order_by(psp_attempts.c.id))
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_create_then_look_up_a_refund(
    refunds: RefundActivities, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    env = ActivityEnvironment()
    payment = await captured_payment("card", every_psp["card"], http)
    request = refund_input("card", payment.payment_id, payment.psp_reference, 2000)

    created = await env.run(refunds.create_psp_refund, request)

    assert created == PspRefundView(psp="card", psp_reference=created.psp_reference, status="pending",
                                    amount_minor=2000, currency="EUR")
    ref = PspRef(psp="card", merchant_reference=request.refund_id)

    async def succeeded() -> PspRefundView | None:
        view = await env.run(refunds.get_psp_refund, ref)
        return view if view.status == "succeeded" else None

    assert await eventually(succeeded) == PspRefundView(
        psp="card", psp_reference=created.psp_reference, status="succeeded", amount_minor=2000, currency="EUR",
        fee_minor=10,
    )
    assert await env.run(refunds.create_psp_refund, request) == created  # a retried activity: the same refund
    # The creates feed the PSP's circuit as answers; the look-ups are not subject to it.
    assert await _attempts(engine) == [("card", "create_refund", "success", None)] * 2


@pytest.mark.parametrize(
    ("amount_minor", "payment_known", "code"),
    [(5001, True, "refund_exceeds_captured"), (100, False, "payment_not_refundable")],
)
async def test_a_refund_the_psp_refuses_is_a_non_retryable_rejection(
    amount_minor: int, payment_known: bool, code: str, refunds: RefundActivities,
    every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, engine: AsyncEngine,
) -> None:
    payment = await captured_payment("ewallet", every_psp["ewallet"], http)
    reference = payment.psp_reference if payment_known else "ewallet_unknown"

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(refunds.create_psp_refund,
                                        refund_input("ewallet", payment.payment_id, reference, amount_minor))

    assert (refused.value.type, refused.value.non_retryable, refused.value.details) == (
        PspDecision.REJECTED.value, True, (code,),
    )
    # A refusal is an answer: the PSP is healthy.
    assert await _attempts(engine) == [("ewallet", "create_refund", "success", code)]


async def test_a_psp_that_is_down_is_retried_and_counted_against_its_circuit(
    refunds: RefundActivities, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient,
    sandbox: RunningSandbox, engine: AsyncEngine,
) -> None:
    payment = await captured_payment("crypto", every_psp["crypto"], http)
    env = ActivityEnvironment()

    async with psp_mode(http, sandbox, "crypto", "down"):
        with pytest.raises(ApplicationError) as down:
            await env.run(refunds.create_psp_refund,
                          refund_input("crypto", payment.payment_id, payment.psp_reference, 5000))
        with pytest.raises(ApplicationError) as lookup_down:
            await env.run(refunds.get_psp_refund, PspRef(psp="crypto", merchant_reference="rf_any"))

    assert (down.value.type, down.value.non_retryable) == (PspDecision.RETRY.value, False)
    assert (lookup_down.value.type, lookup_down.value.non_retryable) == (PspDecision.RETRY.value, False)
    assert await _attempts(engine) == [("crypto", "create_refund", "failure", "psp_unavailable")]
    with pytest.raises(ApplicationError) as missing:
        await env.run(refunds.get_psp_refund, PspRef(psp="crypto", merchant_reference="rf_never_created"))
    assert (missing.value.type, missing.value.details) == (PspDecision.NOT_FOUND.value, ("refund_not_found",))
    with pytest.raises(ApplicationError) as unknown:
        await env.run(refunds.get_psp_refund, PspRef(psp="nopsp", merchant_reference="rf_1"))
    assert unknown.value.details == ("unknown_psp",)
