"""`payloop bench ledger`: the real Ledger on PostgreSQL against pgbench's built-in tpcb-like script.

Both run in one scratch database created for the run (and dropped after it), with the same number of clients:

- ledger: `clients` tasks each posting transfers back to back for `seconds` through `Ledger.post_transfer`
  (the path deposit credits and payout holds take, on an engine set up as the worker's: no pre-ping): debit a PSP clearing account — one hot row, like tpcb-like's branch
  at scale 1 — and credit one of `players` player accounts, each transfer its own id.
- pgbench: `pgbench -i -s <scale>` then `pgbench -b tpcb-like -c <clients> -j <clients> -T <seconds>`
  (per transaction: three UPDATEs, a SELECT and an INSERT; at scale 1 every transaction updates the one branch).
- hot player: `hot_debits` concurrent debits of one player (funded for all of them), as bets of one player
  arriving together: wall time, latency percentiles, how many succeeded.

With `profile`, the ledger part runs under pyinstrument and its text report is written next to the JSON.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from pyinstrument import Profiler
from sqlalchemy import text
from sqlalchemy.engine import make_url

from entrypoints.bench.stats import summary_ms
from entrypoints.migrate import upgrade
from ledger import (
    InsufficientFunds,
    Ledger,
    TransferRequest,
    house_account,
    player_account,
    psp_clearing_account,
)
from payloop.db import create_engine


@dataclass
class LedgerBenchOptions:
    database_url: str  # postgresql+asyncpg://…; the scratch database is created next to this one
    clients: int = 8
    seconds: float = 10.0
    players: int = 1000
    pgbench_scale: int = 1
    hot_debits: int = 100
    profile: bool = False
    out: Path | None = None


def pgbench_path() -> str:
    for candidate in (shutil.which("pgbench"), "/usr/bin/pgbench"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("pgbench is missing (Debian: apt-get install postgresql-client)")


async def run_ledger_bench(options: LedgerBenchOptions) -> dict[str, Any]:
    url = make_url(options.database_url)
    if url.get_backend_name() != "postgresql":
        raise RuntimeError("the ledger micro-benchmark needs PostgreSQL (--database-url postgresql+asyncpg://…)")
    scratch = f"payloop_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(options.database_url, pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{scratch}"'))
    scratch_url = url.set(database=scratch).render_as_string(hide_password=False)
    try:
        await upgrade(scratch_url)
        ledger_result = await _ledger_throughput(scratch_url, options)
        hot = await _hot_player(scratch_url, options)
        pgbench = _pgbench(scratch_url, options)
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        await admin.dispose()
    ratio = ledger_result["tps"] / pgbench["tps"] if pgbench.get("tps") else None
    return {
        "database": url.render_as_string(hide_password=True).replace(f"/{url.database}", "/<scratch>"),
        "scratch_database": scratch,
        "clients": options.clients,
        "seconds": options.seconds,
        "ledger": ledger_result,
        "pgbench": pgbench,
        "ledger_vs_pgbench": round(ratio, 3) if ratio is not None else None,
        "hot_player": hot,
    }


async def _ledger_throughput(url: str, options: LedgerBenchOptions) -> dict[str, Any]:
    engine = create_engine(url, pool_size=options.clients, pre_ping=False)
    ledger = Ledger(engine)
    run_id = uuid.uuid4().hex[:8]
    clearing = psp_clearing_account("bench", "EUR")
    latencies: list[float] = []
    errors: list[str] = []
    # Warm the pool and create the accounts first, so the timed part measures transfers, not connects.
    await asyncio.gather(*(ledger.post_transfer(TransferRequest(
        f"bench:{run_id}:warm:{p}", clearing, player_account(f"bench-{run_id}-{p}", "EUR"), 100, "EUR", "deposit",
        f"warm-{p}")) for p in range(min(options.players, options.clients * 4))))

    async def client(index: int, deadline: float) -> None:
        n = 0
        while time.perf_counter() < deadline:
            player = player_account(f"bench-{run_id}-{(index * 7919 + n) % options.players}", "EUR")
            started = time.perf_counter()
            try:
                await ledger.post_transfer(TransferRequest(
                    f"bench:{run_id}:{index}:{n}", clearing, player, 100, "EUR", "deposit", f"bench-{index}-{n}"))
                latencies.append(time.perf_counter() - started)
            except Exception as err:  # noqa: BLE001 - counted and shown, never hidden
                errors.append(f"{type(err).__name__}: {err}"[:200])
            n += 1

    profiler = _start_profiler() if options.profile else None
    cpu_before = psutil.Process().cpu_times()
    started = time.perf_counter()
    deadline = started + options.seconds
    await asyncio.gather(*(client(i, deadline) for i in range(options.clients)))
    elapsed = time.perf_counter() - started
    cpu_after = psutil.Process().cpu_times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    profile_path = _stop_profiler(profiler, options.out) if profiler else None
    await engine.dispose()
    return {
        "transfers": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "elapsed_s": round(elapsed, 3),
        "tps": round(len(latencies) / elapsed, 1),
        "latency": summary_ms(latencies),
        # Share of one core this (single-threaded, asyncio) client process used: near 1.0 means Python is the
        # bottleneck, and every row lock is held for as long as the event loop takes to come back to its owner.
        "client_cpu_share": round(cpu / elapsed, 3),
        "cpu_ms_per_transfer": round(cpu * 1000 / len(latencies), 3) if latencies else None,
        "workload": "post_transfer psp:bench:EUR → one of N player accounts (one hot clearing row)",
        "profile": str(profile_path) if profile_path else None,
    }


async def _hot_player(url: str, options: LedgerBenchOptions) -> dict[str, Any]:
    """`hot_debits` concurrent debits of one player funded for all of them: every one must succeed."""
    engine = create_engine(url, pool_size=min(options.hot_debits, 40), pre_ping=False)
    ledger = Ledger(engine)
    run_id = uuid.uuid4().hex[:8]
    player = player_account(f"hot-{run_id}", "EUR")
    amount = 100
    await ledger.post_transfer(TransferRequest(
        f"hot:{run_id}:fund", psp_clearing_account("bench", "EUR"), player, amount * options.hot_debits, "EUR",
        "deposit", f"hot-{run_id}"))
    house = house_account("games", "EUR")
    latencies: list[float] = []
    refused = 0

    async def debit(n: int) -> None:
        nonlocal refused
        started = time.perf_counter()
        try:
            await ledger.post_transfer(TransferRequest(f"hot:{run_id}:bet:{n}", player, house, amount, "EUR", "bet",
                                                       f"hot-{run_id}-{n}"))
            latencies.append(time.perf_counter() - started)
        except InsufficientFunds:
            refused += 1

    started = time.perf_counter()
    await asyncio.gather(*(debit(n) for n in range(options.hot_debits)))
    elapsed = time.perf_counter() - started
    balance = await ledger.account_balance(player)
    await engine.dispose()
    return {
        "debits": options.hot_debits,
        "succeeded": len(latencies),
        "refused": refused,
        "final_available_minor": balance.available if balance else None,
        "elapsed_s": round(elapsed, 3),
        "tps": round(len(latencies) / elapsed, 1) if elapsed else None,
        "latency": summary_ms(latencies),
        "pool_size": min(options.hot_debits, 40),
    }


_TPS_RE = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)
_LATENCY_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)


def _pgbench(url: str, options: LedgerBenchOptions) -> dict[str, Any]:
    u = make_url(url)
    env = os.environ | ({"PGPASSWORD": u.password} if u.password else {})
    conn = ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]
    binary = pgbench_path()
    init = subprocess.run([binary, "-i", "-q", "-s", str(options.pgbench_scale), *conn, u.database or ""],
                          check=False, capture_output=True, text=True, env=env)
    if init.returncode != 0:
        return {"error": f"pgbench -i failed: {init.stderr.strip()[-500:]}"}
    argv = [binary, "-b", "tpcb-like", "-c", str(options.clients), "-j", str(options.clients),
            "-T", str(max(1, round(options.seconds))), "-n", *conn, u.database or ""]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": f"pgbench failed: {result.stderr.strip()[-500:]}"}
    tps = _TPS_RE.search(result.stdout)
    latency = _LATENCY_RE.search(result.stdout)
    return {
        "tps": float(tps.group(1)) if tps else None,
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "scale": options.pgbench_scale,
        "command": " ".join(argv[:-1] + ["<scratch>"]),
        "version": subprocess.run([binary, "--version"], check=False, capture_output=True, text=True).stdout.strip(),
    }


def _start_profiler() -> Profiler:
    profiler = Profiler(async_mode="disabled", interval=0.001)
    profiler.start()
    return profiler


def _stop_profiler(profiler: Profiler, out: Path | None) -> Path | None:
    profiler.stop()
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ledger-profile.txt"
    path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    (out / "ledger-profile.html").write_text(profiler.output_html())
    return path
