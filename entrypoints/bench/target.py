"""The stack a benchmark drives: the embedded one (started here, on free ports, in a scratch data dir and, for
PostgreSQL, a scratch database), or a running one given by URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url

from entrypoints.stack import EmbeddedStack
from payloop.db import create_engine, is_sqlite
from payloop.settings import Settings


@dataclass
class Target:
    api_url: str
    api_key: str
    temporal_address: str
    namespace: str
    embedded: bool
    database: str  # what the ledger runs on, as far as we know
    processes: dict[str, psutil.Process] = field(default_factory=dict)  # embedded only: for RSS
    notes: list[str] = field(default_factory=list)
    data_dir: Path | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def embedded_target(workdir: Path, database_url: str | None = None) -> Iterator[Target]:
    """Starts the embedded stack (`payloop run`'s, via EmbeddedStack) on free ports in `workdir`; the ledger on
    SQLite in it, or in a scratch PostgreSQL database created next to `database_url` and dropped afterwards."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    scratch_url = None
    if database_url and not is_sqlite(database_url):
        scratch_url = _create_scratch_database(database_url)
    api_port, sandbox_port, temporal_port, ui_port, codec_port, metrics_port = (free_port() for _ in range(6))
    # PAYLOOP_WORKER_METRICS_PORT=0 in the bench's environment measures the stack without the worker's metrics.
    metrics_off = os.environ.get("PAYLOOP_WORKER_METRICS_PORT") == "0"
    env = {
        "PAYLOOP_DATA_DIR": str(workdir),
        "PAYLOOP_DATABASE_URL": scratch_url or database_url or "",
        "PAYLOOP_API_HOST": "127.0.0.1",
        "PAYLOOP_API_PORT": str(api_port),
        "PAYLOOP_SANDBOX_PSP_HOST": "127.0.0.1",
        "PAYLOOP_SANDBOX_PSP_PORT": str(sandbox_port),
        "PAYLOOP_CODEC_SERVER_PORT": str(codec_port),
        "PAYLOOP_WORKER_METRICS_PORT": "0" if metrics_off else str(metrics_port),
        "PAYLOOP_SANDBOX_PSP_BASE_URL": "",
        "PAYLOOP_SANDBOX_PSP_PUBLIC_URL": "",
        "PAYLOOP_SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{api_port}/v1/webhooks/{{psp}}",
        "PAYLOOP_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "PAYLOOP_TEMPORAL_UI_URL": f"http://localhost:{ui_port}",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the stack's children read their settings from the environment
    stack = None
    try:
        settings = Settings()
        stack = EmbeddedStack(settings)
        stack.start()
        database = make_url(settings.effective_database_url).render_as_string(hide_password=True)
        yield Target(
            api_url=settings.api_url,
            api_key=settings.api_keys.split(";")[0].split(":")[0],
            temporal_address=settings.temporal_address,
            namespace=settings.temporal_namespace,
            embedded=True,
            database=database,
            processes={name: psutil.Process(proc.pid) for name, proc in stack.processes.items()},
            data_dir=workdir,
        )
    finally:
        if stack is not None:
            stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if scratch_url:
            _drop_scratch_database(database_url or "", scratch_url)


def remote_target(api_url: str, api_key: str, temporal_address: str, namespace: str) -> Target:
    return Target(
        api_url=api_url.rstrip("/"), api_key=api_key, temporal_address=temporal_address, namespace=namespace,
        embedded=False, database="(the remote stack's)",
        notes=["stack given by URL: process RSS is not measured (its processes are not children of this command)"],
    )


def _create_scratch_database(url: str) -> str:
    name = f"payloop_bench_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        admin = create_engine(url, pool_size=1)
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await admin.dispose()

    asyncio.run(create())
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop_scratch_database(admin_url: str, scratch_url: str) -> None:
    name = make_url(scratch_url).database

    async def drop() -> None:
        admin = create_engine(admin_url, pool_size=1)
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    asyncio.run(drop())
