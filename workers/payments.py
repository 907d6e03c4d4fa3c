"""The payments worker: deposit, withdrawal, refund, dispute, reconciliation, AML re-check and monitor workflows
and their activities on one task queue, and the outbound events' dispatcher beside them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.alerts import AlertActivities
from activities.audit import AuditActivities
from activities.deposit import DepositActivities
from activities.disputes import DisputeActivities
from activities.fx import FxActivities
from activities.inbox import InboxActivities
from activities.monitor import MonitorActivities
from activities.reconciliation import ReconciliationActivities
from activities.refunds import RefundActivities
from activities.screening import RiskScreening
from activities.withdrawal import WithdrawalActivities
from fx.sources import rate_source
from incidents.config import load_thresholds
from ledger import Ledger
from payloop.db import create_engine
from payloop.money import parse_rates
from payloop.settings import Settings
from payloop.temporal import connect
from players import PlayerStore
from psp.registry import build_connectors
from psp.routing import load_routing
from psp.routing.health import HealthStore
from risk.config import load_risk
from risk.geo import IpCountries
from workers.bytecode import cache_workflow_bytecode
from workers.events import event_dispatcher
from workers.metrics import worker_runtime
from workflows.aml import AmlSweepWorkflow
from workflows.deposit import DepositWorkflow
from workflows.dispute import DisputeWorkflow
from workflows.monitor import MonitorWorkflow
from workflows.reconciliation import ReconciliationWorkflow
from workflows.refund import RefundWorkflow
from workflows.withdrawal import WithdrawalWorkflow

WORKFLOWS = [DepositWorkflow, WithdrawalWorkflow, RefundWorkflow, DisputeWorkflow, ReconciliationWorkflow,
             AmlSweepWorkflow, MonitorWorkflow]
SHARED_WORKFLOW_MODULES = (
    "workflows.types", "workflows.common", "workflows.search_attributes", "workflows.psp_step",
    "workflows.retry_policies", "workflows.metrics", "payloop.psp_decision",
)


@contextlib.asynccontextmanager
async def payments_worker(client: Client, settings: Settings, *, schema: str | None = None) -> AsyncIterator[Worker]:
    """A running worker with its own database pool and PSP HTTP client; stops cleanly on exit."""
    cache_workflow_bytecode(WORKFLOWS)
    # No pre-ping: it was a round trip per ledger write. A connection dropped by a database restart fails the
    # one activity using it, and Temporal retries it (ledger writes are idempotent and retry at once themselves).
    engine = create_engine(settings.effective_database_url, schema=schema, pre_ping=False)
    # Connecting (or waiting for a pooled connection) gets half the budget, so a PSP that drops connection
    # attempts is seen as unreachable (nothing sent: safe to fail over), not as a timeout (maybe sent).
    timeout = settings.psp_http_timeout_seconds
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=timeout / 2, pool=timeout / 2)) as http:
        ledger, connectors = Ledger(engine), build_connectors(settings, http)
        rates = parse_rates(settings.fx_rates_to_eur)
        players = PlayerStore(engine, rates)
        routing = load_routing(settings)
        health = HealthStore(engine, routing)
        # Read once, at start-up: a bad rules file stops the worker with its line.
        risk = RiskScreening(engine, players, load_risk(settings), IpCountries.load(settings.ip_country_file), rates)
        activities = [
            *DepositActivities(ledger, players, risk, connectors, routing, health).all(),
            *WithdrawalActivities(engine, ledger, players, risk, connectors, settings, routing, health).all(),
            *risk.all(),
            *FxActivities(engine, ledger, rate_source(settings, http), settings.fx_spread_bps).all(),
            *RefundActivities(ledger, connectors, routing, health).all(),
            *DisputeActivities(ledger, routing).all(),
            *ReconciliationActivities(ledger, connectors).all(),
            AlertActivities(engine).raise_alert,
            AuditActivities(engine).record_audit,
            InboxActivities(engine).read_psp_event,
            # A bad thresholds file stops the worker with its line, like the rules file.
            *MonitorActivities(engine, client, settings.task_queue, load_thresholds(settings), health,
                               connectors.keys()).all(),
        ]
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=WORKFLOWS,
            activities=activities,
            # The workflows' own helper modules hold only definitions (dataclasses, constants, pure helpers), so
            # they are imported once for all workflows instead of once per cached workflow in the sandbox: that
            # copy was most of a waiting payment's memory (~460 KiB each; see docs/benchmarks.md).
            workflow_runner=SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(
                *SHARED_WORKFLOW_MODULES)),
            # On SIGTERM, let running activities finish instead of abandoning them to a timeout and retry.
            graceful_shutdown_timeout=timedelta(seconds=10),
        )
        async with worker, event_dispatcher(client, engine, settings):
            yield worker
    await engine.dispose()


async def run(settings: Settings) -> None:
    client = await connect(settings, worker_runtime(settings.worker_metrics_host, settings.worker_metrics_port))
    async with payments_worker(client, settings):
        logging.getLogger(__name__).info("worker polling task queue %s", settings.task_queue)
        await asyncio.Event().wait()
