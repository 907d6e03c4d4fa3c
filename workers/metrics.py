"""The worker's Prometheus endpoint: the Temporal runtime's exporter, which serves the SDK's own worker metrics
(`temporal_*`: task slots, poll and schedule-to-start latencies, …) and the payments' metrics the workflows and
activities record through their metric meters (workflows/metrics.py, activities/psp_calls.py) — one endpoint, and
nothing recorded while a workflow replays."""

from __future__ import annotations

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

# Seconds. A deposit is credited in tens of milliseconds (e-wallet) to an hour (crypto confirmations); a payout is
# paid in seconds to a business day; a PSP call takes milliseconds to its timeout.
TIME_TO_FINAL_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86_400)
PSP_CALL_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BUCKETS = {
    "payloop_deposit_time_to_credited_seconds": TIME_TO_FINAL_BUCKETS_SECONDS,
    "payloop_payout_time_to_paid_seconds": TIME_TO_FINAL_BUCKETS_SECONDS,
    "payloop_psp_call_seconds": PSP_CALL_BUCKETS_SECONDS,
}


def worker_runtime(host: str, port: int) -> Runtime | None:
    """A runtime exporting to Prometheus on host:port; None (the SDK's default runtime, no endpoint) for port 0."""
    if not port:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=f"{host}:{port}", counters_total_suffix=True, durations_as_seconds=True,
        histogram_bucket_overrides=BUCKETS)))
