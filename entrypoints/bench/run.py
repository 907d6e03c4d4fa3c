"""`payloop bench`: drive a stack, then its Temporal floor (the skeleton), and write the report.

Phases, in order (each can be sized or skipped):

1. warm-up: one deposit per method, one at a time (not reported; its card deposit's history gives the shape
   the skeleton copies);
2. low-load: deposits one at a time — init latency at low load;
3. max: `deposits` deposits at `concurrency` in flight (closed loop, or `rate` per second) — throughput;
4. half: half as many deposits, open loop at half the throughput `max` reached — webhook → credited under a
   load the stack can carry;
5. hold (with `hold`): that many card deposits stopped at their 3DS challenge until all are in flight at once,
   held a few seconds while RSS is sampled, then completed — memory with many payments in flight;
6. rounds: `rounds` game rounds (bet + win through the game wallet API) at `concurrency`;
7. payouts: `payouts` players of credited deposits get KYC verified and wager their deposit once (setup), then
   one payout each at `concurrency`;
8. skeleton: the same shape as a deposit, doing nothing, on its own task queue and in-process worker against
   the same Temporal server: low-load, then `deposits` at `concurrency`.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from tqdm import tqdm

from entrypoints.bench import analysis, report
from entrypoints.bench.ledger_bench import LedgerBenchOptions, run_ledger_bench
from entrypoints.bench.memory import RssSampler
from entrypoints.bench.model import BenchOptions, BenchRun
from entrypoints.bench.patient_http import RetryAfterTransport
from entrypoints.bench.skeleton import Shape, drive, skeleton_worker
from entrypoints.bench.target import Target, embedded_target, remote_target
from entrypoints.bench.traffic import Driver, Phase
from payloop.codec import data_converter
from payloop.settings import Settings


def run_bench(options: BenchOptions) -> int:
    """The command: start (or reach) the stack, run everything, write and print the report."""
    machine = report.machine_info()
    options.out.mkdir(parents=True, exist_ok=True)
    if options.api_url:
        target_cm = _null_context(remote_target(options.api_url, options.api_key, options.temporal_address,
                                                options.namespace))
    else:
        print("starting the embedded stack…", file=sys.stderr, flush=True)
        target_cm = embedded_target(options.out / "stack", options.database_url)
    with target_cm as target:
        run = asyncio.run(drive_target(options, target))
    ledger_result = _ledger_part(options) if options.ledger else None
    result, paths = finish(run, machine, ledger_result)
    print(report.console_summary(result))
    print(f"\nwritten: {paths['json']}\n         {paths['png']}")
    return 0


def finish(run: BenchRun, machine: dict[str, Any], ledger_result: dict[str, Any] | None = None,
           ) -> tuple[dict[str, Any], dict[str, Path]]:
    """The report's figures, written as JSON and PNG into the run's --out directory."""
    machine["load_average_end"] = report.load_average()
    result = report.build(run, machine, ledger_result)
    return result, report.write(result, run, run.options.out)


class _null_context:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


def _ledger_part(options: BenchOptions) -> dict[str, Any] | None:
    if not options.database_url or not options.database_url.startswith("postgresql"):
        return {"skipped": "the ledger micro-benchmark needs --database-url postgresql+asyncpg://…"}
    return asyncio.run(run_ledger_bench(LedgerBenchOptions(
        options.database_url, clients=options.ledger_clients, seconds=options.ledger_seconds, out=options.out)))


def _bar(enabled: bool) -> Callable[[str, int], Any]:
    def make(name: str, total: int) -> Any:
        return tqdm(total=total, desc=f"{name:>12}", unit="op", file=sys.stderr, disable=not enabled,
                    dynamic_ncols=True, leave=True)
    return make


async def drive_target(options: BenchOptions, target: Target) -> BenchRun:
    """All the traffic phases, then the skeleton, then what histories, inbox and ledger say about them."""
    client = await Client.connect(target.temporal_address, namespace=target.namespace)
    # Our workflows' results are encrypted (payloop/codec.py): the driver reads them with the stack's key ring (from
    # PAYLOOP_CODEC_KEYS, as the stack's processes do). The skeleton stays on the bare client: Temporal's floor.
    ours = await Client.connect(target.temporal_address, namespace=target.namespace,
                                data_converter=data_converter(Settings().codec_keys))
    limits = httpx.Limits(max_connections=options.concurrency * 2 + 20,
                          max_keepalive_connections=options.concurrency * 2 + 20)
    async with (
        httpx.AsyncClient(base_url=target.api_url, headers={"Authorization": f"Bearer {target.api_key}"},
                          timeout=options.timeout,
                          transport=RetryAfterTransport(httpx.AsyncHTTPTransport(limits=limits))) as api,
        httpx.AsyncClient(timeout=options.timeout, limits=limits) as browser,
    ):
        driver = Driver(api, browser, ours, timeout=options.timeout, progress=_bar(options.progress))
        run = BenchRun(options, target, driver, started=time.time())
        run.notes += target.notes
        cursor = await analysis.inbox_cursor(api)
        if cursor.note:
            run.notes.append(cursor.note)
            run.webhook_source = "signal_event"
        with RssSampler(target.processes, in_flight=lambda: driver.in_flight) as rss:
            await _our_phases(options, driver, run)
        run.memory = rss.summary() if target.processes else {"measured": False, "note": " ".join(target.notes)}
        run.rss_samples = rss.samples

        deposit_ids = [d.workflow_id for d in driver.deposits if d.workflow_id]
        payout_ids = [p.workflow_id for p in driver.payouts if p.workflow_id]
        run.histories = await analysis.read_histories(client, deposit_ids,
                                                      credit_activity=analysis.deposit_credit_activity())
        run.histories |= await analysis.read_histories(client, payout_ids)
        run.webhook_received = await analysis.final_webhooks(api, cursor)
        run.ledger = await analysis.ledger_activity(api, [d.player_id for d in driver.deposits])

        if options.skeleton:
            await _skeleton(options, client, run)
        run.finished = time.time()
        return run


async def _our_phases(options: BenchOptions, driver: Driver, run: BenchRun) -> None:
    methods = options.methods
    await driver.deposit_phase("warmup", len(methods), 1, methods)
    if options.low_load:
        await driver.deposit_phase("low-load", options.low_load, 1, methods)
    if options.deposits:
        top = await driver.deposit_phase("max", options.deposits, options.concurrency, methods, rate=options.rate)
        if options.half_load and top.throughput > 0:
            half_rate = top.throughput / 2
            await driver.deposit_phase("half", max(options.deposits // 2, 1), options.concurrency, methods,
                                       rate=half_rate)
    if options.hold:
        await driver.hold_phase("hold", options.hold, init_concurrency=options.concurrency)
    funded = [d.player_id for d in driver.deposits if d.final_status == "credited"]
    if options.rounds:
        await driver.rounds_phase("rounds", options.rounds, options.concurrency, funded)
    if options.payouts:
        payout_players = funded[: options.payouts]
        if len(payout_players) < options.payouts:
            run.notes.append(f"only {len(payout_players)} credited deposits: {len(payout_players)} payouts, "
                             f"not {options.payouts}")
        await driver.prepare_payout_players(payout_players, options.concurrency)
        await driver.payout_phase("payouts", payout_players, options.concurrency)


async def _skeleton(options: BenchOptions, client: Client, run: BenchRun) -> None:
    if options.skeleton_shape:
        run.shape, run.shape_source = str(Shape.parse(options.skeleton_shape)), "--skeleton-shape"
    else:
        run.shape, run.shape_source = _observed_shape(run)
    shape = Shape.parse(run.shape)
    task_queue = f"bench-skeleton-{uuid.uuid4().hex[:8]}"
    make_bar = _bar(options.progress)
    async with skeleton_worker(client, task_queue):
        phases = [("skeleton-low", options.low_load, 1), ("skeleton-max", options.deposits, options.concurrency)]
        await drive(client, task_queue, shape, 3, 1)  # warm-up, as ours
        for name, count, concurrency in phases:
            if not count:
                continue
            bar = make_bar(name, count)
            result = await drive(client, task_queue, shape, count, concurrency,
                                 signal_delay=options.skeleton_signal_delay, progress=lambda b=bar: b.update(1))
            bar.close()
            run.skeleton_runs[name] = result
            run.skeleton_phases.append(Phase(name, "skeleton", concurrency, started=result.started,
                                             finished=result.finished, count=count,
                                             completed=len(result.samples)))
    ids = [s.workflow_id for r in run.skeleton_runs.values() for s in r.samples]
    run.skeleton_histories = await analysis.read_histories(client, ids)


def _observed_shape(run: BenchRun) -> tuple[str, str]:
    """The shape of the warm-up card deposit (else any credited deposit): what the skeleton copies."""
    credited = [d for d in run.driver.deposits if d.final_status == "credited" and d.workflow_id in run.histories]
    preferred = [d for d in credited if d.method == "card"] or credited
    if not preferred:
        return "aaa|a", "default (no credited deposit to copy)"
    record = preferred[0]
    return run.histories[record.workflow_id or ""].shape, f"history of {record.workflow_id} ({record.method})"
