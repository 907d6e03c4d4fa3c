"""The benchmark's figures: JSON (all figures, machine, parameters), a PNG of latency percentiles over time, and a
console summary with each target met or not."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from matplotlib.figure import Figure

from entrypoints.bench.analysis import transfers_per_second
from entrypoints.bench.model import BenchRun, options_dict
from entrypoints.bench.stats import percentile, ratio, summary_ms
from payloop.temporal import temporal_cli_path

SCHEMA_VERSION = 1
# The targets. Never asserted in tests: a benchmark reports, it does not fail a build.
TARGETS = {
    "deposit_throughput_vs_skeleton": 0.8,  # at least
    "init_p50_low_load_ms": 40.0,  # at most
    "webhook_to_credited_p95_half_load_ms": 100.0,  # at most
    "ledger_vs_pgbench": 0.5,  # at least
    "worker_rss_mb_at_1000_in_flight": 300.0,  # at most
}


# ---- machine ---------------------------------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    cores = os.cpu_count() or 1
    load = load_average()
    return {
        "cpu_model": _cpu_model(),
        "cores": cores,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "temporalio": _version("temporalio"),
        "temporal_cli": _temporal_cli_version(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_average_start": load,
        # Another workload on the machine makes every figure noisy: such a run's figures are preliminary.
        "busy": load[0] > 0.5 * cores,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _temporal_cli_version() -> str | None:
    try:
        return subprocess.run([temporal_cli_path(), "--version"], check=False, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# ---- figures ---------------------------------------------------------------------------------------------------


def build(run: BenchRun, machine: dict[str, Any], ledger_bench: dict[str, Any] | None) -> dict[str, Any]:
    driver = run.driver
    deposits = _deposit_figures(run)
    skeleton = _skeleton_figures(run)
    payouts = _payout_figures(run)
    rounds = _round_figures(run)
    ledger = _ledger_figures(run)
    ratios = _ratios(deposits, skeleton)
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "started_at": datetime.fromtimestamp(run.started, UTC).isoformat(),
        "duration_s": round(run.finished - run.started, 2),
        "parameters": options_dict(run.options),
        "machine": machine,
        "preliminary": bool(machine.get("busy")),
        "stack": {
            "kind": "embedded" if run.target.embedded else "url",
            "api_url": run.target.api_url,
            "temporal_address": run.target.temporal_address,
            "namespace": run.target.namespace,
            "database": run.target.database,
        },
        "phases": [_phase(p) for p in driver.phases + run.skeleton_phases],
        "deposits": deposits,
        "payouts": payouts,
        "rounds": rounds,
        "ledger_transfers": ledger,
        "memory": run.memory,
        "skeleton": skeleton,
        "ratios": ratios,
        "ledger_bench": ledger_bench,
        "notes": run.notes,
    }
    result["targets"] = _targets(result)
    return result


def _phase(p: Any) -> dict[str, Any]:
    return {"name": p.name, "kind": p.kind, "count": p.count, "completed": p.completed,
            "concurrency": p.concurrency, "rate_per_s": round(p.rate, 2) if p.rate else None,
            "elapsed_s": round(p.elapsed, 3), "throughput_per_s": round(p.throughput, 2),
            "max_in_flight": getattr(p, "max_in_flight", None)}


def _deposit_figures(run: BenchRun) -> dict[str, Any]:
    by_phase: dict[str, Any] = {}
    phases = {p.name: p for p in run.driver.phases if p.kind == "deposits"}
    for name, phase in phases.items():
        records = [d for d in run.driver.deposits if d.phase == name]
        by_phase[name] = _deposit_group(run, records) | {
            "throughput_per_s": round(phase.throughput, 2), "elapsed_s": round(phase.elapsed, 3),
            "concurrency": phase.concurrency, "rate_per_s": round(phase.rate, 2) if phase.rate else None,
            "max_in_flight": phase.max_in_flight,
            "by_method": {m: _deposit_group(run, [d for d in records if d.method == m], brief=True)
                          for m in dict.fromkeys(d.method for d in records)},
        }
    reported = [d for d in run.driver.deposits if d.phase != "warmup"]
    events = [run.histories[d.workflow_id].events for d in reported if d.workflow_id in run.histories]
    events_by_method: dict[str, list[int]] = defaultdict(list)
    for d in reported:
        if d.workflow_id in run.histories:
            events_by_method[d.method].append(run.histories[d.workflow_id].events)
    return {
        "count": len(reported),
        "credited": sum(d.final_status == "credited" for d in reported),
        "final_statuses": dict(Counter(d.final_status or "error" for d in reported)),
        "webhook_time_source": run.webhook_source,
        "history_events": _count_summary(events) | {
            "by_method": {m: _count_summary(v) for m, v in events_by_method.items()}},
        "shape": run.shape,
        "by_phase": by_phase,
        "first_errors": [d.error for d in reported if d.error][:5],
    }


def _deposit_group(run: BenchRun, records: list[Any], brief: bool = False) -> dict[str, Any]:
    init = [d.init_latency for d in records if d.init_latency is not None and d.http_status == 201]
    webhook, server_only, segments, init_wf = _webhook_latencies(run, records)
    figures = {
        "count": len(records),
        "credited": sum(d.final_status == "credited" for d in records),
        "errors": sum(d.error is not None for d in records),
        "init_timeouts": sum(d.init_timed_out for d in records),
        "init_latency": summary_ms(init),
        "webhook_to_credited": summary_ms(webhook),
    }
    if brief:
        return figures
    return figures | {
        "webhook_to_credited_server_clock": summary_ms(server_only),
        "webhook_to_credited_split_p50_ms": {k: summary_ms(v)["p50_ms"] for k, v in segments.items()},
        "init_workflow_part": summary_ms(init_wf),
        "init_split_p50_ms": {k: summary_ms(v)["p50_ms"] for k, v in _init_split(run, records).items()},
    }


def _init_split(run: BenchRun, records: list[Any]) -> dict[str, list[float]]:
    """Where init's time goes, at the Temporal server: first task dispatched, the steps before the PSP call
    (local activities run inside workflow tasks), the PSP call's queue wait and duration, then the answer."""
    split: dict[str, list[float]] = defaultdict(list)
    for d in records:
        f = run.histories.get(d.workflow_id or "")
        if f is None or not (f.started and f.first_task and f.update_completed):
            continue
        scheduled, started, done = f.init_activity
        split["first_task_dispatch"].append(f.first_task - f.started)
        if scheduled and started and done:
            split["steps_before_psp_call"].append(scheduled - f.first_task)
            split["psp_call_queue_wait"].append(started - scheduled)
            split["psp_call"].append(done - started)
            split["psp_answer_to_update_completed"].append(f.update_completed - done)
        if d.init_latency is not None and d.http_status == 201:
            split["api_and_client_overhead"].append(d.init_latency - (f.update_completed - f.started))
    return split


def _webhook_latencies(run: BenchRun, records: list[Any]) -> tuple[list[float], list[float], dict, list[float]]:
    webhook: list[float] = []
    server_only: list[float] = []
    init_wf: list[float] = []
    segments: dict[str, list[float]] = defaultdict(list)
    for d in records:
        facts = run.histories.get(d.workflow_id or "")
        if facts is None:
            continue
        if facts.started and facts.update_completed:
            init_wf.append(facts.update_completed - facts.started)
        if d.final_status != "credited" or not facts.closed or not facts.last_signal:
            continue
        received = run.webhook_received.get(d.payment_id or "")
        start = received if received is not None else facts.last_signal
        webhook.append(facts.closed - start)
        server_only.append(facts.closed - facts.last_signal)
        if received is not None:
            segments["api_inbox"].append(facts.last_signal - received)
        if facts.task_after_signal:
            segments["task_dispatch"].append(facts.task_after_signal - facts.last_signal)
            segments["task_to_close"].append(facts.closed - facts.task_after_signal)
        if facts.credit_scheduled and facts.credit_started and facts.credit_completed and facts.task_after_signal:
            segments["to_schedule"].append(facts.credit_scheduled - facts.task_after_signal)
            segments["queue_wait"].append(facts.credit_started - facts.credit_scheduled)
            segments["credit"].append(facts.credit_completed - facts.credit_started)
            segments["to_close"].append(facts.closed - facts.credit_completed)
    return webhook, server_only, segments, init_wf


def _count_summary(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "mean": None, "p50": None, "max": None}
    return {"count": len(values), "mean": round(sum(values) / len(values), 1), "p50": percentile(values, 50),
            "max": max(values)}


def _payout_figures(run: BenchRun) -> dict[str, Any]:
    records = run.driver.payouts
    phase = next((p for p in run.driver.phases if p.kind == "payouts"), None)
    events = [run.histories[p.workflow_id].events for p in records if p.workflow_id in run.histories]
    completion = [p.completed - p.started for p in records if p.completed]
    return {
        "count": len(records),
        "paid": sum(p.final_status == "paid" for p in records),
        "final_statuses": dict(Counter(p.final_status or "error" for p in records)),
        "throughput_per_s": round(phase.throughput, 2) if phase else None,
        "init_latency": summary_ms([p.init_latency for p in records if p.init_latency and p.http_status == 201]),
        "init_to_paid": summary_ms(completion),
        "history_events": _count_summary(events),
        "first_errors": [p.error for p in records if p.error][:5],
    }


def _round_figures(run: BenchRun) -> dict[str, Any]:
    records = run.driver.rounds
    phase = next((p for p in run.driver.phases if p.kind == "rounds"), None)
    return {
        "count": len(records),
        "completed": sum(r.completed is not None for r in records),
        "rounds_per_s": round(phase.throughput, 2) if phase else None,
        "bet_latency": summary_ms([r.bet_latency for r in records if r.bet_latency is not None]),
        "win_latency": summary_ms([r.win_latency for r in records if r.win_latency is not None]),
        "first_errors": [r.error for r in records if r.error][:5],
    }


def _ledger_figures(run: BenchRun) -> dict[str, Any]:
    activity = run.ledger
    if activity is None:
        return {"measured": False}
    per_phase = {p.name: transfers_per_second(activity.transfer_times, p.started, p.finished)
                 for p in run.driver.phases}
    busy = sum(p.elapsed for p in run.driver.phases)
    total = sum(v["transfers"] for v in per_phase.values())
    return {
        "measured": True,
        "source": "GET /v1/wallet/{player}/transactions of every player of the run (created_at)",
        "transfers": len(activity.transfer_times),
        "per_second_over_traffic": round(total / busy, 1) if busy else None,
        "per_phase": per_phase,
        "players_read": activity.players_read,
        "players_truncated_at_200": activity.truncated_players,
    }


def _skeleton_figures(run: BenchRun) -> dict[str, Any]:
    if not run.skeleton_runs:
        return {"run": False}
    out: dict[str, Any] = {"run": True, "shape": run.shape, "shape_source": run.shape_source,
                           "signal_delay_s": run.options.skeleton_signal_delay, "by_phase": {}}
    for name, result in run.skeleton_runs.items():
        facts = [run.skeleton_histories[s.workflow_id] for s in result.samples
                 if s.workflow_id in run.skeleton_histories]
        out["by_phase"][name] = {
            "count": len(result.samples) + len(result.errors),
            "completed": len(result.samples),
            "errors": len(result.errors),
            "first_errors": result.errors[:3],
            "throughput_per_s": round(result.throughput, 2),
            "elapsed_s": round(result.finished - result.started, 3),
            "init_latency": summary_ms([s.init_latency for s in result.samples]),
            "signal_to_done_client": summary_ms([s.signal_to_done for s in result.samples]),
            "signal_to_closed_server_clock": summary_ms(
                [f.closed - f.last_signal for f in facts if f.closed and f.last_signal]),
            "history_events": _count_summary([f.events for f in facts]),
        }
    return out


def _ratios(deposits: dict[str, Any], skeleton: dict[str, Any]) -> dict[str, Any]:
    if not skeleton.get("run"):
        return {}
    ours_max = deposits["by_phase"].get("max", {})
    ours_low = deposits["by_phase"].get("low-load", {})
    skel_max = skeleton["by_phase"].get("skeleton-max", {})
    skel_low = skeleton["by_phase"].get("skeleton-low", {})

    def get(d: dict, *path: str) -> Any:
        for key in path:
            d = (d or {}).get(key)  # type: ignore[assignment]
        return d

    return {
        "throughput_vs_skeleton": ratio(get(ours_max, "throughput_per_s"), get(skel_max, "throughput_per_s")),
        "init_p50_low_load_vs_skeleton": ratio(get(ours_low, "init_latency", "p50_ms"),
                                               get(skel_low, "init_latency", "p50_ms")),
        "init_p95_max_vs_skeleton": ratio(get(ours_max, "init_latency", "p95_ms"),
                                          get(skel_max, "init_latency", "p95_ms")),
        # Same clock and same span on both sides: signal event → workflow closed, at the Temporal server.
        "webhook_to_credited_p50_vs_skeleton": ratio(
            get(ours_max, "webhook_to_credited_server_clock", "p50_ms"),
            get(skel_max, "signal_to_closed_server_clock", "p50_ms")),
        "webhook_to_credited_p95_vs_skeleton": ratio(
            get(ours_max, "webhook_to_credited_server_clock", "p95_ms"),
            get(skel_max, "signal_to_closed_server_clock", "p95_ms")),
        "history_events_vs_skeleton": ratio(deposits["history_events"].get("p50"),
                                            get(skel_max, "history_events", "p50")),
    }


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    deposits = result["deposits"]["by_phase"]
    ratios = result["ratios"]
    memory = result["memory"]
    ledger = result.get("ledger_bench") or {}
    rows = []

    def add(name: str, value: Any, at_least: bool, note: str = "") -> None:
        limit = TARGETS[name]
        met = None if value is None else (value >= limit if at_least else value <= limit)
        rows.append({"target": name, "limit": limit, "comparison": ">=" if at_least else "<=", "value": value,
                     "met": met, "note": note})

    add("deposit_throughput_vs_skeleton", ratios.get("throughput_vs_skeleton"), True,
        "completed deposits/s at --concurrency over the skeleton's at the same concurrency")
    add("init_p50_low_load_ms", (deposits.get("low-load", {}).get("init_latency") or {}).get("p50_ms"), False,
        "POST /v1/payments/init → answer, one deposit at a time")
    add("webhook_to_credited_p95_half_load_ms",
        (deposits.get("half", {}).get("webhook_to_credited") or {}).get("p95_ms"), False,
        "open loop at half the max phase's throughput")
    add("ledger_vs_pgbench", ledger.get("ledger_vs_pgbench"), True,
        "payloop bench ledger (or --ledger)" if ledger else "ledger micro-benchmark not run")
    in_flight = memory.get("max_in_flight") or 0
    worker_busy = (memory.get("at_max_in_flight_mb") or {}).get("worker")
    worker_peak = (memory.get("peak_mb") or {}).get("worker")
    note = (f"worker RSS while the most payments ({in_flight}) were in flight; its peak over the run: "
            f"{worker_peak} MB")
    add("worker_rss_mb_at_1000_in_flight", worker_busy, False, note)
    if rows[-1]["met"] and in_flight < 1000:
        rows[-1]["met"] = None
        rows[-1]["note"] += " (fewer than 1,000: run with --concurrency 1000 to decide)"
    return rows


# ---- files -----------------------------------------------------------------------------------------------------


def write(result: dict[str, Any], run: BenchRun, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(run.started))
    json_path = out / f"bench-{stamp}.json"
    png_path = out / f"bench-{stamp}.png"
    result["files"] = {"json": str(json_path), "png": str(png_path)}
    plot(run, png_path, preliminary=bool(result.get("preliminary")))
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    for name, path in (("latest.json", json_path), ("latest.png", png_path)):
        link = out / name
        link.unlink(missing_ok=True)
        link.symlink_to(path.name)
    return {"json": json_path, "png": png_path}


def plot(run: BenchRun, path: Path, *, preliminary: bool = False) -> None:
    """Init and webhook → credited latency percentiles (p50/p95/p99) per time window over the run, with the
    skeleton's for comparison, and completions/s plus worker and API RSS underneath."""
    t0 = run.started
    span = max((run.finished or time.time()) - t0, 1.0)
    window = max(1.0, span / 80)
    # A Figure of its own, not pyplot's: no global state, no GUI backend; savefig renders the PNG with Agg.
    fig = Figure(figsize=(12, 11))
    axes = fig.subplots(3, 1, sharex=True)

    ours_init = [(d.started - t0, d.init_latency) for d in run.driver.deposits if d.init_latency is not None]
    skel_init = [(s.started - t0, s.init_latency) for r in run.skeleton_runs.values() for s in r.samples]
    ours_hook = []
    for d in run.driver.deposits:
        facts = run.histories.get(d.workflow_id or "")
        if facts and facts.closed and facts.last_signal and d.final_status == "credited":
            start = run.webhook_received.get(d.payment_id or "", facts.last_signal)
            ours_hook.append((facts.closed - t0, facts.closed - start))
    skel_hook = [(s.completed - t0, s.signal_to_done) for r in run.skeleton_runs.values() for s in r.samples]

    for ax, ours, skel, title in ((axes[0], ours_init, skel_init, "init latency (POST /v1/payments/init → answer)"),
                                  (axes[1], ours_hook, skel_hook, "webhook received → credited")):
        _percentile_lines(ax, ours, window, "deposits", ("tab:blue", "tab:orange", "tab:red"))
        _percentile_lines(ax, skel, window, "skeleton", ("tab:cyan", "gold", "salmon"), dashed=True)
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="upper right")

    ax = axes[2]
    completions = [d.completed - t0 for d in run.driver.deposits if d.completed]
    completions += [p.completed - t0 for p in run.driver.payouts if p.completed]
    skel_done = [s.completed - t0 for r in run.skeleton_runs.values() for s in r.samples]
    for values, label, color in ((completions, "our workflows closed/s", "tab:blue"),
                                 (skel_done, "skeleton closed/s", "tab:cyan")):
        if values:
            xs, ys = _rate(values, window)
            ax.plot(xs, ys, color=color, label=label)
    ax.set_ylabel("workflows/s")
    ax.set_xlabel("seconds since the start of the run")
    ax.grid(True, alpha=0.3)
    if run.rss_samples:
        twin = ax.twinx()
        for name, color in (("worker", "tab:green"), ("api", "tab:purple"), ("temporal", "tab:gray")):
            twin.plot([s["t"] - t0 for s in run.rss_samples], [s.get(name, 0) for s in run.rss_samples],
                      color=color, alpha=0.6, linewidth=1, label=f"{name} RSS (MB)")
        twin.set_ylabel("RSS MB")
        twin.legend(fontsize=7, loc="upper left")
    ax.legend(fontsize=7, loc="upper right")
    for phase in run.driver.phases + run.skeleton_phases:
        for a in axes:
            a.axvspan(phase.started - t0, phase.finished - t0, alpha=0.06,
                      color="tab:cyan" if phase.kind == "skeleton" else "tab:blue")
        axes[0].annotate(phase.name, (phase.started - t0, 1), xycoords=("data", "axes fraction"), fontsize=7,
                         rotation=90, va="top")
    fig.suptitle(f"payloop bench — {time.strftime('%Y-%m-%d %H:%M', time.localtime(run.started))}"
                 + ("  (PRELIMINARY: busy machine)" if preliminary else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _percentile_lines(ax: Any, points: list[tuple[float, float]], window: float, label: str,
                      colors: tuple[str, str, str], dashed: bool = False) -> None:
    if not points:
        return
    buckets: dict[int, list[float]] = defaultdict(list)
    for x, y in points:
        buckets[int(x // window)].append(y * 1000)
    keys = sorted(buckets)
    xs = [(k + 0.5) * window for k in keys]
    for pct, color in zip((50, 95, 99), colors, strict=True):
        ax.plot(xs, [percentile(buckets[k], pct) for k in keys], color=color, marker=".", markersize=3,
                linestyle="--" if dashed else "-", label=f"{label} p{pct}")


def _rate(times: list[float], window: float) -> tuple[list[float], list[float]]:
    buckets = Counter(int(t // window) for t in times)
    keys = range(min(buckets), max(buckets) + 1)
    return [(k + 0.5) * window for k in keys], [buckets.get(k, 0) / window for k in keys]


# ---- console ---------------------------------------------------------------------------------------------------


def console_summary(result: dict[str, Any]) -> str:
    lines = []
    m = result["machine"]
    lines.append(f"\npayloop bench — {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB; "
                 f"load {m['load_average_start']} → {m.get('load_average_end')}")
    if result["preliminary"]:
        lines.append("PRELIMINARY: the machine was busy (load average above half the cores): figures are noisy")
    lines.append(f"stack: {result['stack']['kind']} ({result['stack']['database']})")
    dep = result["deposits"]
    lines.append(f"\ndeposits: {dep['credited']}/{dep['count']} credited; history events per deposit p50 "
                 f"{dep['history_events']['p50']} (shape {dep['shape'] or '?'})")
    header = f"  {'phase':10} {'n':>5} {'conc':>5} {'wf/s':>7}  {'init p50/p95/p99 ms':>22}  " \
             f"{'webhook→credited p50/p95/p99 ms':>32}"
    lines.append(header)
    for name, f in dep["by_phase"].items():
        lines.append(f"  {name:10} {f['count']:>5} {f['concurrency']:>5} {f['throughput_per_s']:>7.1f}  "
                     f"{_pcts(f['init_latency']):>22}  {_pcts(f['webhook_to_credited']):>32}")
    low_split = dep["by_phase"].get("low-load", {}).get("init_split_p50_ms")
    if low_split:
        lines.append("  init split (p50 ms, low-load): " + ", ".join(f"{k} {v}" for k, v in low_split.items()))
    split = dep["by_phase"].get("max", {}).get("webhook_to_credited_split_p50_ms")
    if split:
        lines.append("  webhook→credited split (p50 ms, max phase): "
                     + ", ".join(f"{k} {v}" for k, v in split.items()))
    sk = result["skeleton"]
    if sk.get("run"):
        lines.append(f"\nskeleton ({sk['shape']}, signal after {sk['signal_delay_s']} s):")
        for name, f in sk["by_phase"].items():
            lines.append(f"  {name:14} {f['completed']:>5} done {f['throughput_per_s']:>7.1f} wf/s  init "
                         f"{_pcts(f['init_latency'])} ms  signal→closed {_pcts(f['signal_to_closed_server_clock'])}"
                         f" ms  events p50 {f['history_events']['p50']}")
        lines.append("  ratios: " + ", ".join(f"{k} {v}" for k, v in result["ratios"].items()))
    po, ro = result["payouts"], result["rounds"]
    lines.append(f"\npayouts: {po['paid']}/{po['count']} paid, {po['throughput_per_s']} /s, init "
                 f"{_pcts(po['init_latency'])} ms, init→paid {_pcts(po['init_to_paid'])} ms")
    lines.append(f"rounds: {ro['completed']}/{ro['count']} at {ro['rounds_per_s']} /s, bet {_pcts(ro['bet_latency'])}"
                 f" ms, win {_pcts(ro['win_latency'])} ms")
    led = result["ledger_transfers"]
    if led.get("measured"):
        lines.append(f"ledger transfers: {led['transfers']} ({led['per_second_over_traffic']}/s over the traffic "
                     "phases; " + ", ".join(f"{k} {v['per_second']}/s" for k, v in led["per_phase"].items()) + ")")
    mem = result["memory"]
    if mem.get("measured"):
        lines.append("peak RSS MB: " + ", ".join(f"{k} {v}" for k, v in mem["peak_mb"].items())
                     + f"; max in flight {mem['max_in_flight']}")
    else:
        lines.append(f"RSS: not measured ({mem.get('note', '')})")
    lb = result.get("ledger_bench")
    if lb and "ledger" in lb:
        lines.append(f"ledger bench: {lb['ledger']['tps']} transfers/s vs pgbench {lb['pgbench'].get('tps')} tps "
                     f"({lb['ledger_vs_pgbench']}×); hot player {lb['hot_player']['succeeded']}/"
                     f"{lb['hot_player']['debits']} in {lb['hot_player']['elapsed_s']} s")
    lines.append("\ntargets:")
    for t in result["targets"]:
        verdict = {True: "met", False: "NOT met", None: "undecided"}[t["met"]]
        lines.append(f"  {t['target']:36} {t['comparison']} {t['limit']:<6} value {t['value']}  → {verdict}"
                     + (f"  ({t['note']})" if t["note"] else ""))
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _pcts(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return f"{summary['p50_ms']:.0f}/{summary['p95_ms']:.0f}/{summary['p99_ms']:.0f}"
