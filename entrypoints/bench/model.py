"""What one `payloop bench` traffic run is given (BenchOptions) and what it gathers (BenchRun): the record the
run module fills and the report module reads, so neither imports the other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from entrypoints.bench import analysis
from entrypoints.bench.skeleton import SkeletonRun
from entrypoints.bench.target import Target
from entrypoints.bench.traffic import DEPOSIT_METHODS, Driver, Phase

DEFAULT_OUT = Path(".payloop/bench")


@dataclass
class BenchOptions:
    deposits: int = 200
    payouts: int = 50
    rounds: int = 500
    concurrency: int = 50
    low_load: int = 20
    half_load: bool = True
    rate: float | None = None
    methods: tuple[str, ...] = DEPOSIT_METHODS
    skeleton: bool = True
    skeleton_shape: str | None = None  # None: the shape of a warm-up card deposit
    skeleton_signal_delay: float = 0.05  # the sandbox's settle delay: PSP create → webhook
    api_url: str | None = None
    api_key: str = "dev-key-change-me"
    temporal_address: str = "127.0.0.1:7233"
    namespace: str = "default"
    database_url: str | None = None
    out: Path = DEFAULT_OUT
    progress: bool = True
    timeout: float = 120.0
    hold: int = 0  # deposits held in flight at once (3DS challenge) while RSS is sampled; 0 = no such phase
    ledger: bool = False
    ledger_clients: int = 8
    ledger_seconds: float = 10.0


@dataclass
class BenchRun:
    options: BenchOptions
    target: Target
    driver: Driver
    started: float
    finished: float = 0.0
    shape: str = ""
    shape_source: str = ""
    skeleton_runs: dict[str, SkeletonRun] = field(default_factory=dict)
    skeleton_histories: dict[str, analysis.HistoryFacts] = field(default_factory=dict)
    skeleton_phases: list[Phase] = field(default_factory=list)
    histories: dict[str, analysis.HistoryFacts] = field(default_factory=dict)
    webhook_received: dict[str, float] = field(default_factory=dict)
    webhook_source: str = "api_inbox_received_at"
    ledger: analysis.LedgerActivity | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    rss_samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def options_dict(options: BenchOptions) -> dict[str, Any]:
    values = asdict(options)
    values["out"] = str(options.out)
    values["methods"] = list(options.methods)
    if values.get("database_url"):
        values["database_url"] = make_url(values["database_url"]).render_as_string(hide_password=True)
    values["api_key"] = "***"
    return values
