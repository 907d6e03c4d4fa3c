"""The metrics after a scripted run, on both backends: the worker's (the workflows' and activities' metric meters,
exported by the Temporal runtime) and the API's (prometheus-client) count what happened — each deposit by final
status, method and device class, the 3-D Secure paths, declines by code, payouts, PSP calls, init latency and
time-to-credited histograms — and the SDK's own worker metrics are served beside them. Every metric the Prometheus
rules and the Grafana dashboard name (deploy/, tests/observability.py) is one of them, with the labels they match
on or group by."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import WORKER_METRICS_PORT, Stack, eventually, new_player
from tests.e2e.test_money_after_payment import open_dispute, wait_dispute
from tests.e2e.test_payouts import funded_player, payout, wait_payout
from tests.observability import INCIDENT_METRICS, Selector, referenced_selectors

COUNTERS = {
    "ewallet_mobile": ("payloop_deposits_total", {"status": "credited", "method": "ewallet", "psp": "ewallet",
                                                  "currency": "EUR", "device_class": "mobile", "country": "DE"}),
    "card_credited": ("payloop_deposits_total", {"status": "credited", "method": "card", "device_class": "desktop"}),
    "card_failed": ("payloop_deposits_total", {"status": "failed", "method": "card", "device_class": "tablet"}),
    "declined_3ds": ("payloop_deposit_declines_total", {"code": "3ds_failed"}),
    "frictionless": ("payloop_deposit_3ds_total", {"outcome": "frictionless"}),
    "challenge_passed": ("payloop_deposit_3ds_total", {"outcome": "challenge_passed"}),
    "challenge_failed": ("payloop_deposit_3ds_total", {"outcome": "challenge_failed"}),
    "credited_timed": ("payloop_deposit_time_to_credited_seconds_count", {"method": "card"}),
    "payouts_paid": ("payloop_payouts_total", {"status": "paid", "method": "ewallet"}),
    "paid_timed": ("payloop_payout_time_to_paid_seconds_count", {}),
    "ewallet_calls": ("payloop_psp_calls_total", {"psp": "ewallet", "operation": "create_payment", "outcome": "ok"}),
    "ewallet_call_timed": ("payloop_psp_call_seconds_count", {"psp": "ewallet", "operation": "create_payment"}),
    "ewallet_fees": ("payloop_fees_minor_total", {"psp": "ewallet", "operation": "capture", "currency": "EUR"}),
}


async def worker_counts(stack: Stack) -> dict[str, float]:
    return {key: await stack.worker_metric(name, **labels) for key, (name, labels) in COUNTERS.items()}


async def deposit(stack: Stack, method: str, device_class: str, scenario: str | None = None) -> dict[str, Any]:
    meta = {"country": "DE", "device_class": device_class, **({"sandbox_scenario": scenario} if scenario else {})}
    response = await stack.api.post("/v1/payments/init", headers={"Idempotency-Key": uuid.uuid4().hex}, json={
        "amount": "20.00", "currency": "EUR", "method": method, "player_id": new_player(),
        "return_url": "https://casino.example/return", "meta": meta})
    assert response.status_code == 201, response.text
    return response.json()


async def test_the_metrics_count_what_happened(stack: Stack) -> None:
    before = await worker_counts(stack)
    api_inits = await stack.api_metric("payloop_deposit_init_seconds_count", method="ewallet")
    kyc_timed = await stack.api_metric("payloop_kyc_time_to_verify_seconds_count")

    ewallet = await deposit(stack, "ewallet", "mobile")
    card = await deposit(stack, "card", "desktop")
    challenged = await deposit(stack, "card", "desktop", scenario="challenge")
    failed = await deposit(stack, "card", "tablet", scenario="3ds_fail")
    for init in (challenged, failed):
        await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
    finals = {init["payment_id"]: (await stack.wait_final(init["payment_id"]))["status"]
              for init in (ewallet, card, challenged, failed)}
    assert list(finals.values()) == ["credited", "credited", "credited", "failed"], finals
    player = await funded_player(stack, "30.00", kyc=None)
    assert (await wait_payout(stack, (await payout(stack, player, "10.00", country="DE"))["payout_id"]))[
        "status"] == "paid"
    await stack.api.put(f"/v1/ops/players/{player}/kyc", json={"status": "verified"})

    expected = {"ewallet_mobile": 1, "card_credited": 2, "card_failed": 1, "declined_3ds": 1, "frictionless": 1,
                "challenge_passed": 1, "challenge_failed": 1, "credited_timed": 2, "payouts_paid": 1, "paid_timed": 1,
                "ewallet_calls": 2, "ewallet_call_timed": 2,  # the funded player's deposit is an e-wallet one too
                "ewallet_fees": 125}  # 2.5 % of 20.00 and of 30.00

    async def grown() -> dict[str, float]:
        now = await worker_counts(stack)
        return {key: now[key] - before[key] for key in now}

    delta = await eventually(grown, lambda delta: all(delta[key] >= n for key, n in expected.items()), timeout=10)
    # Only this test sets a device class: those counts are exact (nothing counted twice); the others may also see
    # what earlier tests left running finish meanwhile.
    assert (delta["ewallet_mobile"], delta["card_credited"], delta["card_failed"]) == (1, 2, 1), delta
    assert await stack.api_metric("payloop_deposit_init_seconds_count", method="ewallet") == api_inits + 2
    assert await stack.api_metric("payloop_kyc_time_to_verify_seconds_count") == kyc_timed + 1
    assert await stack.api_metric("payloop_webhook_deliveries_total", psp="ewallet", outcome="verified") >= 2
    for psp in ("card", "card_b", "ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto", "crypto_b"):
        assert await stack.api_metric("payloop_psp_circuit_state", psp=psp) == 1  # exactly one state is on
    assert await stack.api_metric("payloop_reviews_open", queue="deposits") >= 0

    async with httpx.AsyncClient() as http:  # the SDK's own worker metrics, on the same endpoint
        sdk = (await http.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")).text
    assert "temporal_workflow_completed" in sdk and "temporal_activity_execution_latency" in sdk


# Sample names each metric type is exposed under, by the family name the parser gives it.
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
                   "summary": ("_sum", "_count", "")}
# Prometheus's own series about each scrape, not the product's.
SCRAPE_SERIES = {"up"}


def exported(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """The sample names an endpoint declares (a labelled counter with no sample yet is declared by its family), and
    the label names seen on each sample name."""
    declared: set[str] = set()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        declared |= {family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}
        for sample in family.samples:
            declared.add(sample.name)
            labels.setdefault(sample.name, set()).update(sample.labels)
    return declared, labels


async def test_every_metric_the_rules_and_the_dashboard_name_is_exported(stack: Stack) -> None:
    """A scripted run makes every series the rules and the dashboard read appear on the API's /metrics or the worker's
    endpoint — deposits credited, failed after a 3-D Secure challenge and sent to review (an alert), a paid payout
    with its fees, a chargeback — then each selector's metric must be there, with every label it matches on or
    groups by. The monitor's metrics are checked against their definitions: tests/test_observability_files.py."""
    challenged = await deposit(stack, "card", "desktop", scenario="challenge")
    failed = await deposit(stack, "card", "tablet", scenario="3ds_fail")
    for init in (challenged, failed):
        await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
    to_review = await stack.deposit(method="ewallet", scenario="wrong_amount")
    assert [(await stack.wait_final(init["payment_id"]))["status"] for init in (challenged, failed, to_review)] == [
        "credited", "failed", "in_review"]
    player = await funded_player(stack, "30.00", kyc=None)
    assert (await wait_payout(stack, (await payout(stack, player, "10.00", country="DE"))["payout_id"]))[
        "status"] == "paid"
    await wait_dispute(stack, await open_dispute(stack, challenged["payment_id"], "20.00"), "opened")

    wanted = [selector for selector in referenced_selectors()
              if selector.metric not in SCRAPE_SERIES and selector.metric not in INCIDENT_METRICS]

    async def missing() -> list[Selector]:
        async with httpx.AsyncClient() as http:
            worker = (await http.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")).text
        api = (await stack.api.get("/metrics")).text
        (worker_names, worker_labels), (api_names, api_labels) = exported(worker), exported(api)
        names = worker_names | api_names
        labels = {name: worker_labels.get(name, set()) | api_labels.get(name, set())
                  for name in worker_labels.keys() | api_labels.keys()}
        # A label can only be checked on a series that has samples (the API's alerts counter may have none yet).
        return [selector for selector in wanted if selector.metric not in names
                or (selector.metric in labels and not selector.labels <= labels[selector.metric])]

    # The worker's metrics of a run appear once its workflows have recorded them.
    await eventually(missing, lambda absent: not absent, timeout=15, interval=0.5)
    assert {selector.metric for selector in wanted} >= {"payloop_deposits_total", "payloop_psp_circuit_state",
                                                       "payloop_fees_minor_total", "payloop_disputes_total"}
