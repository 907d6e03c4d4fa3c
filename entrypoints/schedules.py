"""The Temporal Schedules the product runs on: one daily reconciliation per PSP (`recon-daily-<psp>`), the
daily AML re-check (`aml-daily`) and the incidents monitor (`monitor`, every PAYLOOP_MONITOR_INTERVAL_SECONDS).

`payloop schedules` creates them, or brings existing ones up to date (a changed time, a new PSP); `payloop run` and
the compose file's `schedules` service run it after the migrations. A schedule skips a day's start while the
previous one still runs (overlap policy skip), and shows in the Temporal UI under Schedules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError

from payloop.settings import Settings
from psp.registry import PROVIDERS, Provider
from workflows.aml import AmlSweepWorkflow
from workflows.monitor import MonitorWorkflow
from workflows.reconciliation import ReconciliationWorkflow
from workflows.types import AmlSweepInput, MonitorInput, ReconInput

AML_SCHEDULE_ID = "aml-daily"
MONITOR_SCHEDULE_ID = "monitor"


def recon_schedule_id(psp: str) -> str:
    return f"recon-daily-{psp}"


def recon_schedule(settings: Settings, provider: Provider) -> Schedule:
    return _daily(settings.recon_daily_at_utc, ScheduleActionStartWorkflow(
        ReconciliationWorkflow.run, ReconInput(provider.name, sla_days=provider.settlement_terms.sla_days),
        id=ReconciliationWorkflow.daily_workflow_id(provider.name), task_queue=settings.task_queue,
    ))


def aml_schedule(settings: Settings) -> Schedule:
    return _daily(settings.aml_daily_at_utc, ScheduleActionStartWorkflow(
        AmlSweepWorkflow.run, AmlSweepInput(), id=AmlSweepWorkflow.daily_workflow_id(),
        task_queue=settings.task_queue,
    ))


def monitor_schedule(settings: Settings) -> Schedule:
    """A detection pass every interval; a pass still running when the next is due makes that one skip."""
    return Schedule(
        action=ScheduleActionStartWorkflow(MonitorWorkflow.run, MonitorInput(), id=MonitorWorkflow.workflow_id(),
                                           task_queue=settings.task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.monitor_interval_seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


def _daily(at_utc: str, action: ScheduleActionStartWorkflow) -> Schedule:
    hour, minute = at_utc.split(":")
    return Schedule(
        action=action,
        # Every day at that time, UTC (no time zone given).
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(int(hour))],
                                                          minute=[ScheduleRange(int(minute))])]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedules(client: Client, settings: Settings, psps: Collection[str] | None = None) -> list[str]:
    """Create each PSP's daily reconciliation schedule, the AML re-check and the monitor (unless its interval is 0:
    then delete it), or update them to these; the ids of the schedules there are now."""
    wanted = [(recon_schedule_id(p.name), recon_schedule(settings, p)) for p in PROVIDERS
              if psps is None or p.name in psps]
    wanted.append((AML_SCHEDULE_ID, aml_schedule(settings)))
    if settings.monitor_interval_seconds:
        wanted.append((MONITOR_SCHEDULE_ID, monitor_schedule(settings)))
    else:  # the monitor switched off: a schedule left from before would keep running it
        with contextlib.suppress(RPCError):  # none to delete
            await client.get_schedule_handle(MONITOR_SCHEDULE_ID).delete()
    for schedule_id, schedule in wanted:
        try:
            await client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:
            def replace(_: ScheduleUpdateInput, schedule: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(schedule_id).update(replace)
    return [schedule_id for schedule_id, _ in wanted]
