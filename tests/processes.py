"""Real processes that tests kill and restart: a payments worker, a Temporal dev server with file persistence, and
a private PostgreSQL cluster. Shared by the worker-crash test (tests/e2e) and the failure drills (tests/drills)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from temporalio.client import Client

from entrypoints.migrate import upgrade
from entrypoints.stack import search_attribute_flags
from payloop.db import create_engine
from payloop.settings import Settings
from payloop.temporal import dev_server_flags, temporal_cli_path
from tests.conftest import FreshDatabase, postgres_url
from tests.e2e.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
READY_LINE = "worker polling task queue"  # logged by workers.payments.run once the worker polls
# What a worker always needs from the settings, even when the test left them at their defaults.
WORKER_SETTINGS = ("database_url", "temporal_address", "task_queue", "sandbox_psp_port",
                   "sandbox_webhook_secret", "data_dir")


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)


class WorkerProcess:
    """`python -m entrypoints.cli worker` as a child process, killed with SIGKILL and started again at will.

    It is configured only by `PAYLOOP_*` variables: WORKER_SETTINGS plus every setting the test set explicitly.
    """

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        names = set(WORKER_SETTINGS) | settings.model_fields_set
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLOOP_")}
        self.env.update({f"PAYLOOP_{name.upper()}": str(getattr(settings, name)) for name in sorted(names)
                         if getattr(settings, name) is not None})
        # Its metrics endpoint on a port of its own (kept across restarts), not the default one a stack may hold.
        self.env.setdefault("PAYLOOP_WORKER_METRICS_PORT", str(free_port()))
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.starts = 0
        self.kills = 0

    async def start(self, timeout: float = 30) -> None:
        assert not self.running, "a worker is already running"
        self.starts += 1
        self.log_path = self.log_dir / f"worker-{self.starts}.log"
        self.proc = _spawn([sys.executable, "-m", "entrypoints.cli", "worker"], self.log_path, env=self.env)
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not polling within {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no activity completion, no sticky-queue reset."""
        assert self.proc is not None and self.running, "no worker is running"
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL
        self.kills += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.running:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


class TemporalDevServer:
    """`temporal server start-dev` with its state in a SQLite file, so it can be stopped and started again on the
    same port and carry on where it was (workflows, timers, task queues)."""

    def __init__(self, workdir: Path, namespace: str = "default") -> None:
        self.workdir = workdir
        self.db_file = workdir / "temporal.db"
        self.namespace = namespace
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 60) -> None:
        assert not self.running, "the Temporal dev server is already running"
        self.starts += 1
        log_path = self.workdir / f"temporal-{self.starts}.log"
        self.proc = _spawn(
            [temporal_cli_path(), "server", "start-dev", "--db-filename", str(self.db_file),
             "--ip", "127.0.0.1", "--port", str(self.port), "--headless", "--namespace", self.namespace,
             "--log-level", "error", *search_attribute_flags(), *dev_server_flags(db_file=True)], log_path)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"temporal exited with {self.proc.returncode}:\n{log_path.read_text()}")
            if _port_open(self.port):
                with contextlib.suppress(Exception):
                    await Client.connect(self.address, namespace=self.namespace)  # asks the server's system info
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"temporal not serving within {timeout} s:\n{log_path.read_text()}")
            await asyncio.sleep(0.2)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash); the state file stays."""
        if self.proc is None or not self.running:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: PAYLOOP_TEST_PG_BINDIR, the newest /usr/lib/postgresql/*/bin, or PATH."""
    candidates = [os.environ.get("PAYLOOP_TEST_PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    found = shutil.which("initdb")
    candidates += [str(Path(found).parent)] if found else []
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


class PostgresServer:
    """A private PostgreSQL cluster (initdb into a temporary directory) on a free loopback port, which a test may
    stop and start at will without disturbing the shared one. As root it runs as the `postgres` OS user
    (PostgreSQL refuses to run as root). It skips fsync (a machine crash could lose data; a server crash, which
    is what tests cause, cannot) but keeps synchronous commit: a commit it acknowledged survives `stop immediate`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.run_as: list[str] = []
        owner = None
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="payloop-pg-"))
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.starts = 0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        result = subprocess.run([*self.run_as, *argv], check=False, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, cwd=self.root)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                                 f"\n--- server log ---\n{log}")

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        self.starts += 1
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.root}' "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every client and shuts down cleanly; `immediate` is a crash (recovery on start)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.running:
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A running private PostgreSQL cluster, deleted afterwards. Without PostgreSQL binaries the test is skipped
    (fails in CI, where PostgreSQL is never skipped)."""
    bindir = postgres_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) not found: set PAYLOOP_TEST_PG_BINDIR")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; set PAYLOOP_TEST_PG_BINDIR")
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@contextlib.asynccontextmanager
async def database_for_processes(backend: str, workdir: Path, base_url: str | None = None) -> AsyncIterator[str]:
    """The URL of a fresh migrated database that another process can open from the URL alone.

    SQLite: FreshDatabase's file. PostgreSQL (on `base_url`, by default PAYLOOP_TEST_DATABASE_URL's server): a
    database of its own — FreshDatabase's per-test schema needs a search_path, which the worker process cannot be
    given (`PAYLOOP_DATABASE_URL` is all it reads).
    """
    if backend == "sqlite":
        async with FreshDatabase(backend, workdir) as db:
            yield db.url
        return
    base = make_url(base_url or postgres_url())
    name = f"payloop_proc_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base.render_as_string(hide_password=False), pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        await upgrade(url)
        yield url
    finally:
        with contextlib.suppress(Exception):  # a drill may leave the server down; then there is nothing to drop
            async with admin.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
