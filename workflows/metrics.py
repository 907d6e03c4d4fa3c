"""The payment workflows' business metrics, through the workflow's metric meter: recorded as a workflow runs forward,
never while it replays, and exported by the worker's Temporal runtime on `PAYLOOP_WORKER_METRICS_PORT` beside the
SDK's own metrics (workers/metrics.py). Attribute values are bounded sets (statuses, methods, PSPs, countries,
device classes, decline codes): never an id or an amount, which would make a series per payment."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

UNKNOWN = "unknown"
CREDITED, FAILED, IN_REVIEW, PAID = "credited", "failed", "in_review", "paid"


def _seconds_between(start_iso: str, end_iso: str) -> float:
    return max(0.0, (datetime.fromisoformat(end_iso) - datetime.fromisoformat(start_iso)).total_seconds())


def deposit_ended(*, status: str, method: str, psp: str | None, currency: str, country: str | None,
                  device_class: str | None, failure_code: str | None, challenged: bool, created_at: str,
                  updated_at: str) -> None:
    """A deposit reached its final status."""
    meter = workflow.metric_meter()
    where = {"method": method, "psp": psp or "none"}
    # With the currency, fees (counted per currency) can be divided by the successes they paid for.
    ended = where | {"status": status, "currency": currency, "country": country or UNKNOWN,
                     "device_class": device_class or UNKNOWN}
    meter.create_counter("payloop_deposits", "Deposits by final status, method, PSP, currency, country and device "
                         "class.").add(1, ended)
    if status == CREDITED:
        meter.create_histogram_float(
            "payloop_deposit_time_to_credited_seconds", "From the deposit's start to its credit, by method.",
            "s").record(_seconds_between(created_at, updated_at), {"method": method})
    if status == FAILED and failure_code:
        meter.create_counter("payloop_deposit_declines", "Deposits that failed, by PSP and decline code.").add(
            1, where | {"code": failure_code})
    if method == "card" and psp:
        outcome = ("challenge_passed" if status == CREDITED else "challenge_failed") if challenged else "frictionless"
        meter.create_counter("payloop_deposit_3ds", "Card deposits by 3-D Secure path: frictionless, or a challenge "
                             "passed or failed.").add(1, {"psp": psp, "outcome": outcome})


def payout_ended(*, status: str, method: str | None, psp: str | None, created_at: str, updated_at: str) -> None:
    """A payout reached its final status."""
    meter = workflow.metric_meter()
    where = {"method": method or "none", "psp": psp or "none"}
    meter.create_counter("payloop_payouts", "Payouts by final status, method and PSP.").add(
        1, where | {"status": status})
    if status == PAID:
        meter.create_histogram_float("payloop_payout_time_to_paid_seconds", "From the payout's request to paid.",
                                     "s").record(_seconds_between(created_at, updated_at), {"method": method or "none"})


def review_opened(kind: str, reason: str | None) -> None:
    """A deposit or payout went to a person's review."""
    workflow.metric_meter().create_counter("payloop_reviews_opened", "Deposits and payouts sent to review, by "
                                           "kind and reason.").add(1, {"kind": kind, "reason": reason or UNKNOWN})


def alert_raised(kind: str) -> None:
    workflow.metric_meter().create_counter("payloop_alerts", "Alerts raised for people, by kind.").add(
        1, {"kind": kind})


def refund_ended(status: str, psp: str | None) -> None:
    workflow.metric_meter().create_counter("payloop_refunds", "Refunds by final status and PSP.").add(
        1, {"status": status, "psp": psp or "none"})


def dispute_moved(state: str, psp: str) -> None:
    """A chargeback opened, or won or lost."""
    workflow.metric_meter().create_counter("payloop_disputes", "Disputes (chargebacks) opened and resolved, by "
                                           "state and PSP.").add(1, {"state": state, "psp": psp})


def reconciled(psp: str, counts: dict[str, int]) -> None:
    """One reconciliation run's lines and movements per class (matched, expected, and the differences)."""
    counter = workflow.metric_meter().create_counter(
        "payloop_recon_items", "Settlement lines and ledger movements reconciled, by PSP and class.")
    for name, count in counts.items():
        if count:
            counter.add(count, {"psp": psp, "class": name})


def incidents_changed(*, opened: list[str], resolved: list[str]) -> None:
    """A monitor pass opened and resolved these incidents (their classes, one entry per incident)."""
    meter = workflow.metric_meter()
    opened_total = meter.create_counter("payloop_incidents_opened", "Incidents the monitor opened, by class.")
    resolved_total = meter.create_counter("payloop_incidents_resolved", "Incidents the monitor resolved as their "
                                          "cause cleared, by class.")
    for incident_class in opened:
        opened_total.add(1, {"incident_class": incident_class})
    for incident_class in resolved:
        resolved_total.add(1, {"incident_class": incident_class})
