"""`payloop bench`: a small smoke run against a real stack (Temporal dev server, worker, API and sandbox PSP over
HTTP, as the end-to-end tests build it) reached by URL, checking the report's shape and sanity, never timings;
plus the pure parts (shapes, percentiles, history facts)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.testing import WorkflowEnvironment

from entrypoints.bench import report
from entrypoints.bench.analysis import history_facts
from entrypoints.bench.cli import BENCH_EXTRA
from entrypoints.bench.model import BenchOptions
from entrypoints.bench.ops_list_bench import OpsListBenchOptions, run_ops_list_bench
from entrypoints.bench.patient_http import RetryAfterTransport
from entrypoints.bench.recon_bench import ReconBenchOptions, run_recon_bench
from entrypoints.bench.run import drive_target, finish
from entrypoints.bench.skeleton import Shape
from entrypoints.bench.stats import percentile, summary_ms
from entrypoints.bench.target import remote_target
from payloop.temporal import DEV_SERVER_DYNAMIC_CONFIG, dev_server_flags, temporal_cli_path
from tests.conftest import postgres_url
from tests.e2e.conftest import API_KEY, running_stack
from workers.bytecode import cache_workflow_bytecode
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES


def test_docker_compose_temporal_has_the_dev_servers_dynamic_config() -> None:
    compose = yaml.safe_load((Path(__file__).parent.parent / "docker-compose.yml").read_text())
    temporal = compose["services"]["temporal"]
    (config,) = temporal["configs"]
    assert temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"] == config["target"]
    values = yaml.safe_load(compose["configs"][config["source"]]["content"])
    assert {key: entries[0]["value"] for key, entries in values.items()} == DEV_SERVER_DYNAMIC_CONFIG


def test_workflow_bytecode_is_written_for_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "some_workflow.py"
    source.write_text("class SomeWorkflow:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("some_workflow")
    cache_workflow_bytecode([module.SomeWorkflow])
    assert Path(importlib.util.cache_from_source(str(source))).is_file()

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr("py_compile.compile", read_only)
    cache_workflow_bytecode([module.SomeWorkflow])  # a worker in a read-only tree still starts


def test_the_bench_extra_is_what_the_bench_imports_and_the_service_does_not_need() -> None:
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    extra = {requirement.split(">")[0].split("=")[0].split("<")[0].strip() for requirement in
             pyproject["optional-dependencies"]["bench"]}
    runtime = {requirement.split(">")[0].split("=")[0].split("<")[0].strip() for requirement in
               pyproject["dependencies"]}
    assert BENCH_EXTRA <= extra
    assert not BENCH_EXTRA & runtime


@pytest.mark.parametrize("missing", sorted(BENCH_EXTRA))
def test_payloop_bench_without_the_extra_says_which_extra_to_install(missing: str) -> None:
    """Without the bench extra, `payloop --help` works and `payloop bench` names the extra instead of a traceback."""
    script = (f"import sys; sys.modules[{missing!r}] = None  # as if it were not installed\n"
              "from entrypoints.cli import main\n"
              "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
              "sys.exit(main(['bench', '--no-skeleton']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "usage: payloop" in result.stdout
    assert f"payloop bench needs the bench extra ({missing} is not installed)" in result.stderr
    assert "pip install 'payloop[bench]'" in result.stderr and "Traceback" not in result.stderr


def test_shape_parsing() -> None:
    assert Shape.parse("aaa|a") == Shape("aaa", "a", signal=True)
    assert Shape.parse("lla|l") == Shape("lla", "l", signal=True)
    assert Shape.parse("aa") == Shape("aa", "", signal=False)
    assert str(Shape.parse("LLA|A")) == "lla|a"
    with pytest.raises(ValueError):
        Shape.parse("ax|a")


def test_percentiles() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([10.0], 99) == 10.0
    assert math.isnan(percentile([], 50))
    assert summary_ms([0.010, 0.020, 0.030])["p50_ms"] == 20.0
    assert summary_ms([])["count"] == 0


def _event(event_id: int, kind: EventType.ValueType, seconds: int, **attrs: object) -> HistoryEvent:
    event = HistoryEvent(event_id=event_id, event_type=kind)
    event.event_time.seconds = seconds
    for name, value in attrs.items():
        getattr(event, name).CopyFrom(value)  # type: ignore[arg-type]
    return event


def test_history_facts_read_the_shape_and_the_credit_timings() -> None:
    from temporalio.api.history.v1 import (
        ActivityTaskCompletedEventAttributes,
        ActivityTaskScheduledEventAttributes,
        ActivityTaskStartedEventAttributes,
        MarkerRecordedEventAttributes,
    )

    def scheduled(name: str) -> ActivityTaskScheduledEventAttributes:
        attrs = ActivityTaskScheduledEventAttributes()
        attrs.activity_type.name = name
        return attrs

    e = EventType
    events = [
        _event(1, e.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, 100),
        _event(2, e.EVENT_TYPE_MARKER_RECORDED, 101,
               marker_recorded_event_attributes=MarkerRecordedEventAttributes(marker_name="core_local_activity")),
        _event(3, e.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, 102, activity_task_scheduled_event_attributes=scheduled("x")),
        _event(4, e.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED, 103),
        _event(5, e.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, 104),
        _event(6, e.EVENT_TYPE_WORKFLOW_TASK_STARTED, 105),
        _event(7, e.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, 106,
               activity_task_scheduled_event_attributes=scheduled("credit_deposit")),
        _event(8, e.EVENT_TYPE_ACTIVITY_TASK_STARTED, 107,
               activity_task_started_event_attributes=ActivityTaskStartedEventAttributes(scheduled_event_id=7)),
        _event(9, e.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, 108,
               activity_task_completed_event_attributes=ActivityTaskCompletedEventAttributes(scheduled_event_id=7)),
        _event(10, e.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, 110),
    ]
    facts = history_facts("deposit-x", events, "credit_deposit")
    assert facts.shape == "la|a"
    assert facts.events == 10
    assert (facts.started, facts.update_completed, facts.last_signal) == (100, 103, 104)
    assert (facts.task_after_signal, facts.credit_scheduled, facts.credit_started) == (105, 106, 107)
    assert (facts.credit_completed, facts.closed) == (108, 110)
    assert facts.first_task == 105 and facts.init_activity == (102, None, None)


@pytest.fixture
async def bench_stack(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A stack of its own (SQLite ledger), reached by URL as `payloop bench --api-url` would reach one."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(), search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error", dev_server_extra_args=dev_server_flags(),
    )
    try:
        async with running_stack("sqlite", env.client, tmp_path, "payloop-bench-test") as stack:
            yield stack.settings.api_url, env.client.service_client.config.target_host
    finally:
        await env.shutdown()


async def test_bench_smoke_run_writes_sane_json_and_a_plot(bench_stack: tuple[str, str], tmp_path: Path) -> None:
    api_url, temporal_address = bench_stack
    out = tmp_path / "bench"
    options = BenchOptions(deposits=10, payouts=3, rounds=10, concurrency=5, low_load=2, hold=6, api_url=api_url,
                           api_key=API_KEY, temporal_address=temporal_address, out=out, progress=False, timeout=60)
    target = remote_target(api_url, API_KEY, temporal_address, "default")
    run = await drive_target(options, target)
    result, paths = finish(run, report.machine_info())

    data = json.loads(paths["json"].read_text())
    assert data == json.loads(json.dumps(result, default=str))
    assert paths["png"].stat().st_size > 10_000 and paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "latest.json").exists() and (out / "latest.png").exists()

    assert data["schema_version"] == 1 and data["stack"]["kind"] == "url"
    assert {"cpu_model", "cores", "memory_gib", "load_average_start", "load_average_end", "busy"} <= set(data["machine"])
    assert data["parameters"]["deposits"] == 10 and data["parameters"]["api_key"] == "***"

    deposits = data["deposits"]
    assert deposits["count"] == 2 + 10 + 5 + 6  # low-load, max, half, hold
    hold = deposits["by_phase"]["hold"]
    assert hold["credited"] == 6 and hold["max_in_flight"] == 6 and set(hold["by_method"]) == {"card"}
    assert deposits["credited"] == deposits["count"], deposits["first_errors"]
    for phase in ("low-load", "max", "half"):
        figures = deposits["by_phase"][phase]
        assert figures["throughput_per_s"] > 0
        assert 0 < figures["init_latency"]["p50_ms"] <= figures["init_latency"]["p99_ms"]
        assert figures["webhook_to_credited"]["count"] == figures["credited"]
        assert 0 < figures["webhook_to_credited"]["p50_ms"] <= figures["webhook_to_credited"]["p99_ms"]
        assert set(figures["by_method"]) == {"card", "ewallet", "bank_transfer", "crypto"} or phase == "low-load"
    assert deposits["webhook_time_source"] == "api_inbox_received_at"
    assert deposits["by_phase"]["max"]["webhook_to_credited_split_p50_ms"]["api_inbox"] >= 0
    assert deposits["by_phase"]["low-load"]["init_split_p50_ms"]["first_task_dispatch"] >= 0
    assert deposits["history_events"]["p50"] > 10
    assert "|" in deposits["shape"]

    assert data["payouts"]["paid"] == 3, data["payouts"]["first_errors"]
    assert data["payouts"]["history_events"]["count"] == 3
    assert data["rounds"]["completed"] == 10 and data["rounds"]["rounds_per_s"] > 0
    assert data["rounds"]["bet_latency"]["count"] == 10
    ledger = data["ledger_transfers"]
    # A credit per deposit (warm-up included), a bet and a win per round, a wager round and a hold per payout.
    assert ledger["transfers"] >= 4 + 23 + 2 * 10 + 3 * 3
    assert ledger["per_second_over_traffic"] > 0

    assert data["memory"]["measured"] is False and "not measured" in data["memory"]["note"]
    skeleton = data["skeleton"]
    assert skeleton["run"] and skeleton["shape"] == deposits["shape"]
    assert skeleton["by_phase"]["skeleton-max"]["completed"] == 10
    assert skeleton["by_phase"]["skeleton-max"]["signal_to_closed_server_clock"]["count"] == 10
    assert data["ratios"]["throughput_vs_skeleton"] > 0
    assert data["ratios"]["webhook_to_credited_p50_vs_skeleton"] > 0

    targets = {t["target"]: t for t in data["targets"]}
    assert set(targets) == set(report.TARGETS)
    assert targets["ledger_vs_pgbench"]["met"] is None  # not run here
    assert targets["worker_rss_mb_at_1000_in_flight"]["met"] is None  # no RSS for a stack given by URL
    assert isinstance(targets["init_p50_low_load_ms"]["value"], float)
    assert "deposits:" in report.console_summary(data)


async def test_the_bench_client_waits_out_a_429_and_asks_again() -> None:
    """Figures read back after a run (one GET per inbox row) must not lose rows to the API's rate limit."""
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(429), httpx.Response(200)])
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return next(answers)

    async with httpx.AsyncClient(transport=RetryAfterTransport(httpx.MockTransport(answer))) as client:
        response = await client.get("http://api.test/v1/ops/webhooks/7")
    assert response.status_code == 200 and seen == ["/v1/ops/webhooks/7"] * 3


async def test_ops_list_bench_fills_and_times_every_filter_on_both_backends(tmp_path: Path) -> None:
    """`payloop bench ops-list`, small: every filter's pages are timed on SQLite and PostgreSQL (shape, not timings)."""
    result = await run_ops_list_bench(OpsListBenchOptions(postgres_url(), payments=2_000, players=40, runs=2,
                                                          deep=300, sqlite_dir=tmp_path))
    for backend in ("sqlite", "postgresql"):
        cases = result[backend]["cases"]
        assert {"unfiltered", "status=credited", "psp=card_b", "method=crypto"} <= set(cases)
        assert cases["unfiltered"]["matching_rows"] == 2_000
        assert cases["unfiltered"]["first_page"]["rows"] == 50 and cases["unfiltered"]["deep_cursor_rows"] == 300
        assert all(case["first_page"]["count"] == 2 for case in cases.values())
    assert isinstance(result["all_within_target"], bool)


async def test_recon_bench_reconciles_a_seeded_day_through_the_sandbox_and_posts_once() -> None:
    """`payloop bench recon`, small: every seeded capture matched by its report line, settled once, and the same day
    at a later moment posts nothing (shape, not timings)."""
    result = await run_recon_bench(ReconBenchOptions(postgres_url(), lines=1_500))
    assert result["reconcile"]["counts"] == {"matched": 1_500} and result["reconcile"]["state"] == "completed"
    assert result["rerun_same_day"]["counts"] == {"matched": 1_500}
    assert result["settlements_posted"] == 1_500 and result["ledger_transfers"] == 3 * 1_500
    assert result["stream_and_parse_only"]["lines"] == 1_500
    assert isinstance(result["within_target"], bool)
