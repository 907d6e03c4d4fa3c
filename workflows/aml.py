"""AML re-check (`aml-daily`, a Temporal Schedule): every player with money movements since the last sweep has
the AML scenarios evaluated again, so a pattern completed by a late settlement, a configuration change or a
scenario added since still opens its case. Deposits and payouts check their player as they settle; this catches
what those checks could not see. One activity: the players are rows, not history events. The cases it finds are
in `GET /v1/ops/risk/cases`; the result counts the players checked and the cases their findings are on."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.types import ActivityName, AmlSweepInput, AmlSweepResult


@workflow.defn
class AmlSweepWorkflow:
    @staticmethod
    def daily_workflow_id() -> str:
        return "aml-daily"

    @workflow.run
    async def run(self, input: AmlSweepInput) -> AmlSweepResult:
        since = workflow.now() - timedelta(hours=input.lookback_hours)
        return await workflow.execute_activity(
            ActivityName.SWEEP_AML, since.isoformat(), result_type=AmlSweepResult,
            start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=10), maximum_interval=timedelta(minutes=10)),
        )
