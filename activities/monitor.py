"""The monitor's activities: detect the incident classes (the database, Temporal visibility for the running
deposits and payouts, the PSPs' health) and apply a pass to the incidents."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from incidents import detection, store
from incidents.config import Thresholds
from psp.routing.health import HealthStore
from workflows.types import ActivityName, IncidentCondition, IncidentPass, IncidentPassResult

# Visibility's names (workflows/search_attributes.py; activities may import workflows.types only).
DEPOSIT_WORKFLOW = ("DepositWorkflow", "deposit-")  # type, and DepositWorkflow.workflow_id's prefix
WITHDRAWAL_WORKFLOW = ("WithdrawalWorkflow", "withdrawal-")  # WithdrawalWorkflow.workflow_id's
PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
PAYMENT_PSP = SearchAttributeKey.for_keyword("PaymentPsp")
# Running workflows read per kind and pass, at most: the figures of a backlog larger than this are a floor.
RUNNING_MAX = 10_000


class MonitorActivities:
    def __init__(self, engine: AsyncEngine, client: Client, task_queue: str, thresholds: Thresholds,
                 health: HealthStore, registered_psps: Collection[str]) -> None:
        self.engine = engine
        self.client = client
        self.task_queue = task_queue
        self.thresholds = thresholds
        self.health = health
        self.registered_psps = registered_psps

    def all(self) -> list[object]:
        return [self.detect_incidents, self.apply_incidents]

    @activity.defn(name=ActivityName.DETECT_INCIDENTS)
    async def detect_incidents(self, at_iso: str) -> list[IncidentCondition]:
        now = datetime.fromisoformat(at_iso)
        health = await self.health.snapshot(now, registered=self.registered_psps)
        th = self.thresholds
        deposits = await self.running(DEPOSIT_WORKFLOW, now - timedelta(seconds=th.transaction_timeout.sla_seconds))
        payouts = await self.running(WITHDRAWAL_WORKFLOW, now - timedelta(seconds=th.delayed_withdrawals.sla_seconds))
        found = await detection.detect(self.engine, th, now, health=health, running_deposits=deposits,
                                       running_payouts=payouts)
        return [IncidentCondition(**(asdict(c) | {"first_seen_at": c.first_seen_at.isoformat()
                                                   if c.first_seen_at else None})) for c in found]

    @activity.defn(name=ActivityName.APPLY_INCIDENTS)
    async def apply_incidents(self, incident_pass: IncidentPass) -> IncidentPassResult:
        conditions = [detection.Condition(**(asdict(c) | {"first_seen_at": datetime.fromisoformat(c.first_seen_at)
                                                          if c.first_seen_at else None}))
                      for c in incident_pass.conditions]
        result = await store.apply(self.engine, conditions, datetime.fromisoformat(incident_pass.at), self.thresholds)
        return IncidentPassResult(opened=result.opened, updated=result.updated, resolved=result.resolved)

    async def running(self, workflow: tuple[str, str], started_before: datetime) -> list[detection.RunningWorkflow]:
        """The deposit or withdrawal workflows still running that started before the SLA's cutoff (their tables are
        written at their end, so visibility is where a running one shows)."""
        workflow_type, id_prefix = workflow
        query = (f"WorkflowType = '{workflow_type}' AND ExecutionStatus = 'Running' "
                 f"AND StartTime < '{started_before.isoformat()}' AND TaskQueue = '{self.task_queue}'")
        found = []
        async for execution in self.client.list_workflows(query, limit=RUNNING_MAX):
            attributes = execution.typed_search_attributes
            found.append(detection.RunningWorkflow(
                object_id=execution.id.removeprefix(id_prefix), started_at=execution.start_time,
                status=attributes.get(PAYMENT_STATUS), psp=attributes.get(PAYMENT_PSP)))
        return found
