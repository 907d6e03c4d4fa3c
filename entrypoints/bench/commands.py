"""`payloop bench`, `payloop bench ledger`, `payloop bench probe`, `payloop bench ops-list` and `payloop bench recon`
once their arguments are parsed (cli.py) and the bench extra is there."""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from entrypoints.bench import probe
from entrypoints.bench.ledger_bench import LedgerBenchOptions, run_ledger_bench
from entrypoints.bench.model import BenchOptions
from entrypoints.bench.ops_list_bench import OpsListBenchOptions, run_ops_list_bench
from entrypoints.bench.recon_bench import ReconBenchOptions, run_recon_bench
from entrypoints.bench.run import run_bench


def run(args: argparse.Namespace) -> int:
    if args.bench_command == "ledger":
        return _ledger(args)
    if args.bench_command == "ops-list":
        return _ops_list(args)
    if args.bench_command == "recon":
        return _recon(args)
    if args.bench_command == "probe":
        shapes = tuple(s.strip() for s in args.shapes.split(","))
        return probe.main(args.out, shapes, args.runs)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return run_bench(BenchOptions(
        deposits=args.deposits, payouts=args.payouts, rounds=args.rounds, concurrency=args.concurrency,
        low_load=args.low_load, half_load=args.half_load, rate=args.rate, methods=methods, skeleton=args.skeleton,
        skeleton_shape=args.skeleton_shape, skeleton_signal_delay=args.skeleton_signal_delay, api_url=args.api_url,
        api_key=args.api_key, temporal_address=args.temporal_address, namespace=args.namespace,
        database_url=args.database_url, out=args.out, progress=args.progress, timeout=args.timeout,
        hold=args.hold, ledger=args.ledger,
    ))


def _ledger(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("PAYLOOP_DATABASE_URL") or os.environ.get("PAYLOOP_TEST_DATABASE_URL")
    if not url or not url.startswith("postgresql"):
        print("payloop bench ledger needs PostgreSQL: --database-url postgresql+asyncpg://user@host/db")
        return 2
    result = asyncio.run(run_ledger_bench(LedgerBenchOptions(
        url, clients=args.clients, seconds=args.seconds, pgbench_scale=args.pgbench_scale,
        hot_debits=args.hot_debits, profile=args.profile, out=args.out)))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "ledger.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    ledger, pgbench, hot = result["ledger"], result["pgbench"], result["hot_player"]
    print(f"ledger   {ledger['tps']:>8} transfers/s  p50 {ledger['latency']['p50_ms']} ms  "
          f"(client CPU {ledger['client_cpu_share']:.0%} of a core, {ledger['cpu_ms_per_transfer']} ms/transfer)")
    print(f"pgbench  {pgbench.get('tps')} tps (tpcb-like, scale {args.pgbench_scale}, {args.clients} clients)"
          + (f"  ERROR {pgbench['error']}" if "error" in pgbench else ""))
    print(f"ratio    {result['ledger_vs_pgbench']} (target ≥ 0.5)")
    print(f"hot player: {hot['succeeded']}/{hot['debits']} debits in {hot['elapsed_s']} s "
          f"({hot['tps']}/s, p50 {hot['latency']['p50_ms']} ms, p99 {hot['latency']['p99_ms']} ms)")
    if ledger.get("profile"):
        print(f"profile: {ledger['profile']}")
    print(f"written: {path}")
    return 0


def _ops_list(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("PAYLOOP_TEST_DATABASE_URL")
    result = asyncio.run(run_ops_list_bench(OpsListBenchOptions(
        url if url and url.startswith("postgresql") else None, payments=args.payments, runs=args.runs,
        deep=args.deep)))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "ops-list.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['payments']} payments; list_payments(limit=50), p50 / p95 ms over {result['runs']} runs")
    for backend in ("sqlite", "postgresql"):
        if backend not in result:
            continue
        print(f"{backend} (filled in {result[backend]['fill_s']} s)")
        for name, case in result[backend]["cases"].items():
            deep = case["deep_page"]
            print(f"  {name:<36} first {case['first_page']['p50_ms']:>7} / {case['first_page']['p95_ms']:>7}   "
                  + (f"deep {deep['p50_ms']:>7} / {deep['p95_ms']:>7}" if deep else "deep  (fewer rows)"))
    print(f"every p95 within {result['target_p95_ms']} ms: {result['all_within_target']}")
    print(f"written: {path}")
    return 0 if result["all_within_target"] else 1


def _recon(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("PAYLOOP_DATABASE_URL") or os.environ.get("PAYLOOP_TEST_DATABASE_URL")
    if not url or not url.startswith("postgresql"):
        print("payloop bench recon needs PostgreSQL: --database-url postgresql+asyncpg://user@host/db")
        return 2
    result = asyncio.run(run_recon_bench(ReconBenchOptions(url, lines=args.lines)))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "recon.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    run, again, parse = result["reconcile"], result["rerun_same_day"], result["stream_and_parse_only"]
    print(f"{result['lines']} lines at {result['psp']} (seeded in {result['seed_s']} s)")
    print(f"reconcile    {run['elapsed_s']:>6} s  {run['lines_per_s']:>7} lines/s  RSS +{run['rss_growth_mb']} MB "
          f"(peak {run['rss_peak_mb']} MB)  {run['counts']}")
    print(f"same day at a later moment {again['elapsed_s']:>6} s  RSS +{again['rss_growth_mb']} MB  {again['counts']}")
    print(f"parse only   {parse['elapsed_s']:>6} s  {parse['lines_per_s']:>7} lines/s  "
          f"(reconcile at {result['vs_parse_only']} of it)")
    print(f"settlements posted: {result['settlements_posted']}, ledger transfers {result['ledger_transfers']}; within ≤ {result['target']['seconds']} s and "
          f"≤ {result['target']['rss_growth_mb']} MB: {result['within_target']}")
    print(f"written: {path}")
    return 0
