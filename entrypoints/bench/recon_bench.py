"""`payloop bench recon`: one PSP's day of `lines` settled captures, reconciled on PostgreSQL.

A scratch database (created next to the URL given, dropped after) is seeded in bulk with `lines` captured and credited
card deposits of one day (ledger/seed.py), and the sandbox PSP — its own process, over HTTP, as in production — is told
to settle exactly them (`POST /control/card/settlement {"synthetic": …}`). Then the reconciliation activity runs as
the worker runs it (temporalio's ActivityEnvironment: heartbeats and all): the connector streams and parses the
report, the ledger classifies it in chunks and posts a settlement per line. Measured: wall time and lines/s, the
process's RSS growth during the run (sampled; the target: ≤ 60 s and ≤ 100 MB for 100,000 lines), the same day run
again at a later moment (every line read and classified again, nothing posted twice), and as the floor the same
report only streamed and parsed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psutil
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from temporalio.testing import ActivityEnvironment

from activities.reconciliation import ReconciliationActivities
from entrypoints.bench.memory import MB
from entrypoints.migrate import upgrade
from ledger import Ledger
from ledger.models import ledger_transfers, recon_settlements
from ledger.seed import seed_captures_for_benchmark
from payloop.db import create_engine
from payloop.money import to_decimal_string
from payloop.settings import Settings
from psp.registry import build_connectors
from workflows.types import ReconInput

TARGET_SECONDS = 60
TARGET_RSS_GROWTH_MB = 100
PSP = "card"
AMOUNT_MINOR, FEE_MINOR = 5_000, 95  # 50.00 EUR; what the report says the PSP kept
PREFIX = "bench_"


@dataclass
class ReconBenchOptions:
    database_url: str  # PostgreSQL: a scratch database is created there and dropped
    lines: int = 100_000


async def run_recon_bench(options: ReconBenchOptions) -> dict[str, Any]:
    scratch = f"payloop_recon_{uuid.uuid4().hex[:10]}"
    admin = create_engine(options.database_url, pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{scratch}"'))
    try:
        url = make_url(options.database_url).set(database=scratch).render_as_string(hide_password=False)
        return await _bench(url, options)
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        await admin.dispose()


async def _bench(url: str, options: ReconBenchOptions) -> dict[str, Any]:
    await upgrade(url)
    day = datetime.now(UTC).date() - timedelta(days=1)
    port = _free_port()
    settings = Settings(database_url=url, sandbox_psp_port=port, sandbox_psp_host="127.0.0.1",
                        sandbox_psp_base_url=f"http://127.0.0.1:{port}")
    sandbox = _start_sandbox(port)
    engine = create_engine(url, pool_size=2)
    try:
        ledger = Ledger(engine)
        started = time.perf_counter()
        await seed_captures_for_benchmark(ledger, psp=PSP, day=day, count=options.lines, amount_minor=AMOUNT_MINOR,
                                          fee_minor=FEE_MINOR, prefix=PREFIX)
        async with engine.connect() as conn:  # fresh statistics, as autovacuum would have them
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
        seed_s = time.perf_counter() - started
        async with httpx.AsyncClient(timeout=30) as http:
            await _wait_ready(http, settings.sandbox_psp_url)
            await _settle_synthetic(http, settings.sandbox_psp_url, day, options.lines)
            connectors = build_connectors(settings, http)
            parse = await _parse_only(connectors[PSP], day)
            activities = ReconciliationActivities(ledger, connectors)
            first = await _timed_run(activities, ReconInput(PSP, day.isoformat()))
            # The same day at a later moment: another run, which reads and classifies every line again, finds each
            # settled by the first, and posts nothing.
            later = datetime.combine(day + timedelta(days=3), datetime.min.time(), UTC)
            again = await _timed_run(activities, ReconInput(PSP, day.isoformat(), later.isoformat()))
        async with engine.connect() as conn:
            transfers = (await conn.execute(select(func.count()).select_from(ledger_transfers))).scalar_one()
            settled = (await conn.execute(select(func.count()).select_from(recon_settlements))).scalar_one()
    finally:
        await engine.dispose()
        sandbox.terminate()
        sandbox.wait(timeout=15)
    lines_per_s = round(options.lines / first["elapsed_s"])
    return {
        "lines": options.lines, "psp": PSP, "day": day.isoformat(), "backend": "postgresql",
        "seed_s": round(seed_s, 1),
        "stream_and_parse_only": parse,
        "reconcile": {**first, "lines_per_s": lines_per_s},
        "rerun_same_day": again,
        "settlements_posted": settled,
        "ledger_transfers": transfers,  # 3 per line: the seeded credit and fee, and the settlement
        "vs_parse_only": round(lines_per_s / parse["lines_per_s"], 3),
        "target": {"seconds": TARGET_SECONDS, "rss_growth_mb": TARGET_RSS_GROWTH_MB},
        "within_target": first["elapsed_s"] <= TARGET_SECONDS
        and first["rss_growth_mb"] <= TARGET_RSS_GROWTH_MB,
    }


async def _timed_run(activities: ReconciliationActivities, run: ReconInput) -> dict[str, Any]:
    """The activity as the worker runs it, with this process's RSS sampled meanwhile."""
    me = psutil.Process(os.getpid())
    baseline_mb = me.memory_info().rss / MB
    peak_mb = baseline_mb
    stop = threading.Event()

    def sample() -> None:  # this process alone: the sandbox PSP is a child, and not the worker's memory
        nonlocal peak_mb
        while not stop.wait(0.1):
            peak_mb = max(peak_mb, me.memory_info().rss / MB)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        started = time.perf_counter()
        summary = await ActivityEnvironment().run(activities.reconcile_day, run)
        elapsed_s = time.perf_counter() - started
    finally:
        stop.set()
        sampler.join()
    peak_mb = max(peak_mb, me.memory_info().rss / MB)
    return {"elapsed_s": round(elapsed_s, 1), "counts": summary.counts, "state": summary.state,
            "rss_baseline_mb": round(baseline_mb, 1), "rss_peak_mb": round(peak_mb, 1),
            "rss_growth_mb": round(peak_mb - baseline_mb, 1)}


async def _parse_only(connector: Any, day: date) -> dict[str, Any]:
    started = time.perf_counter()
    lines = 0
    async for _line in connector.settlement_report(day):
        lines += 1
    elapsed_s = time.perf_counter() - started
    return {"lines": lines, "elapsed_s": round(elapsed_s, 1), "lines_per_s": round(lines / elapsed_s)}


async def _settle_synthetic(http: httpx.AsyncClient, sandbox_url: str, day: date, count: int) -> None:
    response = await http.post(f"{sandbox_url}/control/{PSP}/settlement", json={"synthetic": {
        "date": day.isoformat(), "count": count, "currency": "EUR",
        "amount": to_decimal_string(AMOUNT_MINOR, "EUR"), "fee": to_decimal_string(FEE_MINOR, "EUR"),
        "merchant_reference_prefix": PREFIX, "psp_reference_prefix": f"{PREFIX}ref_"}})
    response.raise_for_status()


def _start_sandbox(port: int) -> subprocess.Popen:
    env = {**os.environ, "PAYLOOP_SANDBOX_PSP_PORT": str(port), "PAYLOOP_SANDBOX_PSP_HOST": "127.0.0.1",
           "PAYLOOP_DEV_MODE": "true"}
    return subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "sandbox-psp"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait_ready(http: httpx.AsyncClient, url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if (await http.get(f"{url}/healthz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox PSP did not start within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
