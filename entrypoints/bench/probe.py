"""Where does a Temporal dev server's fixed wait per activity come from? (`payloop bench probe`)

Starts one dev server per server variant (in memory, or a SQLite file like `payloop run`), runs skeleton
workflows of several shapes one at a time (no load: pure latency) under several worker variants, and prints a
table of median and p90 end-to-end times. Shapes as in `entrypoints.bench.skeleton` ("a" activity, "l" local
activity, "aaa|a" = update answered after 3 activities, then a signal, then 1 activity).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client

from entrypoints.bench.skeleton import Shape, run_one, skeleton_worker
from entrypoints.bench.stats import percentile
from payloop.temporal import temporal_cli_path

DEFAULT_SHAPES = ("", "a", "aa", "aaa", "aaaaa", "lll", "aaa|a")


@dataclass(frozen=True)
class ServerVariant:
    name: str
    dynamic_config: tuple[str, ...] = ()  # KEY=JSON_VALUE
    db_file: bool = False
    pragmas: tuple[str, ...] = ()  # --sqlite-pragma NAME=VALUE


@dataclass(frozen=True)
class WorkerVariant:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    eager_start: bool = False


POLL_RPS = ("history.transferProcessorMaxPollRPS=1000", "history.timerProcessorMaxPollRPS=1000")
WAL = ("journal_mode=wal", "synchronous=normal")
ONE_PARTITION = ("matching.numTaskqueueReadPartitions=1", "matching.numTaskqueueWritePartitions=1")

SERVER_VARIANTS = (
    ServerVariant("default (in memory)"),
    ServerVariant("default, SQLite file", db_file=True),
    ServerVariant("1 task-queue partition", ONE_PARTITION),
    ServerVariant("matching long poll 5s", ("matching.longPollExpirationInterval=\"5s\"",)),
    ServerVariant("transfer+timer poll RPS 1000", POLL_RPS),
    ServerVariant("transfer poll RPS 1000 only", POLL_RPS[:1]),
    ServerVariant("poll RPS 1000 + 1 partition", POLL_RPS + ONE_PARTITION),
    ServerVariant("poll RPS 1000, SQLite file", POLL_RPS, db_file=True),
    ServerVariant("poll RPS 1000, SQLite file, WAL", POLL_RPS, db_file=True, pragmas=WAL),
)
WORKER_VARIANTS = (
    WorkerVariant("SDK defaults"),
    WorkerVariant("no eager activities", {"disable_eager_activity_execution": True}),
    WorkerVariant("no sticky cache", {"max_cached_workflows": 0}),
    WorkerVariant("10 WFT + 10 activity pollers",
                  {"max_concurrent_workflow_task_polls": 10, "max_concurrent_activity_task_polls": 10}),
    WorkerVariant("eager workflow start", eager_start=True),
)
# Worker variants are tried on these servers only (the default, and the default with the fix).
WORKER_VARIANT_SERVERS = ("default (in memory)", "transfer+timer poll RPS 1000")


@dataclass
class ProbeRow:
    server: str
    worker: str
    shape: str
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float


@contextlib.asynccontextmanager
async def dev_server(variant: ServerVariant, port: int, workdir: Path) -> AsyncIterator[Client]:
    argv = [temporal_cli_path(), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
            "--log-level", "error"]
    if variant.db_file:
        argv += ["--db-filename", str(workdir / f"temporal-{port}.db")]
    for value in variant.dynamic_config:
        argv += ["--dynamic-config-value", value]
    for pragma in variant.pragmas:
        argv += ["--sqlite-pragma", pragma]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220 - once per variant
    try:
        client = await _connect(f"127.0.0.1:{port}", proc)
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _connect(address: str, proc: subprocess.Popen, timeout: float = 60) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"dev server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            return await Client.connect(address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def probe_shapes(client: Client, server: str, worker: WorkerVariant, shapes: tuple[str, ...], runs: int,
                       warmup: int = 3) -> list[ProbeRow]:
    rows = []
    task_queue = f"bench-probe-{time.monotonic_ns()}"
    async with skeleton_worker(client, task_queue, **worker.options):
        for text in shapes:
            shape = Shape.parse(text)
            for _ in range(warmup):
                await run_one(client, task_queue, shape, eager_start=worker.eager_start)
            totals = []
            for _ in range(runs):
                sample = await run_one(client, task_queue, shape, eager_start=worker.eager_start)
                totals.append(sample.total * 1000)
            rows.append(ProbeRow(server, worker.name, str(shape) or "(none)", runs,
                                 round(percentile(totals, 50), 1), round(percentile(totals, 90), 1),
                                 round(min(totals), 1)))
    return rows


async def run_probe(shapes: tuple[str, ...] = DEFAULT_SHAPES, runs: int = 20, *, port: int = 17233,
                    servers: tuple[ServerVariant, ...] = SERVER_VARIANTS,
                    workers: tuple[WorkerVariant, ...] = WORKER_VARIANTS) -> list[ProbeRow]:
    rows: list[ProbeRow] = []
    with tempfile.TemporaryDirectory(prefix="payloop-probe-") as tmp:
        for index, server in enumerate(servers):
            async with dev_server(server, port + index, Path(tmp)) as client:
                for worker in workers:
                    if worker.name != WORKER_VARIANTS[0].name and server.name not in WORKER_VARIANT_SERVERS:
                        continue
                    new = await probe_shapes(client, server.name, worker, shapes, runs)
                    for row in new:
                        print(f"{row.server:32} {row.worker:30} {row.shape:8} "
                              f"median {row.median_ms:7.1f} ms  p90 {row.p90_ms:7.1f} ms", flush=True)
                    rows += new
    return rows


def markdown_table(rows: list[ProbeRow]) -> str:
    """One line per (server, worker) variant, one column per shape (median ms, p90 in brackets)."""
    shapes = list(dict.fromkeys(r.shape for r in rows))
    lines = ["| server | worker | " + " | ".join(f"`{s}`" for s in shapes) + " |",
             "|---|---|" + "---:|" * len(shapes)]
    variants = list(dict.fromkeys((r.server, r.worker) for r in rows))
    for server, worker in variants:
        cells = {r.shape: f"{r.median_ms:.0f} ({r.p90_ms:.0f})" for r in rows if (r.server, r.worker) == (server, worker)}
        lines.append(f"| {server} | {worker} | " + " | ".join(cells.get(s, "") for s in shapes) + " |")
    return "\n".join(lines)


def main(out: Path, shapes: tuple[str, ...], runs: int) -> int:
    rows = asyncio.run(run_probe(shapes, runs))
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    table = markdown_table(rows)
    (out / "probe.md").write_text(table + "\n")
    print("\nmedian end-to-end ms (p90), one workflow at a time:\n")
    print(table)
    print(f"\nwritten: {out / 'probe.json'}, {out / 'probe.md'}")
    return 0
