"""Reconciliation workflow: a PSP's settlement report matched to the ledger, line by line.

Started daily per PSP by a Temporal Schedule (entrypoints/schedules.py; `recon-<psp>-daily-<time>`), it reconciles
yesterday, then re-runs the day whose settlement SLA has just ended, so what the PSP still has not settled by then
becomes a `missing_at_psp` case; each is tried whatever became of the other. Ops start one day (at a later moment, `as_of`) with `POST /v1/ops/recon/runs`
(`recon-<run id>`). One activity does the run: a report can hold 100,000 lines, which belong in the database, not
in a history; it streams the report in chunks, so a retried activity classifies the same lines the same way and posts
nothing twice (ledger/reconciliation.py). Differences raise an alert; a report that cannot be read or fetched fails
the run, alerted, and the workflow fails with it so the Temporal UI shows it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows import metrics
from workflows.common import raise_alert
from workflows.types import ActivityName, ErrorType, ReconInput, ReconResult, ReconRunSummary

# A report is fetched again for up to half a day while the PSP's reporting is down; a day of 100,000 lines takes
# about a minute, and the activity heartbeats per chunk, so a worker lost mid-run is noticed within the heartbeat.
_RECONCILE = dict(
    start_to_close_timeout=timedelta(minutes=30),
    schedule_to_close_timeout=timedelta(hours=12),
    heartbeat_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=10),
        maximum_interval=timedelta(minutes=30),
        non_retryable_error_types=[ErrorType.REPORT_UNREADABLE],
    ),
)


@workflow.defn
class ReconciliationWorkflow:
    @staticmethod
    def workflow_id(run_id: str) -> str:
        return f"recon-{run_id}"

    @staticmethod
    def daily_workflow_id(psp: str) -> str:
        """The id the daily schedule starts its workflows with (Temporal appends the scheduled time)."""
        return f"recon-{psp}-daily"

    @workflow.run
    async def run(self, input: ReconInput) -> ReconResult:
        if input.day is not None:
            return ReconResult([await self._reconcile(input.psp, input.day, input.as_of)])
        yesterday = workflow.now().date() - timedelta(days=1)
        days: list[tuple[str, str | None]] = [(yesterday.isoformat(), None)]
        if input.sla_days:
            # Its SLA ended at the end of yesterday: evaluated now, what is still unsettled is missing at the PSP.
            days.append(((yesterday - timedelta(days=input.sla_days)).isoformat(), workflow.now().isoformat()))
        # Each day on its own: yesterday's report failing does not spare the older day its verdict.
        result, failure = ReconResult(), None
        for day, as_of in days:
            try:
                result.runs.append(await self._reconcile(input.psp, day, as_of))
            except ActivityError as err:
                failure = failure or err
        if failure is not None:
            raise failure
        return result

    async def _reconcile(self, psp: str, day: str, as_of: str | None) -> ReconRunSummary:
        try:
            summary = await workflow.execute_activity(ActivityName.RECONCILE_DAY, ReconInput(psp, day, as_of),
                                                      result_type=ReconRunSummary, **_RECONCILE)
        except ActivityError as err:
            await raise_alert("recon.run_failed", f"{psp}:{day}",
                              {"psp": psp, "day": day, "error": str(err.cause or err)[:300]})
            raise
        metrics.reconciled(psp, summary.counts)
        if summary.cases:
            await raise_alert("recon.differences", summary.run_id,
                              {"psp": psp, "day": day, **{name: str(n) for name, n in summary.counts.items()}})
        return summary
