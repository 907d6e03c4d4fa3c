"""The failure-drill harness: a stack of real processes that a drill breaks on purpose, a client workload that
behaves like the casino's systems (and retries as they must), the chaos actions, and the checks every drill ends
with.

The stack: a Temporal dev server with file persistence (restartable), a payments worker process (killable), a
private PostgreSQL cluster (restartable; tests/drills/conftest.py), and the API and the sandbox PSP served on
loopback by this process. Every drill ends with `DrillStack.verify`: every workflow closed in a final state, the
ledger invariants, each payment credited at most once (and exactly when it says credited), every hold resolved,
each player's balance what the client's own bookkeeping says, every webhook processed or dead-lettered, no 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from api.app import create_app
from psp.inbox import webhook_events
from ledger import assert_invariants
from ledger.models import disputes as dispute_records
from ledger.models import ledger_transfers
from ledger.models import refunds as refund_records
from payloop.db import create_engine
from payloop.money import currency_exponent, to_decimal_string
from payloop.settings import Settings
from payloop.temporal import connect
from psp.sandbox.app import SandboxConfig
from psp.sandbox.app import create_app as create_sandbox_app
from risk.config import default_risk_path
from tests.e2e.conftest import API_KEY, WEBHOOK_SECRET, WEBHOOK_SECRETS, Stack, serve, stack_settings
from tests.processes import (
    PostgresServer,
    TemporalDevServer,
    WorkerProcess,
    database_for_processes,
)
from workflows.psp_step import NOT_TAKEN_CODES
from workflows.types import (
    ActivityName,
    DepositState,
    DepositStatus,
    DisputeState,
    DisputeView,
    PayoutStatus,
    RefundState,
    RefundStatus,
    WithdrawalState,
)

CURRENCY = "EUR"
PSP_ACTIVITIES = frozenset({ActivityName.CREATE_PSP_PAYMENT, ActivityName.GET_PSP_PAYMENT,
                            ActivityName.CANCEL_PSP_PAYMENT, ActivityName.CREATE_PSP_PAYOUT,
                            ActivityName.GET_PSP_PAYOUT})
LEDGER_ACTIVITIES = frozenset({ActivityName.CREDIT_DEPOSIT, ActivityName.HOLD_PAYOUT,
                               ActivityName.POST_PAYOUT_HOLD, ActivityName.VOID_PAYOUT_HOLD})
# A client's patience for one request (it retries 5xx, 409 in flight and 429 meanwhile) and for one workflow.
REQUEST_DEADLINE = 240.0
RESULT_DEADLINE = 300.0


def drill_risk_file(workdir: Path) -> Path:
    """The shipped risk rules, evaluated and recorded on every drill payment but never acted on, and KYC gates and
    AML scenarios that no drill traffic reaches: a drill's players deposit, dispute and cash out at random, and the
    KYC waits and reviews the shipped file would ask for would stall them (nothing in a drill should wait for a
    person; tests/e2e/test_risk.py is where the rules act)."""
    shipped = default_risk_path().read_text(encoding="utf-8")
    start, end = shipped.index("\nrules:\n"), shipped.index("\nmarkets:")
    path = workdir / "drill-risk-rules.yaml"
    path.write_text("""
thresholds: {step_up_kyc: 9000, review: 9500, deny: 10000}
levels: {medium: 9000, high: 10000}
""" + shipped[start:end] + """
markets:
  default: {kyc_before_first_deposit: false, kyc_deposit_threshold_eur: "10000000.00", kyc_before_payout: false}
aml:
  cdd_threshold_eur: "10000000.00"
  structuring: {threshold_eur: "10000000.00"}
  rapid_in_out: {min_turnover_percent: 0}
  shared_instrument: {min_players: 1000000}
""", encoding="utf-8")
    return path


def drill_settings(database_url: str, temporal: TemporalDevServer, workdir: Path, **overrides: Any) -> Settings:
    """The e2e stack's settings with short webhook waits: a webhook held up by a crash or a restart then gives way to
    status polls, which the drills exercise too; KYC and payout review waits end within a drill (nothing should
    wait for them), refunds wait no longer than deposits."""
    values: dict[str, Any] = {
        "data_dir": workdir,
        "risk_file": drill_risk_file(workdir),
        "temporal_address": temporal.address,
        "deposit_webhook_timeout_seconds": 5.0,
        "deposit_status_poll_attempts": 3,
        "deposit_status_poll_interval_seconds": 0.5,
        "payout_webhook_timeout_seconds": 5.0,
        "payout_status_poll_attempts": 3,
        "payout_status_poll_interval_seconds": 0.5,
        "init_update_timeout_seconds": 15.0,
        "kyc_wait_timeout_seconds": 60.0,
        "review_wait_timeout_seconds": 30.0,  # no payout should go to review; if one does, it ends (and is reported)
        # Refunds (the client's, and those a review decision makes) wait as briefly as deposits for their webhook.
        "refund_webhook_timeout_seconds": 5.0,
        "refund_status_poll_attempts": 3,
        "refund_status_poll_interval_seconds": 0.5,
        "payout_psp_down_first_retry_seconds": 1.0,
        "payout_psp_down_deadline_seconds": 180.0,
        "psp_http_timeout_seconds": 5.0,
    }
    return stack_settings(database_url, f"payloop-drill-{uuid.uuid4().hex[:6]}", **(values | overrides))


# --- the stack -----------------------------------------------------------------------------------------------


@dataclass
class ApiLog:
    """Every answer the API gave during the drill."""

    statuses: Counter[int] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)  # "503 database_unavailable"
    server_errors: list[str] = field(default_factory=list)  # 500s: never acceptable
    without_retry_after: list[str] = field(default_factory=list)  # 503 / 429 without Retry-After

    async def record(self, response: httpx.Response) -> None:
        status = response.status_code
        self.statuses[status] += 1
        if status < 400:
            return
        await response.aread()
        try:
            code = response.json().get("code", "?")
        except ValueError:
            code = "not-json"
        self.problems[f"{status} {code}"] += 1
        where = f"{response.request.method} {response.request.url.path} → {status} {response.text[:300]}"
        if status == 500:
            self.server_errors.append(where)
        if status in (429, 503) and not response.headers.get("retry-after"):
            self.without_retry_after.append(where)


@dataclass
class Chaos:
    """What a drill did to the stack, for its figures."""

    worker_kills: int = 0
    temporal_restarts: int = 0
    postgres_restarts: int = 0
    psp_outages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probes: Counter[str] = field(default_factory=Counter)  # answers to requests made while something was down


@dataclass
class DrillStack:
    stack: Stack
    worker: WorkerProcess
    temporal: TemporalDevServer
    postgres: PostgresServer
    sandbox_app: FastAPI
    api_log: ApiLog
    chaos: Chaos = field(default_factory=Chaos)
    started: float = field(default_factory=time.monotonic)

    @property
    def client(self) -> Client:
        return self.stack.client

    @property
    def engine(self) -> AsyncEngine:
        return self.stack.engine

    @property
    def api(self) -> httpx.AsyncClient:
        return self.stack.api

    def log(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f} s] {message}"
        self.chaos.notes.append(line)
        print(line, flush=True)

    # --- chaos ---

    async def kill_worker(self, *, down_seconds: float = 1.0, why: str = "") -> None:
        self.worker.kill()
        self.chaos.worker_kills += 1
        self.log(f"worker killed (SIGKILL){f' {why}' if why else ''}")
        await asyncio.sleep(down_seconds)
        await self.worker.start()
        self.log("worker restarted")

    async def restart_temporal(self, *, down_seconds: float = 3.0,
                               while_down: Callable[[], Awaitable[None]] | None = None) -> None:
        self.temporal.stop()
        self.chaos.temporal_restarts += 1
        self.log("Temporal dev server stopped")
        deadline = time.monotonic() + down_seconds
        if while_down is not None:
            await while_down()
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        await self.temporal.start()
        self.log("Temporal dev server started again (same state file)")

    async def restart_postgres(self, *, mode: str = "fast", down_seconds: float = 4.0,
                               while_down: Callable[[], Awaitable[None]] | None = None) -> None:
        await asyncio.to_thread(self.postgres.stop, mode)
        self.chaos.postgres_restarts += 1
        self.log(f"PostgreSQL stopped ({mode})")
        deadline = time.monotonic() + down_seconds
        if while_down is not None:
            await while_down()
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        await asyncio.to_thread(self.postgres.start)
        self.log("PostgreSQL started again")

    async def psp_down(self, psp: str, seconds: float, mode: str = "down",
                       until: Callable[[], Awaitable[None]] | None = None) -> None:
        """The sandbox PSP refuses every API call (`down`; or answers 500, `error`) for `seconds`, or until
        `until` returned and then `seconds` more; its circuit then heals by itself (no reset)."""
        started = time.monotonic()
        await self.set_psp_mode(psp, mode)
        self.log(f"PSP {psp} {mode}")
        if until is not None:
            await until()
        await asyncio.sleep(seconds)
        await self.set_psp_mode(psp, "up")
        self.chaos.psp_outages.append(f"{psp} {mode} {time.monotonic() - started:.0f} s")
        self.log(f"PSP {psp} up")

    async def set_psp_mode(self, psp: str, mode: str) -> None:
        response = await self.stack.sandbox.post(f"/control/{psp}", json={"mode": mode})
        assert response.status_code == 200, response.text

    async def probe(self, what: str, request: Awaitable[httpx.Response], expect: set[int]) -> httpx.Response:
        """A request made while a dependency is down: its answer must be one of `expect` (never a 500) and a
        503 must say when to retry."""
        response = await request
        self.chaos.probes[f"{what}: {response.status_code}"] += 1
        assert response.status_code in expect, f"{what} while down: {response.status_code} {response.text}"
        if response.status_code == 503:
            assert response.headers["content-type"] == "application/problem+json", response.headers
            assert int(response.headers["retry-after"]) > 0, response.headers
            assert response.json()["retryable"] is True
        return response

    # --- where workflows are ---

    async def running_workflow_ids(self, limit: int = 300) -> list[str]:
        ids: list[str] = []
        async for execution in self.client.list_workflows("ExecutionStatus = 'Running'", limit=limit):
            ids.append(execution.id)
        return ids

    async def pending_activities(self, names: Iterable[str], limit: int = 60) -> list[tuple[str, str]]:
        """(workflow id, activity) for running workflows with one of `names` started at a worker right now."""
        wanted = set(names)
        ids = (await self.running_workflow_ids())[:limit]

        async def of(workflow_id: str) -> list[tuple[str, str]]:
            with contextlib.suppress(RPCError):
                description = await self.client.get_workflow_handle(workflow_id).describe()
                return [(workflow_id, a.activity_type.name) for a in description.raw_description.pending_activities
                        if a.activity_type.name in wanted
                        and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED]
            return []

        return [hit for hits in await asyncio.gather(*(of(i) for i in ids)) for hit in hits]

    async def kill_worker_during(self, names: Iterable[str], what: str, timeout: float = 30.0,
                                 down_seconds: float = 1.0) -> list[tuple[str, str]]:
        """Waits until an activity of `names` runs at the worker, then kills the worker (and starts a new one)."""
        deadline = time.monotonic() + timeout
        while not (hits := await self.pending_activities(names)):
            assert time.monotonic() < deadline, f"no {what} in flight within {timeout} s: the drill missed its aim"
            await asyncio.sleep(0.1)
        await self.kill_worker(down_seconds=down_seconds, why=f"during {what}: {len(hits)} in flight "
                               f"({', '.join(sorted({name for _, name in hits}))})")
        return hits

    async def waiting_workflow_ids(self, limit: int = 60) -> list[str]:
        """Running workflows with no activity scheduled: waiting for a webhook, a timer or a signal."""
        ids = (await self.running_workflow_ids())[:limit]

        async def idle(workflow_id: str) -> bool:
            with contextlib.suppress(RPCError):
                description = await self.client.get_workflow_handle(workflow_id).describe()
                return not description.raw_description.pending_activities
            return False

        return [i for i, is_idle in zip(ids, await asyncio.gather(*(idle(i) for i in ids))) if is_idle]

    async def kill_worker_during_ledger_posts(self, timeout: float = 30.0) -> int:
        """Holds a row lock on the PSP clearing and payout house accounts, so ledger posts (deposit credits, payout
        holds, posts and voids) block inside their transaction; kills the worker while they wait; lets go."""
        async with self.engine.connect() as conn:
            transaction = await conn.begin()
            await conn.execute(sa.text("SELECT id FROM ledger_accounts WHERE id LIKE 'psp:%' "
                                       "OR id LIKE 'house:payouts:%' FOR UPDATE"))
            deadline = time.monotonic() + timeout
            while True:
                waiting = (await conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"))).scalar_one()
                if waiting >= 2:
                    break
                assert time.monotonic() < deadline, f"no ledger post blocked within {timeout} s"
                await asyncio.sleep(0.1)
            self.worker.kill()
            await transaction.rollback()
        self.chaos.worker_kills += 1
        self.log(f"worker killed (SIGKILL) during ledger posts: {waiting} transactions inside a post")
        await asyncio.sleep(1.0)
        await self.worker.start()
        self.log("worker restarted")
        return waiting

    # --- the end of every drill ---

    async def verify(self, load: Workload, *, exact: bool = True) -> Figures:
        """Every check a drill ends with; returns the drill's figures."""
        await load.finish()
        await self._webhook_retries_done()
        problems: list[str] = []
        problems += load.unexpected
        problems += await self._workflows_closed(load)
        await assert_invariants(self.engine)  # double entry, floors, stored = transfers, ≤ 1 credit per payment
        problems += await self._credits_and_holds(load)
        problems += await self._refunds_and_disputes_booked(load)
        problems += await self._balances(load)
        webhooks = await self._webhooks()
        problems += webhooks.pop("problems")
        problems += [f"webhook stuck: {problem}" for problem in webhooks.pop("stuck")]
        for _subject, workflow_id, problem in load.outcome_problems(exact=exact):
            causes = await failure_causes(self.client, workflow_id) if workflow_id else []
            problems.append(problem + "".join(f"\n      {cause}" for cause in causes))
        problems += [f"API answered 500: {e}" for e in self.api_log.server_errors[:20]]
        problems += [f"API 503/429 without Retry-After: {e}" for e in self.api_log.without_retry_after[:20]]
        if not self.worker.running:
            problems.append(f"the worker died by itself:\n{self.worker.log()[-3000:]}")
        figures = Figures.of(self, load, webhooks)
        print(figures.render(), flush=True)
        assert not problems, "drill found problems:\n  " + "\n  ".join(problems[:60])
        return figures

    async def _workflows_closed(self, load: Workload) -> list[str]:
        """Every workflow on the server is one the client caused — its deposits, payouts and refunds, the refunds
        its review decisions made, the disputes it had the PSP open — and each has completed (read with describe,
        which is authoritative; the list comes from visibility, which may lag a moment behind)."""
        problems: list[str] = []
        expected = {f"deposit-{d.payment_id}" for d in load.deposits if d.payment_id}
        expected |= {f"withdrawal-{p.payout_id}" for p in load.payouts if p.payout_id}
        expected |= {f"refund-{refund_id}" for refund_id in load.review_refunds}
        expected |= {f"refund-{r.refund_id}" for r in load.refunds if r.refund_id}
        expected |= {x.workflow_id() for x in load.disputes if x.dispute_id}
        deadline = time.monotonic() + 15
        while True:
            listed = {execution.id async for execution in self.client.list_workflows(limit=100_000)}
            if listed >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        problems += [f"workflow {w} started but unknown to the client" for w in sorted(listed - expected)]
        ids = sorted(listed | expected)

        async def status(workflow_id: str) -> WorkflowExecutionStatus | None:
            try:
                return (await self.client.get_workflow_handle(workflow_id).describe()).status
            except RPCError:
                return None

        for i in range(0, len(ids), 50):
            batch = ids[i:i + 50]
            for workflow_id, state in zip(batch, await asyncio.gather(*(status(w) for w in batch))):
                if state is None:
                    problems.append(f"workflow {workflow_id} missing from Temporal")
                elif state != WorkflowExecutionStatus.COMPLETED:
                    problems.append(f"workflow {workflow_id} is {state.name}, not completed")
        return problems

    async def _credits_and_holds(self, load: Workload) -> list[str]:
        problems: list[str] = []
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(ledger_transfers.c.kind, ledger_transfers.c.reference,
                                                 ledger_transfers.c.status))).all()
        by_reference: dict[str, list[tuple[str, str]]] = {}
        for kind, reference, status in rows:
            by_reference.setdefault(reference, []).append((kind, status))
        problems += [f"transfer of {ref} still pending (an unresolved hold)" for ref, ts in by_reference.items()
                     if any(status == "pending" for _, status in ts)]
        for d in load.deposits:
            if d.final is None:
                continue
            credits = [s for k, s in by_reference.get(d.payment_id or "", []) if k == "deposit"]
            want = ["posted"] if d.final.status == DepositStatus.CREDITED else []
            if credits != want:
                problems.append(f"deposit {d.payment_id} ({d.final.status}): ledger credits {credits}, not {want}")
        for p in load.payouts:
            if p.final is None:
                continue
            # The payout's fee shares its reference.
            holds = [s for k, s in by_reference.get(p.payout_id or "", []) if k == "payout"]
            if p.final.hold_transfer_id is None:
                want = []
            else:
                want = ["posted"] if p.final.status == PayoutStatus.PAID else ["voided"]
            if holds != want or (want and p.final.hold_resolution != want[0]):
                problems.append(f"payout {p.payout_id} ({p.final.status}, hold {p.final.hold_resolution}): "
                                f"ledger {holds}, not {want}")
        return problems

    async def _refunds_and_disputes_booked(self, load: Workload) -> list[str]:
        """The ledger's refund and dispute records are the client's, each ended as its workflow did."""
        async with self.engine.connect() as conn:
            booked = {row.refund_id: row.status for row in await conn.execute(
                sa.select(refund_records.c.refund_id, refund_records.c.status))}
            booked |= {f"{row.psp}:{row.dispute_id}": row.state for row in await conn.execute(
                sa.select(dispute_records.c.psp, dispute_records.c.dispute_id, dispute_records.c.state))}
        ended = {r.refund_id: r.final.status if r.final else None for r in load.refunds if r.refund_id}
        ended |= {refund_id: final.status if final else None for refund_id, final in load.review_refunds.items()}
        ended |= {f"{x.psp}:{x.dispute_id}": x.final.status if x.final else None
                  for x in load.disputes if x.dispute_id}
        return [f"{key}: booked {booked.get(key, 'nowhere')}, its workflow ended {ended.get(key, 'unknown')}"
                for key in sorted(booked.keys() | ended.keys()) if booked.get(key) != ended.get(key)]

    async def _balances(self, load: Workload) -> list[str]:
        problems: list[str] = []
        for player in load.players.values():
            response = await load.traffic.call("GET", f"/v1/wallet/{player.id}/balance")
            assert response.status_code == 200, response.text
            balances = {b["currency"]: b for b in response.json()["balances"]}
            got = balances.get(CURRENCY, {"available": "0.00", "held": "0.00"})
            want = to_decimal_string(player.expected_minor(), CURRENCY)
            if (got["available"], got["held"]) != (want, "0.00"):
                problems.append(f"player {player.id}: available {got['available']} held {got['held']}, "
                                f"the client's books say {want} and 0.00")
        return problems

    async def _webhook_retries_done(self, timeout: float = 30) -> None:
        """Waits while the sandbox still means to send some webhook: a copy not sent yet (storm jitter), or one a
        503 told to come back."""
        sandbox = self.sandbox_app.state.sandbox
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last: dict[tuple[str, str], str] = {}
            for entry in sandbox.webhooks.log:
                last[(entry["psp"], entry["event_id"])] = entry["outcome"]
            if "retrying" not in last.values() and not sandbox.busy():
                return
            await asyncio.sleep(0.5)

    async def _webhooks(self) -> dict[str, Any]:
        """Every webhook the sandbox sent was delivered and then processed or dead-lettered, never lost."""
        problems: list[str] = []
        stuck: list[str] = []
        log = self.sandbox_app.state.sandbox.webhooks.log
        attempts: dict[tuple[str, str], list[str]] = {}
        answers: Counter[str] = Counter()
        for entry in log:
            attempts.setdefault((entry["psp"], entry["event_id"]), []).append(entry["outcome"])
            answers[str(entry["status_code"] or entry["error"])] += 1
            if entry["status_code"] == 500:
                problems.append(f"webhook delivery {entry['psp']} {entry['event_id']} answered 500")
        async with self.engine.connect() as conn:
            stored = {(r.psp, r.event_id): (r.state, r.dead_letter_reason)
                      for r in await conn.execute(sa.select(webhook_events))}
        delivered_copies = Counter()
        for key, outcomes in attempts.items():
            delivered_copies[outcomes.count("delivered")] += 1
            if "gave_up" in outcomes:
                problems.append(f"webhook {key} given up by the PSP after {len(outcomes)} attempts: {outcomes}")
            if key not in stored:
                problems.append(f"webhook {key} sent ({outcomes}) but not in the inbox: lost")
            elif stored[key][0] == "received":
                stuck.append(f"webhook {key} stuck in the inbox as received ({outcomes})")
            elif stored[key][0] not in ("signalled", "dead_letter"):
                problems.append(f"webhook {key} in the inbox as {stored[key][0]}")
        states = Counter(f"{state}{f' ({reason})' if reason else ''}" for state, reason in stored.values())
        return {"problems": problems, "stuck": stuck, "events": len(attempts), "deliveries": len(log),
                "answers": dict(sorted(answers.items())),
                "delivered_copies": dict(sorted(delivered_copies.items())), "inbox": dict(sorted(states.items()))}


@contextlib.asynccontextmanager
async def open_drill(
    postgres: PostgresServer, workdir: Path, *, webhook_copies: int = 1, webhook_jitter_seconds: float = 0.0,
    slow_seconds: float = 1.0, **overrides: Any,
) -> AsyncIterator[DrillStack]:
    """A fresh stack for one drill: its own Temporal dev server (state file in `workdir`), its own database on the
    private PostgreSQL, a worker process, the API and the sandbox PSP."""
    temporal = TemporalDevServer(workdir)
    await temporal.start()
    worker: WorkerProcess | None = None
    try:
        async with database_for_processes("postgres", workdir, postgres.url) as url:
            settings = drill_settings(url, temporal, workdir, **overrides)
            engine = create_engine(url)
            client = await connect(settings)  # with the payload codec, as the worker process has
            sandbox_app = create_sandbox_app(SandboxConfig(
                webhook_url_template=f"{settings.api_url}/v1/webhooks/{{psp}}",
                webhook_secret=WEBHOOK_SECRET,
                webhook_secrets=dict(WEBHOOK_SECRETS),  # each PSP its own, as the API verifies them
                public_url=settings.sandbox_psp_url,
                settle_delay_seconds=0.05,
                # Real PSPs redeliver for hours; this schedule (~60 s) outlasts every outage a drill causes.
                webhook_retry_delays=(0.2, 0.5, 1, 2, 4, 8, 15, 30),
                slow_seconds=slow_seconds,
                webhook_copies=webhook_copies,
                webhook_jitter_seconds=webhook_jitter_seconds,
            ))
            api_log = ApiLog()
            worker = WorkerProcess(settings, workdir)
            try:
                async with (
                    serve(sandbox_app, settings.sandbox_psp_port),
                    serve(create_app(settings, engine=engine, temporal=client), settings.api_port),
                    httpx.AsyncClient(base_url=settings.api_url, headers={"Authorization": f"Bearer {API_KEY}"},
                                      timeout=60, event_hooks={"response": [api_log.record]}) as api,
                    httpx.AsyncClient(base_url=settings.sandbox_psp_url, timeout=30) as sandbox,
                ):
                    await worker.start()
                    stack = Stack("postgres", settings, engine, client, api, sandbox)
                    yield DrillStack(stack, worker, temporal, postgres, sandbox_app, api_log)
            finally:
                worker.stop()
                if not postgres.running:  # a drill that failed while PostgreSQL was down
                    await asyncio.to_thread(postgres.start)
                await engine.dispose()
    finally:
        temporal.stop()


# --- the client workload -------------------------------------------------------------------------------------


class Traffic:
    """The casino's side of the API: it retries what the API says to retry (5xx, 504, 409 in flight, 429) with the
    same Idempotency-Key / transaction id, after Retry-After, until a definitive answer."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api
        self.retries = 0
        self.transport_errors: Counter[str] = Counter()

    async def call(self, method: str, path: str, *, json: dict[str, Any] | None = None, key: str | None = None,
                   deadline: float = REQUEST_DEADLINE, tally: Counter[str] | None = None) -> httpx.Response:
        """The definitive answer; `tally` counts the answers that were retried ("409 idempotency_in_flight")."""
        headers = {"Idempotency-Key": key} if key else {}
        give_up = time.monotonic() + deadline
        while True:
            try:
                response = await self.api.request(method, path, json=json, headers=headers)
            except httpx.TransportError as err:
                # E.g. a kept-alive connection the server closed as the request went out: retried like a 503.
                self.transport_errors[type(err).__name__] += 1
                assert time.monotonic() < give_up, f"{method} {path}: {err!r} after {deadline} s"
                await asyncio.sleep(0.5)
                continue
            if not _retry(response):
                return response
            assert time.monotonic() < give_up, f"{method} {path}: still {response.status_code} after {deadline} s"
            self.retries += 1
            if tally is not None:
                tally[f"{response.status_code} {response.json().get('code')}"] += 1
            await asyncio.sleep(min(float(response.headers.get("retry-after") or 0.5), 2.0))


def _retry(response: httpx.Response) -> bool:
    if response.status_code >= 500 and response.status_code != 502:  # 502: no PSP could take it (final)
        return True
    if response.status_code == 429:
        return True
    return response.status_code == 409 and response.json().get("code") == "idempotency_in_flight"


def _refused_by_open_circuits(deposit: Deposit) -> bool:
    """A card deposit refused because every card acquirer's circuit was open or probing: the circuit breaker at
    work, not a bug. `flaky` deposits fail two calls in three, so a few at once do open `card` (min_samples 3) —
    and the same scenario then fails at card_b too. No money moved (the other checks see to that)."""
    final = deposit.final
    return (final is not None and final.status == DepositStatus.FAILED
            and final.failure_code in ("psp_unavailable", "method_unavailable")
            and all(re.fullmatch(r"card(_b)?: failover \((psp_unavailable|circuit_open)\)", a) for a in final.attempts))


def _refund_not_taken(refund: RefundState) -> bool:
    """A refund its PSP did not take because it was down (or its circuit open): failed, the money released."""
    return refund.status == RefundStatus.FAILED and refund.failure_code in NOT_TAKEN_CODES


# Per scenario: how a deposit / payout ends when nothing else goes wrong.
DEPOSIT_EXPECTED = {
    "approve": DepositStatus.CREDITED, "challenge": DepositStatus.CREDITED, "duplicate_webhook": DepositStatus.CREDITED,
    "out_of_order": DepositStatus.CREDITED, "flaky": DepositStatus.CREDITED, "slow": DepositStatus.CREDITED,
    "no_webhook": DepositStatus.CREDITED, "decline": DepositStatus.FAILED, "lost": DepositStatus.EXPIRED,
}
# Scenarios that go to review, and why; the drill's operator decides them in turn: credit what the PSP captured,
# refund it all, credit what the player asked for (the rest is refunded). Each decision's end:
REVIEW_REASONS = {"wrong_amount": "amount_mismatch"}
REVIEW_DECISIONS = ("approve", "reject", "approve_asked")
REVIEW_EXPECTED = {"approve": DepositStatus.CREDITED, "reject": DepositStatus.REFUNDED,
                   "approve_asked": DepositStatus.CREDITED}
PAYOUT_EXPECTED = {
    "approve": PayoutStatus.PAID, "duplicate_webhook": PayoutStatus.PAID, "out_of_order": PayoutStatus.PAID,
    "flaky": PayoutStatus.PAID, "slow": PayoutStatus.PAID, "no_webhook": PayoutStatus.PAID,
    "fail": PayoutStatus.FAILED, "decline": PayoutStatus.FAILED,
}
# (method, scenario, weight): card deposits go to `card` (lowest fee), or `card_b` when card is out of the way.
DEPOSIT_MIX = [
    ("card", "approve", 30), ("ewallet", "approve", 24), ("card", "challenge", 8), ("crypto", "approve", 5),
    ("card", "duplicate_webhook", 5), ("ewallet", "out_of_order", 5), ("card", "flaky", 4), ("ewallet", "slow", 4),
    ("card", "no_webhook", 3), ("card", "decline", 5), ("ewallet", "wrong_amount", 1), ("card", "lost", 1),
]
# Client refunds by sandbox scenario (`no_webhook`: only a look-up learns the end), and how each ends.
REFUND_MIX = [("approve", 6), ("decline", 3), ("no_webhook", 1)]
REFUND_EXPECTED = {"approve": RefundStatus.SUCCEEDED, "no_webhook": RefundStatus.SUCCEEDED,
                   "decline": RefundStatus.FAILED}
DISPUTE_PSPS = frozenset({"card", "card_b", "ewallet"})  # payments with a chargeback right
PAYOUT_MIX = [
    ("approve", 70), ("duplicate_webhook", 5), ("out_of_order", 5), ("flaky", 5), ("slow", 5), ("no_webhook", 4),
    ("fail", 3), ("decline", 3),
]


@dataclass
class Deposit:
    player: str
    method: str
    scenario: str
    amount_minor: int
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    payment_id: str | None = None
    init_status: int | None = None
    final: DepositState | None = None
    started: float = 0.0
    init_seconds: float = 0.0
    done_seconds: float = 0.0
    retried: Counter[str] = field(default_factory=Counter)  # answers to its init that the client retried
    # In review: why, what the drill decided (REVIEW_DECISIONS) and what the PSP had captured.
    review_reason: str | None = None
    decision: str | None = None
    captured_minor: int | None = None
    credited_minor: int = 0
    refunded_minor: int = 0  # refunded at the PSP by a review decision (never the player's money)

    def expected(self) -> str:
        if self.scenario in REVIEW_REASONS:
            return REVIEW_EXPECTED.get(self.decision or "", DepositStatus.IN_REVIEW)
        return DEPOSIT_EXPECTED[self.scenario]

    def review_problem(self) -> str | None:
        """A deposit that went to review, or was decided, otherwise than its scenario says."""
        want = REVIEW_REASONS.get(self.scenario)
        if self.review_reason != want:
            return f"went to review for {self.review_reason}, expected {want}"
        if self.decision is None or self.captured_minor is None or self.final is None:
            return None
        captured, asked = self.captured_minor, self.amount_minor
        credited, refunded = {"approve": (captured, 0), "reject": (0, captured),
                              "approve_asked": (asked, captured - asked)}[self.decision]
        if (self.credited_minor, self.refunded_minor) != (credited, refunded):
            return (f"{self.decision} of a capture of {captured}: credited {self.credited_minor}, refunded "
                    f"{self.refunded_minor}, expected {credited} and {refunded}")
        return None


@dataclass
class Payout:
    player: str
    scenario: str
    amount_minor: int
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    payout_id: str | None = None
    init_status: int | None = None
    final: WithdrawalState | None = None


@dataclass
class Refund:
    """A partial refund of a credited deposit, asked for by the client."""

    player: str
    payment_id: str
    scenario: str
    amount_minor: int
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    refund_id: str | None = None
    final: RefundState | None = None


@dataclass
class Dispute:
    """A chargeback the sandbox PSP raises on (part of) a credited deposit, and resolves as `outcome` says."""

    player: str
    payment_id: str
    psp: str
    amount_minor: int
    outcome: str  # won | lost
    dispute_id: str | None = None
    final: DisputeView | None = None

    def workflow_id(self) -> str:
        return f"dispute-{self.psp}-{self.dispute_id}"


@dataclass
class Player:
    id: str
    credited_minor: int = 0
    bets_minor: int = 0
    wins_minor: int = 0
    rollbacks_minor: int = 0  # bets given back
    held_minor: int = 0  # payouts, refunds and disputes started and not finished
    paid_minor: int = 0
    refunded_minor: int = 0  # deposits refunded to the player's card or wallet
    charged_back_minor: int = 0  # disputes lost
    rounds: int = 0
    kyc_set: bool = False

    def available_minor(self) -> int:
        return self.expected_minor() - self.held_minor

    def expected_minor(self) -> int:
        return self.credited_minor - self.bets_minor + self.wins_minor + self.rollbacks_minor - self.paid_minor \
            - self.refunded_minor - self.charged_back_minor


class Workload:
    """Players who deposit (several methods and sandbox scenarios), play game rounds, and withdraw; run with
    bounded concurrency, so the run lasts long enough for the chaos to land in the middle of it."""

    def __init__(self, drill: DrillStack, *, players: int, deposits: int, payouts: int, rounds: int,
                 concurrency: int = 16, seed: int = 1, deposit_mix: list[tuple[str, str, int]] | None = None,
                 payout_mix: list[tuple[str, int]] | None = None, refund_share: float = 0.0,
                 dispute_share: float = 0.0) -> None:
        """`refund_share` / `dispute_share`: of the credited card and e-wallet deposits, those partly refunded /
        disputed at their PSP."""
        self.drill = drill
        self.traffic = Traffic(drill.api)
        self.rng = random.Random(seed)
        self.concurrency = concurrency
        self.rounds_target = rounds
        self.players = {pid: Player(pid) for pid in (f"drill-{uuid.uuid4().hex[:10]}" for _ in range(players))}
        ids = list(self.players)
        mix = deposit_mix or DEPOSIT_MIX
        self.deposits = []
        for i in range(deposits):
            method, scenario, _w = self.rng.choices(mix, weights=[w for *_, w in mix])[0]
            self.deposits.append(Deposit(ids[i % players], method, scenario, self.rng.randint(1000, 8000)))
        pmix = payout_mix or PAYOUT_MIX
        self.payout_plan = {pid: [] for pid in ids}
        for i in range(payouts):
            self.payout_plan[ids[i % players]].append(self.rng.choices(pmix, weights=[w for _, w in pmix])[0][0])
        self.payouts: list[Payout] = []
        self.refund_share, self.dispute_share = refund_share, dispute_share
        self.refunds: list[Refund] = []
        self.disputes: list[Dispute] = []
        self.unexpected: list[str] = []
        self.started_at = 0.0
        self.finished_at = 0.0
        self.deposits_started = 0
        self.deposits_done = 0
        self.payouts_started = 0
        self.refused: Counter[str] = Counter()  # definitive refusals: "bet 402", "payout 402"
        self._task: asyncio.Task[None] | None = None
        self._extra: list[asyncio.Task[None]] = []
        self.unplaced: list[str] = []  # payouts a player could not afford
        self.reviews_decided = 0  # deposits in review for their scenario's reason, decided by the drill
        self.review_refunds: dict[str, RefundState | None] = {}  # refund id → end: the refunds decisions made

    # --- running ---

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def finish(self) -> None:
        if self._task is not None:
            await self._task
            self._task = None
        await asyncio.gather(*self._extra)

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        """Waits for the run to reach a point (e.g. a third of the deposits started) before the next chaos."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self._task is not None and self._task.done():
                self._task.result()
                raise AssertionError(f"the run ended before {what}")
            assert time.monotonic() < deadline, f"not {what} within {timeout} s"
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        semaphore = asyncio.Semaphore(self.concurrency)
        by_player: dict[str, list[Deposit]] = {pid: [] for pid in self.players}
        for deposit in self.deposits:
            by_player[deposit.player].append(deposit)
        quota = _split(self.rounds_target, len(self.players))

        async def journey(player: Player, deposits: list[Deposit], rounds: int) -> None:
            async with semaphore:
                await self._journey(player, deposits, rounds)

        await asyncio.gather(*(journey(p, by_player[p.id], q) for p, q in zip(self.players.values(), quota)))
        # What a player without money could not do, richer players do.
        played = sum(p.rounds for p in self.players.values())
        rich = sorted(self.players.values(), key=Player.available_minor, reverse=True)
        for i in range(self.rounds_target - played):
            await self._round(rich[i % max(1, len(rich) // 4)])
        leftover, self.unplaced = self.unplaced, []
        for scenario in leftover:
            player = max(self.players.values(), key=Player.available_minor)
            await self._payouts(player, [scenario])
        self.finished_at = time.monotonic()

    async def _journey(self, player: Player, deposits: list[Deposit], rounds: int) -> None:
        response = await self.traffic.call("PUT", f"/v1/ops/players/{player.id}/kyc", json={"status": "verified"})
        player.kyc_set = self._expect(response, {200}, "set KYC")
        # A player's deposits go in together (several tabs); the screening serializes them per player anyway.
        await asyncio.gather(*(self._deposit(player, deposit) for deposit in deposits))
        await self._refunds_and_disputes(player, deposits)
        for _ in range(rounds):
            if player.available_minor() >= 100:
                await self._round(player)
        await self._payouts(player, self.payout_plan[player.id])

    async def _payouts(self, player: Player, scenarios: list[str]) -> None:
        """Starts the payouts one after the other (each holds its amount), then waits for them all."""
        payouts = []
        for scenario in scenarios:
            if player.available_minor() < 300:
                self.unplaced.append(scenario)
                continue
            payout = Payout(player.id, scenario, self.rng.randint(100, player.available_minor() // 3))
            self.payouts.append(payout)
            payouts.append(payout)
            await self._start_payout(player, payout)
        await asyncio.gather(*(self._finish_payout(player, payout) for payout in payouts))

    async def _refunds_and_disputes(self, player: Player, deposits: list[Deposit]) -> None:
        """Some credited deposits are partly refunded, others disputed; one at a time, before the player plays or
        withdraws, so the client's books know what the player has when each takes money: a dispute then holds its
        whole amount from the balance (none of it becomes a receivable), and a refund is never refused for want
        of funds."""
        for d in deposits:
            if d.final is None or d.final.status != DepositStatus.CREDITED or d.final.psp not in DISPUTE_PSPS:
                continue
            draw = self.rng.random()
            if draw >= self.refund_share + self.dispute_share:
                continue
            amount_minor = min(self.rng.randint(d.credited_minor // 5, d.credited_minor // 2),
                               player.available_minor())
            if amount_minor < 100:
                continue
            if draw < self.refund_share:
                await self._refund(player, d, amount_minor)
            else:
                await self._dispute(player, d, amount_minor)

    async def _refund(self, player: Player, d: Deposit, amount_minor: int) -> None:
        assert d.payment_id is not None
        scenario = self.rng.choices(REFUND_MIX, weights=[w for _, w in REFUND_MIX])[0][0]
        r = Refund(player.id, d.payment_id, scenario, amount_minor)
        self.refunds.append(r)
        body = {"amount": to_decimal_string(amount_minor, CURRENCY), "reason": "drill: the player asked",
                "meta": {"sandbox_scenario": scenario}}
        response = await self.traffic.call("POST", f"/v1/payments/{d.payment_id}/refunds", json=body, key=r.key)
        if not self._expect(response, {201}, f"refund ({scenario})"):
            return
        r.refund_id = response.json()["refund_id"]
        player.held_minor += amount_minor  # until the PSP's word
        r.final = await self._result(f"refund-{r.refund_id}", RefundState)
        player.held_minor -= amount_minor
        if r.final is not None and r.final.status == RefundStatus.SUCCEEDED:
            player.refunded_minor += amount_minor

    async def _dispute(self, player: Player, d: Deposit, amount_minor: int) -> None:
        """The PSP opens a chargeback (its webhook starts the dispute workflow); once the ledger has booked it,
        the PSP resolves it."""
        assert d.payment_id is not None and d.final is not None and d.final.psp is not None
        x = Dispute(player.id, d.payment_id, d.final.psp, amount_minor, self.rng.choice(("won", "lost")))
        self.disputes.append(x)
        sandbox = self.drill.stack.sandbox
        response = await sandbox.post(f"/control/{x.psp}/disputes", json={
            "payment_id": x.payment_id, "amount": to_decimal_string(amount_minor, CURRENCY),
            "reason_code": "fraudulent"})
        if not self._expect(response, {201}, f"dispute at {x.psp}"):
            return
        x.dispute_id = response.json()["dispute_id"]
        player.held_minor += amount_minor  # until it is resolved
        await self._until_dispute_opened(x)
        response = await sandbox.post(f"/control/{x.psp}/disputes/{x.dispute_id}/resolve",
                                      json={"outcome": x.outcome})
        self._expect(response, {200}, f"dispute resolution at {x.psp}")
        x.final = await self._result(x.workflow_id(), DisputeView)
        player.held_minor -= amount_minor
        if x.final is not None and x.final.status == DisputeState.LOST:
            player.charged_back_minor += amount_minor

    async def _until_dispute_opened(self, x: Dispute) -> None:
        """Until ops see the dispute opened (the ledger has held its money), as `GET /v1/ops/disputes` lists it."""
        deadline = time.monotonic() + RESULT_DEADLINE
        while time.monotonic() < deadline:
            response = await self.traffic.call("GET", "/v1/ops/disputes?state=opened&limit=200")
            if not self._expect(response, {200}, "ops disputes list"):
                return
            if any((item["psp"], item["dispute_id"]) == (x.psp, x.dispute_id) for item in response.json()["disputes"]):
                return
            await asyncio.sleep(0.5)
        self.unexpected.append(f"{x.workflow_id()}: not opened within {RESULT_DEADLINE} s")

    async def probe_deposit(self, what: str, expect: set[int]) -> httpx.Response:
        """One deposit request sent once, now (while something is down): its answer must be one of `expect`.
        The client then carries on with it as with any other (retries with the same key, waits for the end)."""
        player = next(p for p in self.players.values() if p.kyc_set)
        d = Deposit(player.id, "ewallet", "approve", 1000)
        self.deposits.append(d)
        response = await self.drill.probe(what, self.drill.api.post(
            "/v1/payments/init", json=_deposit_body(d), headers={"Idempotency-Key": d.key}), expect)

        async def carry_on() -> None:
            await self._start_deposit(d)
            await self._finish_deposit(player, d)

        self._extra.append(asyncio.create_task(carry_on()))
        return response

    async def _deposit(self, player: Player, d: Deposit) -> None:
        await self._start_deposit(d)
        await self._finish_deposit(player, d)

    async def _start_deposit(self, d: Deposit) -> None:
        self.deposits_started += 1
        d.started = time.monotonic()
        response = await self.traffic.call("POST", "/v1/payments/init", json=_deposit_body(d), key=d.key,
                                           tally=d.retried)
        d.init_seconds = time.monotonic() - d.started
        d.init_status = response.status_code
        if not self._expect(response, {201, 402, 422, 502}, f"deposit init ({d.scenario})"):
            return
        answer = response.json()
        d.payment_id = answer["payment_id"]
        if response.status_code == 201 and answer.get("redirect_url") and (
                d.scenario == "challenge" or d.method == "bank_transfer"):
            # The player passes 3-D Secure, or authorises at the bank, on the PSP's page (a form post; its 303
            # leads back to the casino).
            async with httpx.AsyncClient(timeout=30) as browser:
                for _ in range(60):
                    page = await browser.post(answer["redirect_url"], data={"outcome": "success"})
                    if page.status_code == 303:
                        break
                    await asyncio.sleep(1)  # the PSP may be down for a while
                self._expect(page, {303}, "3-D Secure challenge")

    async def _finish_deposit(self, player: Player, d: Deposit) -> None:
        if d.payment_id is None:
            return
        d.final = await self._result(f"deposit-{d.payment_id}", DepositState,
                                     while_running=lambda: self._review_if_waiting(d))
        d.done_seconds = time.monotonic() - d.started
        self.deposits_done += 1
        if d.final is None:
            return
        for refund_id in d.final.refund_ids:  # a child of the deposit: ended before it
            self.review_refunds[refund_id] = await self._result(f"refund-{refund_id}", RefundState)
        if d.decision is not None:
            await self._read_reviewed_money(d)
        elif d.final.status == DepositStatus.CREDITED:
            d.credited_minor = d.amount_minor
        player.credited_minor += d.credited_minor

    async def _review_if_waiting(self, d: Deposit) -> None:
        """An operator's round: a deposit the payment view shows in review is decided. An amount mismatch by the
        drill's turn (REVIEW_DECISIONS); any other review (none is planned) as ops would: credit a capture the
        PSP reports, else reject. Asked again while the deposit stays in review (a decision it could not carry
        out yet); a decision still being carried out answers 409, which is no news."""
        response = await self.traffic.call("GET", f"/v1/payments/{d.payment_id}")
        if not self._expect(response, {200}, "payment view") or response.json()["status"] != DepositStatus.IN_REVIEW:
            return
        view = response.json()
        psp_view = view["review_psp_view"] or {}
        if d.decision is None:
            d.review_reason = view["review_reason"]
            if d.review_reason == REVIEW_REASONS.get(d.scenario):
                d.decision = REVIEW_DECISIONS[self.reviews_decided % len(REVIEW_DECISIONS)]
                self.reviews_decided += 1
            else:
                d.decision = "approve" if psp_view.get("status") == "captured" else "reject"
            d.captured_minor = psp_view.get("amount_minor")
        body: dict[str, Any] = {"decision": "reject" if d.decision == "reject" else "approve", "reviewer": "drill",
                                "reason": f"drill: {d.review_reason}"}
        if d.decision == "approve_asked":
            body["amount"] = to_decimal_string(d.amount_minor, CURRENCY)
        response = await self.traffic.call("POST", f"/v1/ops/payments/{d.payment_id}/review", json=body)
        if response.status_code != 409 or response.json().get("code") != "not_in_review":
            self._expect(response, {200, 202}, f"review {d.decision} of {d.payment_id} ({d.review_reason})")

    async def _read_reviewed_money(self, d: Deposit) -> None:
        """What a decided deposit credited and refunded, as its payment view says (the ledger's figures)."""
        response = await self.traffic.call("GET", f"/v1/payments/{d.payment_id}")
        if not self._expect(response, {200}, "payment view after review"):
            return
        view = response.json()
        d.credited_minor, d.refunded_minor = _minor(view["credited_amount"]), _minor(view["refunded_amount"])

    async def _start_payout(self, player: Player, p: Payout) -> None:
        body = {"amount": to_decimal_string(p.amount_minor, CURRENCY), "currency": CURRENCY, "player_id": p.player,
                "meta": {"sandbox_scenario": p.scenario}}
        self.payouts_started += 1
        response = await self.traffic.call("POST", "/v1/payouts/init", json=body, key=p.key)
        p.init_status = response.status_code
        if not self._expect(response, {201, 402, 422}, f"payout init ({p.scenario})"):
            return
        p.payout_id = response.json()["payout_id"]
        if response.status_code == 201:
            player.held_minor += p.amount_minor
        else:
            self.refused[f"payout {response.status_code} {response.json().get('code')}"] += 1

    async def _finish_payout(self, player: Player, p: Payout) -> None:
        if p.payout_id is None:
            return
        p.final = await self._result(f"withdrawal-{p.payout_id}", WithdrawalState)
        if p.init_status == 201:
            player.held_minor -= p.amount_minor
            if p.final is not None and p.final.status == PayoutStatus.PAID:
                player.paid_minor += p.amount_minor

    async def _round(self, player: Player) -> None:
        """A game round: a bet, then a win (possibly 0.00, a lost round) or, now and then, a rollback."""
        round_id = f"r-{uuid.uuid4().hex[:12]}"
        bet = self.rng.randint(10, max(10, min(500, player.available_minor() // 10)))
        base = {"player_id": player.id, "currency": CURRENCY, "round_id": round_id, "game_id": "drill-slots"}
        response = await self.traffic.call("POST", "/v1/wallet/debit", json={
            **base, "amount": to_decimal_string(bet, CURRENCY), "transaction_id": f"bet-{round_id}"})
        if response.status_code == 402:
            self.refused["bet 402"] += 1
            return
        if not self._expect(response, {200}, "bet"):
            return
        player.bets_minor += bet
        player.rounds += 1
        if self.rng.random() < 0.1:
            response = await self.traffic.call("POST", "/v1/wallet/rollback", json={
                **base, "transaction_id": f"rb-{round_id}", "reference_transaction_id": f"bet-{round_id}"})
            if self._expect(response, {200}, "rollback"):
                player.rollbacks_minor += bet
            return
        win = self.rng.choice([0, 0, bet // 2, bet, bet * 2])
        response = await self.traffic.call("POST", "/v1/wallet/credit", json={
            **base, "amount": to_decimal_string(win, CURRENCY), "transaction_id": f"win-{round_id}",
            "reference_transaction_id": f"bet-{round_id}"})
        if self._expect(response, {200}, "win"):
            player.wins_minor += win

    async def _result(self, workflow_id: str, result_type: type, *,
                      while_running: Callable[[], Awaitable[None]] | None = None,
                      every_seconds: float = 5.0) -> Any:
        """The workflow's final state, waiting through restarts up to RESULT_DEADLINE; `while_running` is called
        every `every_seconds` until it ends (e.g. to decide a review it waits for)."""
        waiting = asyncio.create_task(self._wait_for_result(workflow_id, result_type))
        deadline = time.monotonic() + RESULT_DEADLINE
        try:
            while (remaining_seconds := deadline - time.monotonic()) > 0:
                if while_running is not None:
                    remaining_seconds = min(remaining_seconds, every_seconds)
                if (await asyncio.wait({waiting}, timeout=remaining_seconds))[0]:
                    return waiting.result()
                if while_running is not None:
                    await while_running()
            self.unexpected.append(f"{workflow_id}: no result within {RESULT_DEADLINE} s")
            return None
        finally:
            waiting.cancel()

    async def _wait_for_result(self, workflow_id: str, result_type: type) -> Any:
        """The wait is a long poll at Temporal, asked again after an outage."""
        handle = self.drill.client.get_workflow_handle(workflow_id, result_type=result_type)
        while True:
            try:
                return await handle.result()
            except WorkflowFailureError as err:
                self.unexpected.append(f"{workflow_id} failed: {err.cause!r}")
                return None
            except (RPCError, TimeoutError):
                await asyncio.sleep(1.0)

    def _expect(self, response: httpx.Response, statuses: set[int], what: str) -> bool:
        if response.status_code in statuses:
            return True
        self.unexpected.append(f"{what}: {response.status_code} {response.text[:300]}")
        return False

    # --- outcomes ---

    def outcome_problems(self, *, exact: bool) -> list[tuple[object, str | None, str]]:
        """(deposit, payout, refund or dispute; workflow id; problem): each ended in a final status, and
        (`exact`) the one its scenario says; each refund a review decision made was carried out."""
        problems: list[tuple[object, str | None, str]] = []
        for d in self.deposits:
            if d.payment_id is None or d.final is None:
                problems.append((d, None, f"deposit {d.key} ({d.scenario}) has no outcome (init {d.init_status})"))
                continue
            workflow_id = f"deposit-{d.payment_id}"
            if d.final.status not in DepositStatus.FINAL:
                problems.append((d, workflow_id, f"deposit {d.payment_id} ended {d.final.status}"))
            elif exact and d.final.status != d.expected() and not _refused_by_open_circuits(d):
                problems.append((d, workflow_id, (f"deposit {d.payment_id} ({d.method} {d.scenario}) ended "
                                 f"{d.final.status} ({d.final.failure_code or d.review_reason}; "
                                 f"{d.final.attempts}), expected {d.expected()}")))
            elif exact and (problem := d.review_problem()) is not None:
                problems.append((d, workflow_id, f"deposit {d.payment_id} ({d.method} {d.scenario}) {problem}"))
        for r in self.refunds:
            if r.refund_id is None or r.final is None:
                problems.append((r, None, f"refund {r.key} ({r.scenario}) of {r.payment_id} has no outcome"))
            elif r.final.status not in RefundStatus.FINAL:
                problems.append((r, f"refund-{r.refund_id}", f"refund {r.refund_id} ended {r.final.status}"))
            elif exact and r.final.status != REFUND_EXPECTED[r.scenario] and not _refund_not_taken(r.final):
                problems.append((r, f"refund-{r.refund_id}", (f"refund {r.refund_id} ({r.scenario}) ended "
                                 f"{r.final.status} ({r.final.failure_code}), expected {REFUND_EXPECTED[r.scenario]}")))
        for x in self.disputes:
            if x.dispute_id is None or x.final is None:
                problems.append((x, None, f"dispute of {x.payment_id} at {x.psp} has no outcome"))
            elif x.final.status != x.outcome or (x.final.held_minor, x.final.shortfall_minor) != (x.amount_minor, 0):
                problems.append((x, x.workflow_id(), (f"{x.workflow_id()} ended {x.final.status} (held "
                                 f"{x.final.held_minor}, short {x.final.shortfall_minor}), expected {x.outcome} "
                                 f"with all {x.amount_minor} held from the player")))
        for refund_id, final in self.review_refunds.items():
            if final is None or (final.status != RefundStatus.SUCCEEDED and not _refund_not_taken(final)):
                problems.append((None, f"refund-{refund_id}", (f"refund {refund_id} of a review decision ended "
                                 f"{final.status if final else None} ({final.failure_code if final else ''})")))
        for p in self.payouts:
            if p.payout_id is None or p.final is None:
                problems.append((p, None, f"payout {p.key} ({p.scenario}) has no outcome (init {p.init_status})"))
                continue
            workflow_id = f"withdrawal-{p.payout_id}"
            if p.final.status not in PayoutStatus.FINAL:
                problems.append((p, workflow_id, f"payout {p.payout_id} ended {p.final.status}"))
            elif exact and p.init_status == 201 and p.final.status != PAYOUT_EXPECTED[p.scenario]:
                problems.append((p, workflow_id, (f"payout {p.payout_id} ({p.scenario} at {p.final.psp}) ended "
                                 f"{p.final.status} ({p.final.failure_code or p.final.review_reason}), "
                                 f"expected {PAYOUT_EXPECTED[p.scenario]}")))
        return problems

    def deposit_statuses(self) -> Counter[str]:
        return Counter(d.final.status if d.final else "none" for d in self.deposits)

    def payout_statuses(self) -> Counter[str]:
        return Counter(p.final.status if p.final else "none" for p in self.payouts)

    def refund_statuses(self) -> Counter[str]:
        return Counter(r.final.status if r.final else "none" for r in self.refunds)

    def dispute_statuses(self) -> Counter[str]:
        return Counter(x.final.status if x.final else "none" for x in self.disputes)

    def review_decisions(self) -> Counter[str]:
        """"approve → credited", …: each decided deposit's decision and end."""
        return Counter(f"{d.decision} → {d.final.status if d.final else 'none'}" for d in self.deposits if d.decision)


def _deposit_body(d: Deposit) -> dict[str, Any]:
    return {"amount": to_decimal_string(d.amount_minor, CURRENCY), "currency": CURRENCY, "method": d.method,
            "player_id": d.player, "return_url": "https://casino.example/return",
            "meta": {"country": "DE", "sandbox_scenario": d.scenario}}


def _minor(amount: str) -> int:
    """An amount the API answered with, in minor units (zero too, which no request may ask for)."""
    return int(Decimal(amount).scaleb(currency_exponent(CURRENCY)))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --- figures -------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    seconds: float
    run_seconds: float
    deposits: dict[str, int]
    reviews: dict[str, int]
    payouts: dict[str, int]
    payouts_skipped: int
    refunds: dict[str, int]
    disputes: dict[str, int]
    rounds: int
    restarts: dict[str, Any]
    api: dict[str, Any]
    webhooks: dict[str, Any]
    latency: dict[str, str]

    @classmethod
    def of(cls, drill: DrillStack, load: Workload, webhooks: dict[str, Any]) -> Figures:
        return cls(
            name="",
            seconds=time.monotonic() - drill.started,
            run_seconds=(load.finished_at or time.monotonic()) - load.started_at,
            deposits=dict(load.deposit_statuses().most_common()),
            reviews=dict(load.review_decisions().most_common()),
            payouts=dict(load.payout_statuses().most_common()),
            payouts_skipped=len(load.unplaced),
            refunds=dict(load.refund_statuses().most_common()),
            disputes=dict(load.dispute_statuses().most_common()),
            rounds=sum(p.rounds for p in load.players.values()),
            restarts={"worker kills": drill.chaos.worker_kills, "Temporal restarts": drill.chaos.temporal_restarts,
                      "PostgreSQL restarts": drill.chaos.postgres_restarts, "PSP outages": drill.chaos.psp_outages},
            api={"answers": dict(sorted(drill.api_log.statuses.items())),
                 "problems": dict(drill.api_log.problems.most_common()), "client retries": load.traffic.retries,
                 "transport errors": dict(load.traffic.transport_errors),
                 "refused": dict(load.refused), "probes while down": dict(drill.chaos.probes)},
            webhooks=webhooks,
            latency=_latency(load),
        )

    def render(self) -> str:
        lines = [
            f"--- drill figures{f' ({self.name})' if self.name else ''} ---",
            f"duration          {self.seconds:.1f} s (workload {self.run_seconds:.1f} s)",
            f"deposits          {sum(self.deposits.values())}: {self.deposits}",
            f"reviews decided   {sum(self.reviews.values())}: {self.reviews}",
            (f"payouts           {sum(self.payouts.values())}: {self.payouts} (skipped for want of funds: "
             f"{self.payouts_skipped})"),
            f"refunds           {sum(self.refunds.values())}: {self.refunds}",
            f"disputes          {sum(self.disputes.values())}: {self.disputes}",
            f"game rounds       {self.rounds}",
            f"restarts          {self.restarts}",
            f"API answers       {self.api['answers']}",
            f"API problems      {self.api['problems']}",
            (f"client            retries {self.api['client retries']}, refused {self.api['refused']}, "
             f"connection errors {self.api['transport errors']}"),
            f"probes while down {self.api['probes while down']}",
            f"webhooks          {self.webhooks}",
        ]
        lines.append(f"deposit latency   {self.latency}")
        return "\n".join(lines)


def _latency(load: Workload) -> dict[str, str]:
    """Median and 95th percentile, in seconds, of a deposit's init answer and of its end (from the first try)."""
    def percentiles(values: list[float]) -> str:
        if not values:
            return "-"
        ordered = sorted(values)
        return f"p50 {ordered[len(ordered) // 2]:.1f} p95 {ordered[min(len(ordered) - 1, len(ordered) * 95 // 100)]:.1f}"

    ended = [d for d in load.deposits if d.final is not None]
    return {"init": percentiles([d.init_seconds for d in ended]), "final": percentiles([d.done_seconds for d in ended])}


async def failure_causes(client: Client, workflow_id: str) -> list[str]:
    """What went wrong in a workflow, from its history: each activity that failed or timed out, and why."""
    causes: list[str] = []
    scheduled: dict[int, str] = {}
    with contextlib.suppress(RPCError):
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                attributes = event.activity_task_failed_event_attributes
                # Failure messages are encrypted in the history (payloop/codec.py): the client decodes them.
                error = await client.data_converter.decode_failure(attributes.failure)
                cause = str(error.__cause__) if error.__cause__ else ""
                causes.append(f"{scheduled.get(attributes.scheduled_event_id, '?')} failed: "
                              f"{str(error)[:160]} {cause[:160]}".rstrip())
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
                attributes = event.activity_task_timed_out_event_attributes
                causes.append(f"{scheduled.get(attributes.scheduled_event_id, '?')} timed out")
    return causes


async def retried_activities(client: Client, workflow_ids: Iterable[str]) -> Counter[str]:
    """Activities whose lost attempt was made again, by type, from the histories: an attempt > 1 (Temporal retried
    it after its start-to-close timeout), or a try that timed out, for activities the workflow itself retries as a
    new activity (the PSP create tries, one activity each)."""
    counts: Counter[str] = Counter()

    async def scan(workflow_id: str) -> None:
        scheduled: dict[int, str] = {}
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = event.activity_task_started_event_attributes
                if started.attempt > 1:
                    counts[scheduled.get(started.scheduled_event_id, "?")] += 1
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
                name = scheduled.get(event.activity_task_timed_out_event_attributes.scheduled_event_id, "?")
                if name in (ActivityName.CREATE_PSP_PAYMENT, ActivityName.CREATE_PSP_PAYOUT):
                    counts[name] += 1

    ids = list(workflow_ids)
    for i in range(0, len(ids), 50):
        await asyncio.gather(*(scan(w) for w in ids[i:i + 50]))
    return counts

