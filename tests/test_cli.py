"""The `payloop` command as a user runs it: real child processes, real ports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx


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
        "PAYLOOP_CODEC_SERVER_PORT": str(free_port()),
        "PAYLOOP_WORKER_METRICS_PORT": str(free_port()),
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
    # The e-wallet deposit, settled in today's report: matched by a reconciliation the stack's worker runs.
    assert "reconciled today's ewallet settlement report: matched 1" in result.stdout, result.stdout
    assert f"{env['PAYLOOP_TEMPORAL_UI_URL']}/namespaces/default/workflows/deposit-pay_" in result.stdout
    # A checkout URL for a demo player, which the demo opened once; not run from a terminal, the stack then stops.
    assert f"  http://127.0.0.1:{env['PAYLOOP_API_PORT']}/checkout/" in result.stdout, result.stdout
    assert "payloop demo --keep-running" in result.stdout
    # Everything it started is gone: nothing listens on the API, codec server or Temporal ports any more.
    temporal_port = env["PAYLOOP_TEMPORAL_ADDRESS"].rsplit(":", 1)[1]
    for port in (env["PAYLOOP_API_PORT"], env["PAYLOOP_CODEC_SERVER_PORT"], temporal_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0

    check = payloop("ledger", "check", env=env)
    assert check.returncode == 0 and "ledger invariants hold" in check.stdout, check.stdout

    with sqlite3.connect(tmp_path / "data" / "payloop.db") as db:
        db.execute("UPDATE ledger_accounts SET posted_balance = posted_balance + 1 WHERE kind = 'player'")
    broken = payloop("ledger", "check", env=env)
    assert broken.returncode == 1 and "VIOLATION" in broken.stdout, broken.stdout


# -- dev mode versus production start-up -------------------------------------------------------------------------

PSPS = ("card", "card_b", "ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto", "crypto_b")
SECRET_SETTINGS = [f"PAYLOOP_WEBHOOK_SECRET_{psp.upper()}" for psp in PSPS]


def production_env(data_dir: Path) -> dict[str, str]:
    """What a deployment sets: its own database, API keys and one webhook secret per PSP; no dev mode."""
    env = isolated_env(data_dir)
    env["PAYLOOP_DATABASE_URL"] = f"sqlite+aiosqlite:///{data_dir / 'ledger.db'}"
    env["PAYLOOP_API_KEYS"] = "k_3f9a1c2e7b:cashier:payments,wallet"
    env.update({name: f"whsec_{name.lower()}_7c1e" for name in SECRET_SETTINGS})
    env["PAYLOOP_CODEC_KEYS"] = "prod1:" + base64.b64encode(b"k" * 32).decode()
    env["PAYLOOP_CHECKOUT_SIGNING_KEYS"] = "ck_" + "7e2b9d4f" * 5
    return env


def test_api_outside_dev_mode_refuses_built_in_settings_and_names_every_one(tmp_path: Path) -> None:
    result = payloop("api", env=isolated_env(tmp_path / "data"), timeout=60)

    assert result.returncode == 78, result.stdout + result.stderr
    for name in ("PAYLOOP_DATABASE_URL", "PAYLOOP_API_KEYS", "PAYLOOP_CODEC_KEYS", *SECRET_SETTINGS,
                 "PAYLOOP_CHECKOUT_SIGNING_KEYS"):
        assert f"  {name}: " in result.stderr, (name, result.stderr)
    assert "dev-key-change-me" in result.stderr  # which value is the problem, not only where


def test_api_outside_dev_mode_refuses_one_secret_shared_by_several_psps(tmp_path: Path) -> None:
    """Not built in, but shared: a genuine delivery of one PSP would verify as another's."""
    env = production_env(tmp_path / "data")
    for name in SECRET_SETTINGS[1:]:
        del env[name]
    env["PAYLOOP_SANDBOX_WEBHOOK_SECRET"] = "whsec_one_for_all_9d2f"

    result = payloop("api", env=env, timeout=60)

    assert result.returncode == 78, result.stdout + result.stderr
    named = [line.split(":")[0].strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert named == SECRET_SETTINGS[1:], result.stderr
    assert "shares its webhook secret" in result.stderr


def test_worker_outside_dev_mode_refuses_the_default_ledger_but_needs_no_api_secrets(tmp_path: Path) -> None:
    result = payloop("worker", env=isolated_env(tmp_path / "data"), timeout=60)

    assert result.returncode == 78, result.stdout + result.stderr
    named = [line.split(":")[0].strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert named == ["PAYLOOP_CODEC_KEYS", "PAYLOOP_DATABASE_URL"], result.stderr


def test_the_demo_event_receiver_refuses_to_start_outside_dev_mode(tmp_path: Path) -> None:
    result = payloop("event-receiver", env=production_env(tmp_path / "data"), timeout=60)

    assert result.returncode == 78, result.stdout + result.stderr
    assert "PAYLOOP_DEV_MODE" in result.stderr


def test_codec_server_outside_dev_mode_refuses_the_built_in_keys_and_token(tmp_path: Path) -> None:
    result = payloop("codec-server", env=isolated_env(tmp_path / "data"), timeout=60)

    assert result.returncode == 78, result.stdout + result.stderr
    named = [line.split(":")[0].strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert named == ["PAYLOOP_CODEC_KEYS", "PAYLOOP_CODEC_SERVER_TOKEN"], result.stderr


async def test_api_with_production_settings_starts_and_knows_only_its_own_keys(tmp_path: Path) -> None:
    from tests.processes import TemporalDevServer

    data_dir = tmp_path / "data"
    env = production_env(data_dir)
    temporal = TemporalDevServer(tmp_path)
    await temporal.start()
    env["PAYLOOP_TEMPORAL_ADDRESS"] = temporal.address
    api = None
    try:
        data_dir.mkdir()
        assert payloop("migrate", env=env).returncode == 0
        api = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "api"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{env['PAYLOOP_API_PORT']}"
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            deadline = time.monotonic() + 60
            while True:
                assert api.poll() is None, api.stdout.read() if api.stdout else ""
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the API did not become ready"
                await asyncio.sleep(0.2)
            query = {"currency": "EUR", "amount": "50.00"}
            own = await http.get("/v1/payment-methods", params=query, headers={"Authorization": "Bearer k_3f9a1c2e7b"})
            built_in = await http.get("/v1/payment-methods", params=query,
                                      headers={"Authorization": "Bearer dev-key-change-me"})
        assert own.status_code == 200, own.text
        assert built_in.status_code == 401
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=20)
        temporal.stop()


def test_the_embedded_stack_starts_its_processes_in_dev_mode_with_a_secret_per_psp() -> None:
    """`payloop run` / `demo` (test_demo above runs them): their API and worker start on built-in values, and
    every PSP without a secret of its own gets a fresh one, so none shares another's even in dev."""
    from entrypoints.startup import dev_environment, startup_problems
    from payloop.settings import Settings

    env = dev_environment(Settings(webhook_secret_ewallet="whsec_mine"), {"PATH": "/usr/bin"})
    again = dev_environment(Settings(webhook_secret_ewallet="whsec_mine"), {"PATH": "/usr/bin"})

    assert env["PATH"] == "/usr/bin" and env["PAYLOOP_DEV_MODE"] == "true"
    assert "PAYLOOP_WEBHOOK_SECRET_EWALLET" not in env  # its own is kept
    generated = [env[name] for name in SECRET_SETTINGS if name != "PAYLOOP_WEBHOOK_SECRET_EWALLET"]
    assert len(set(generated)) == len(PSPS) - 1 and not set(generated) & set(again.values())
    child = Settings(webhook_secret_ewallet="whsec_mine",
                     **{name.removeprefix("PAYLOOP_").lower(): value for name, value in env.items()
                        if name.startswith("PAYLOOP_")})
    assert child.dev_mode
    # Dev mode lets the built-in key and the default ledger through; the secrets would pass even without it.
    assert [name for name, _ in startup_problems(child, "api") if "WEBHOOK" in name] == []


def test_a_temporal_client_certificate_without_its_key_is_refused_at_start_even_in_dev_mode(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "data")
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    env.update({"PAYLOOP_DEV_MODE": "true", "PAYLOOP_TEMPORAL_TLS_CERT": str(cert)})

    for role in ("api", "worker"):
        result = payloop(role, env=env, timeout=60)
        assert result.returncode == 78, result.stdout + result.stderr
        assert "  PAYLOOP_TEMPORAL_TLS_KEY: PAYLOOP_TEMPORAL_TLS_CERT is set but PAYLOOP_TEMPORAL_TLS_KEY is not" in (
            result.stderr), result.stderr
