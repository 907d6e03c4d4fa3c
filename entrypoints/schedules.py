"""The Temporal Schedules the product runs on: one daily reconciliation per PSP (`recon-daily-<psp>`).

`payloop schedules` creates them, or brings existing ones up to date (a changed time, a new PSP); `payloop run` and
the compose file's `schedules` service run it after the migrations. A schedule skips a day's start while the
previous one still runs (overlap policy skip), and shows in the Temporal UI under Schedules.
"""

from __future__ import annotations

from collections.abc import Collection

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from payloop.settings import Settings
from psp.registry import PROVIDERS, Provider
from workflows.reconciliation import ReconciliationWorkflow
from workflows.types import ReconInput


def recon_schedule_id(psp: str) -> str:
    return f"recon-daily-{psp}"


def recon_schedule(settings: Settings, provider: Provider) -> Schedule:
    hour, minute = settings.recon_daily_at_utc.split(":")
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconciliationWorkflow.run, ReconInput(provider.name, sla_days=provider.settlement_terms.sla_days),
            id=ReconciliationWorkflow.daily_workflow_id(provider.name), task_queue=settings.task_queue,
        ),
        # Every day at that time, UTC (no time zone given).
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(int(hour))],
                                                          minute=[ScheduleRange(int(minute))])]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedules(client: Client, settings: Settings, psps: Collection[str] | None = None) -> list[str]:
    """Create each PSP's daily reconciliation schedule, or update it to this one; the schedule ids."""
    ids = []
    for provider in PROVIDERS:
        if psps is not None and provider.name not in psps:
            continue
        schedule, schedule_id = recon_schedule(settings, provider), recon_schedule_id(provider.name)
        try:
            await client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:
            def replace(_: ScheduleUpdateInput, schedule: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(schedule_id).update(replace)
        ids.append(schedule_id)
    return ids
