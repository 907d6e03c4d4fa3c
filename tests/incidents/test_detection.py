"""incidents/detection.py on SQLite and PostgreSQL: each class found on its pattern, with its scope, figures and
affected ids, and not on a clean database or below its threshold."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from incidents.detection import RunningWorkflow
from psp.routing import CircuitState
from psp.routing.config import default_routing_path, load_routing_file
from psp.routing.health import HealthStore
from tests.incidents.helpers import NOW, SHIPPED, alert, dead_letter, deliveries, deposits, detect, seconds


async def test_a_clean_database_has_no_incident(engine: AsyncEngine) -> None:
    await deposits(engine, "credited", 20)
    health = await HealthStore(engine, load_routing_file(default_routing_path())).snapshot(NOW, registered={"card"})
    assert await detect(engine, health=health) == []


async def test_failed_deposits_per_method_and_psp_at_the_failure_rate(engine: AsyncEngine) -> None:
    failed = await deposits(engine, "failed", 5, failure_code="psp_unavailable")
    expired = await deposits(engine, "expired", 2)
    await deposits(engine, "credited", 3)
    await deposits(engine, "failed", 9, method="ewallet", psp="ewallet")  # 9 samples: below min_samples 10
    await deposits(engine, "failed", 10, at=NOW - seconds(SHIPPED.window_seconds + 1), prefix="old")  # outside
    [condition] = await detect(engine)
    assert (condition.incident_class, condition.scope) == ("failed_deposits", "psp=card,method=card")
    assert condition.figures == {"ended": 10, "failed": 7, "failure_rate": "0.7000", "window_seconds": 300,
                                 "failure_codes": {"expired": 2, "psp_unavailable": 5}}
    assert condition.diagnosis == ("7 of 10 card deposits via card failed in the last 300 s, mostly psp_unavailable")
    assert sorted(condition.payment_ids) == sorted(failed + expired)
    assert condition.first_seen_at == NOW - seconds(30)


async def test_failed_deposits_below_the_rate_is_no_incident(engine: AsyncEngine) -> None:
    await deposits(engine, "failed", 4)
    await deposits(engine, "credited", 6)  # 4 of 10: below 0.5
    assert await detect(engine) == []


async def test_delayed_withdrawals_past_their_sla_and_not_in_a_persons_queue(engine: AsyncEngine) -> None:
    sla = SHIPPED.delayed_withdrawals.sla_seconds
    late = RunningWorkflow("po_late", NOW - seconds(sla + 10), "processing", "card")
    running = [late, RunningWorkflow("po_fresh", NOW - seconds(sla - 10), "processing", "card"),
               RunningWorkflow("po_review", NOW - seconds(sla * 5), "in_review", "card")]
    [condition] = await detect(engine, running=running)
    assert (condition.incident_class, condition.scope, condition.payout_ids) == (
        "delayed_withdrawals", "psp=card", ["po_late"])
    assert condition.figures == {"delayed": 1, "by_status": {"processing": 1}, "sla_seconds": sla}
    assert await detect(engine, running=running[1:]) == []


async def test_callback_errors_by_count_and_share_per_psp(engine: AsyncEngine) -> None:
    await deliveries(engine, "card", "rejected", 3)
    await deliveries(engine, "card", "dead_letter", 2)
    await deliveries(engine, "card", "processed", 5)
    await dead_letter(engine, "card", "ev1", "pay_x")
    await dead_letter(engine, "card", "ev2", "po_y", kind="payout")
    await deliveries(engine, "ewallet", "rejected", 4)  # below min_count 5
    await deliveries(engine, "crypto", "rejected", 5)
    await deliveries(engine, "crypto", "processed", 50)  # 5 of 55: below min_rate 0.2
    [condition] = await detect(engine)
    assert (condition.incident_class, condition.scope) == ("callback_errors", "psp=card")
    assert condition.figures["errors"] == 5 and condition.figures["error_rate"] == "0.5000"
    assert (condition.payment_ids, condition.payout_ids) == (["pay_x"], ["po_y"])


async def test_currency_mismatch_in_the_hold_or_while_its_deposit_waits_in_review(engine: AsyncEngine) -> None:
    [in_review] = await deposits(engine, "in_review", 1, psp="card")
    [credited] = await deposits(engine, "credited", 1, psp="ewallet", method="ewallet")
    hold = SHIPPED.currency_mismatch.hold_seconds
    await alert(engine, "deposit.currency_mismatch", in_review, at=NOW - seconds(hold * 3))  # old, still in review
    await alert(engine, "deposit.currency_mismatch", credited, at=NOW - seconds(hold * 3))  # old and settled
    await alert(engine, "deposit.amount_mismatch", "pay_other")  # another kind
    [condition] = await detect(engine)
    assert (condition.incident_class, condition.scope, condition.payment_ids) == (
        "currency_mismatch", "psp=card", [in_review])
    await alert(engine, "deposit.currency_mismatch", "pay_new")  # no payment row yet: its PSP unknown
    scopes = {c.scope: c.payment_ids for c in await detect(engine)}
    assert scopes == {"psp=card": [in_review], "psp=none": ["pay_new"]}


async def test_transaction_timeout_past_the_sla(engine: AsyncEngine) -> None:
    """Deposit workflows still running (visibility): under way past the SLA, not waiting for KYC or a review."""
    sla = SHIPPED.transaction_timeout.sla_seconds
    stuck = [RunningWorkflow(f"pay_stuck{n}", NOW - seconds(sla + 1 + n), "requires_action", "card") for n in range(2)]
    running = [*stuck, RunningWorkflow("pay_fresh", NOW - seconds(sla - 1), "pending", "card"),
               RunningWorkflow("pay_kyc", NOW - seconds(sla * 4), "kyc_required", "card"),
               RunningWorkflow("pay_review", NOW - seconds(sla * 4), "in_review", "card")]
    [condition] = await detect(engine, running_deposits=running)
    assert (condition.incident_class, condition.scope) == ("transaction_timeout", "psp=card")
    assert condition.payment_ids == ["pay_stuck1", "pay_stuck0"]  # the oldest first
    assert condition.figures == {"stuck": 2, "by_status": {"requires_action": 2}, "sla_seconds": sla}
    assert condition.first_seen_at == NOW - seconds(2)
    assert await detect(engine, running_deposits=running[2:]) == []


async def test_gateway_downtime_on_an_open_circuit(engine: AsyncEngine) -> None:
    store = HealthStore(engine, load_routing_file(default_routing_path()))
    for n in range(3):  # card's breaker: 3 samples, half failing
        await store.record("card", "create_payment", ok=False, latency_ms=10, error_code="psp_unavailable",
                           now=NOW - seconds(3 - n))
    [failed] = await deposits(engine, "failed", 1, failure_code="psp_unavailable")
    health = await store.snapshot(NOW, registered={"card", "ewallet"})
    [condition] = await detect(engine, health=health)
    assert (condition.incident_class, condition.scope) == ("gateway_downtime", "psp=card")
    assert condition.figures["circuit"] == "open"
    assert condition.payment_ids == [failed]


async def test_gateway_downtime_lists_what_waits_on_the_psp(engine: AsyncEngine) -> None:
    """A running deposit or payout past its SLA at the PSP that is down is affected too (it has no row yet)."""
    store = HealthStore(engine, load_routing_file(default_routing_path()))
    for n in range(3):
        await store.record("card", "create_payment", ok=False, latency_ms=10, now=NOW - seconds(3 - n))
    waiting = [RunningWorkflow("pay_waiting", NOW - seconds(5000), "pending", "card"),
               RunningWorkflow("pay_elsewhere", NOW - seconds(5000), "pending", "card_b")]
    payouts = [RunningWorkflow("po_waiting", NOW - seconds(5000), "processing", "card")]
    found = await detect(engine, health=await store.snapshot(NOW, registered={"card", "card_b"}),
                         running_deposits=waiting, running=payouts)
    [condition] = [c for c in found if c.incident_class == "gateway_downtime"]
    assert (condition.payment_ids, condition.payout_ids) == (["pay_waiting"], ["po_waiting"])


async def test_a_circuit_ops_hold_open_is_not_downtime(engine: AsyncEngine) -> None:
    """Ops took the PSP out of service on purpose (its traffic goes elsewhere): no gateway_downtime for it; held
    closed while failing, it is."""
    store = HealthStore(engine, load_routing_file(default_routing_path()))
    await store.force("card", CircuitState.OPEN, now=NOW - seconds(1))
    assert await detect(engine, health=await store.snapshot(NOW, registered={"card"})) == []
    await store.force("card", CircuitState.CLOSED, now=NOW - seconds(1))
    for n in range(5):
        await store.record("card", "create_payment", ok=False, latency_ms=10, now=NOW - seconds(0.5 - n / 10))
    [condition] = await detect(engine, health=await store.snapshot(NOW, registered={"card"}))
    assert (condition.incident_class, condition.figures["circuit"], condition.figures["failures"]) == (
        "gateway_downtime", "closed", 5)


async def test_gateway_downtime_while_the_circuit_is_half_open_until_a_probe_closes_it(engine: AsyncEngine) -> None:
    """Half-open after card's open_seconds (5), with no call since: not known to be back, still down."""
    store = HealthStore(engine, load_routing_file(default_routing_path()))
    for n in range(3):
        await store.record("card", "create_payment", ok=False, latency_ms=10, error_code="psp_unavailable",
                           now=NOW - seconds(10 - n))
    health = await store.snapshot(NOW, registered={"card"})
    assert health["card"].circuit.value == "half_open" and health["card"].samples == 0
    [condition] = await detect(engine, health=health)
    assert (condition.incident_class, condition.scope) == ("gateway_downtime", "psp=card")
    assert condition.figures["circuit"] == "half_open" and condition.first_seen_at == NOW - seconds(8)
    await store.record("card", "create_payment", ok=True, latency_ms=10, now=NOW)  # the probe: closed
    assert await detect(engine, health=await store.snapshot(NOW, registered={"card"})) == []


async def test_gateway_downtime_on_the_error_rate_with_the_circuit_closed(engine: AsyncEngine) -> None:
    store = HealthStore(engine, load_routing_file(default_routing_path()))
    # The monitor judges a lower rate than crypto's breaker (5 samples, half failing): it sees trouble first.
    thresholds = SHIPPED.model_copy(update={"gateway_downtime": SHIPPED.gateway_downtime.model_copy(
        update={"error_rate": "0.3"})})
    for n in range(9):  # 2 of 9 fail
        await store.record("crypto", "create_payment", ok=n % 3 != 0 or n == 0, latency_ms=10, now=NOW - seconds(9 - n))
    health = await store.snapshot(NOW, registered={"crypto"})
    assert health["crypto"].circuit.value == "closed" and await detect(engine, health=health,
                                                                       thresholds=thresholds) == []
    for n in range(2):
        await store.record("crypto", "create_payment", ok=False, latency_ms=10, now=NOW - seconds(0.5 - n / 10))
    health = await store.snapshot(NOW, registered={"crypto"})
    assert health["crypto"].circuit.value == "closed"  # 4 of 11
    found = await detect(engine, health=health, thresholds=thresholds)
    assert [(c.incident_class, c.scope) for c in found] == [("gateway_downtime", "psp=crypto")]
