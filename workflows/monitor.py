"""The monitor (`monitor`, a Temporal Schedule every PAYLOOP_MONITOR_INTERVAL_SECONDS): detect the six incident
classes, apply the pass to the incidents (open, update, resolve), and count what it opened and resolved. The
conditions are rows and Temporal visibility, read by the detect activity; the apply activity converges the incidents
on them, so a retried pass changes nothing twice (incidents/store.py)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows import metrics
from workflows.types import ActivityName, IncidentCondition, IncidentPass, IncidentPassResult, MonitorInput

# A pass is due again in a minute: retry within it, and let the next pass take over after that.
PASS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=10),
                         maximum_attempts=5)


@workflow.defn
class MonitorWorkflow:
    @staticmethod
    def workflow_id() -> str:
        return "monitor"

    @workflow.run
    async def run(self, input: MonitorInput) -> IncidentPassResult:
        at = workflow.now().isoformat()
        conditions = await workflow.execute_activity(
            ActivityName.DETECT_INCIDENTS, at, result_type=list[IncidentCondition],
            start_to_close_timeout=timedelta(seconds=30), retry_policy=PASS_RETRY)
        result = await workflow.execute_activity(
            ActivityName.APPLY_INCIDENTS, IncidentPass(at, conditions), result_type=IncidentPassResult,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=PASS_RETRY)
        metrics.incidents_changed(opened=result.opened, resolved=result.resolved)
        return result
