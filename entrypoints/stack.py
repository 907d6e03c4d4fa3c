"""The embedded stack: Temporal dev server, sandbox PSP, worker and API as child processes of one command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from entrypoints.startup import dev_environment
from payloop.settings import Settings
from payloop.temporal import dev_server_flags, temporal_cli_path
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

_SEARCH_ATTRIBUTE_TYPES = {"KEYWORD": "Keyword", "INT": "Int"}


@dataclass
class EmbeddedStack:
    settings: Settings
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # the children's environment, set by start()

    def start(self) -> None:
        s = self.settings
        # Dev mode and a fresh secret per PSP, the same for every child (the sandbox signs, the API verifies).
        self.env = dev_environment(s, os.environ)
        s.data_dir.mkdir(parents=True, exist_ok=True)
        logs = s.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        host, _, port = s.temporal_address.rpartition(":")
        ui_port = urlsplit(s.temporal_ui_url).port or 8233
        self._spawn("temporal", [
            temporal_cli_path(), "server", "start-dev",
            "--db-filename", str(s.data_dir / "temporal.db"),
            "--ip", host or "127.0.0.1", "--port", port, "--ui-port", str(ui_port),
            "--namespace", s.temporal_namespace, "--log-level", "warn",
            # The UI decodes encrypted payloads through our codec server (from the engineer's browser).
            "--ui-codec-endpoint", s.codec_server_url,
            *search_attribute_flags(), *dev_server_flags(db_file=True),
        ], logs)
        self._spawn("sandbox-psp", [sys.executable, "-m", "entrypoints.cli", "sandbox-psp"], logs)
        self._spawn("codec-server", [sys.executable, "-m", "entrypoints.cli", "codec-server"], logs)
        _wait_for_tcp(host or "127.0.0.1", int(port), "Temporal dev server", self)
        _run_checked([sys.executable, "-m", "entrypoints.cli", "migrate"], self.env)
        _run_checked([sys.executable, "-m", "entrypoints.cli", "schedules"], self.env)
        self._spawn("worker", [sys.executable, "-m", "entrypoints.cli", "worker"], logs)
        self._spawn("api", [sys.executable, "-m", "entrypoints.cli", "api"], logs)
        _wait_for_http(f"{s.api_url}/readyz", "API", self)
        _wait_for_http(f"{s.sandbox_psp_url}/healthz", "sandbox PSP", self)
        _wait_for_http(f"http://{s.codec_server_host}:{s.codec_server_port}/healthz", "codec server", self)
        # Registers itself with the API (ready by now) as an event endpoint, then logs what it verifies.
        self._spawn("event-receiver", [sys.executable, "-m", "entrypoints.cli", "event-receiver"], logs)

    def _spawn(self, name: str, argv: list[str], logs) -> None:  # noqa: ANN001
        log_file = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
        # Own process group: Ctrl-C reaches only this command, which then stops the children in order.
        self.processes[name] = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}; see {self.settings.data_dir / 'logs' / (name + '.log')}"
                )

    def stop(self) -> None:
        # API first (no new work), then the worker, then the servers it talks to.
        for name in ("event-receiver", "api", "worker", "codec-server", "sandbox-psp", "temporal"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def search_attribute_flags() -> list[str]:
    """`--search-attribute Name=Type` flags that register the payment search attributes on a dev server started as
    a process (the embedded stack here; the tests' process harness too)."""
    flags: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}={_SEARCH_ATTRIBUTE_TYPES[key.indexed_value_type.name]}"]
    return flags


def _run_checked(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-2:])} failed:\n{result.stdout}{result.stderr}")


def _wait_for_tcp(host: str, port: int, what: str, stack: EmbeddedStack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start within {timeout:.0f} s") from None
            time.sleep(0.2)


def _wait_for_http(url: str, what: str, stack: EmbeddedStack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s ({url})")
        time.sleep(0.2)
