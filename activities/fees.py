"""The fee a settled PSP operation costs: the PSP's own figure when its answer or webhook carries one, else the
routing file's cost model for that PSP and operation (so every operation's fee is booked, reported or not)."""

from __future__ import annotations

from temporalio import activity

from psp.routing import RoutingConfig


def fee_minor(routing: RoutingConfig, psp: str, operation: str, amount_minor: int, currency: str,
              reported_minor: int | None) -> int:
    """`operation`: capture, refund, payout or chargeback. A reported fee is taken as is (it is what the PSP will
    deduct); a PSP the routing file does not list costs nothing by the model."""
    if reported_minor is not None:
        return reported_minor
    config = routing.psp(psp)
    if config is None:
        return 0
    model = {
        "capture": config.fee_minor,
        "payout": config.payout_fee_minor,
        "refund": config.refund_fee_minor,
        "chargeback": config.chargeback_fee_minor,
    }[operation]
    return model(amount_minor, currency)


def count_fee(psp: str, operation: str, currency: str, booked_minor: int) -> None:
    """A fee booked, on the worker's metrics (per currency: minor units of different currencies never add up)."""
    if booked_minor and activity.in_activity():
        activity.metric_meter().create_counter(
            "payloop_fees_minor", "PSP fees booked, in minor units, by PSP, operation and currency.").add(
            booked_minor, {"psp": psp, "operation": operation, "currency": currency})
