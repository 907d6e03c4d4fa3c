"""The `payloop` command as a user runs it: real child processes, real ports."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def payloop(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "entrypoints.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def isolated_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLOOP_")}
    temporal_port, ui_port = free_port(), free_port()
    env.update({
        "PAYLOOP_DATA_DIR": str(data_dir),
        "PAYLOOP_API_PORT": str(free_port()),
        "PAYLOOP_SANDBOX_PSP_PORT": str(free_port()),
        "PAYLOOP_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "PAYLOOP_TEMPORAL_UI_URL": f"http://localhost:{ui_port}",
    })
    env["PAYLOOP_SANDBOX_WEBHOOK_URL"] = f"http://127.0.0.1:{env['PAYLOOP_API_PORT']}/v1/webhooks/{{psp}}"
    return env


def test_demo_makes_two_deposits_and_stops_everything(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "data")
    result = payloop("demo", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("status=credited") == 2, result.stdout
    assert "available 75.00 EUR" in result.stdout
    assert f"{env['PAYLOOP_TEMPORAL_UI_URL']}/namespaces/default/workflows/deposit-pay_" in result.stdout
    # Everything it started is gone: nothing listens on the API or Temporal ports any more.
    for port in (env["PAYLOOP_API_PORT"], env["PAYLOOP_TEMPORAL_ADDRESS"].rsplit(":", 1)[1]):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0

    check = payloop("ledger", "check", env=env)
    assert check.returncode == 0 and "ledger invariants hold" in check.stdout, check.stdout

    with sqlite3.connect(tmp_path / "data" / "payloop.db") as db:
        db.execute("UPDATE ledger_accounts SET posted_balance = posted_balance + 1 WHERE kind = 'player'")
    broken = payloop("ledger", "check", env=env)
    assert broken.returncode == 1 and "VIOLATION" in broken.stdout, broken.stdout
