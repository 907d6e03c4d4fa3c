"""What an operator reads in the worker's log during a PSP outage: one JSON WARNING line per failed PSP call, without
a traceback, and one line per deposit that ended without money, with its code.

The worker is a child process (`python -m entrypoints.cli worker`, as deployed), so its log is what `payloop
worker` writes to stderr through payloop/logs.py; the API and the sandbox PSP run in this process. SQLite only: no
log line depends on the ledger's backend.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from payloop.db import create_engine
from tests.e2e.conftest import Stack, api_and_sandbox, eventually, new_player, stack_settings
from tests.processes import WorkerProcess, database_for_processes

CARD_PSPS = ("card", "card_b")


@pytest.fixture(scope="module")
async def logged(temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[tuple[Stack, WorkerProcess]]:
    workdir = tmp_path_factory.mktemp("logs")
    async with database_for_processes("sqlite", workdir) as url:
        settings = stack_settings(url, f"payloop-logs-{uuid.uuid4().hex[:6]}", data_dir=workdir, log_format="json",
                                  temporal_address=temporal_env.client.service_client.config.target_host)
        worker = WorkerProcess(settings, workdir)
        engine = create_engine(url)
        try:
            async with api_and_sandbox(settings, engine, temporal_env.client) as (api, sandbox):
                await worker.start()
                yield Stack("sqlite", settings, engine, temporal_env.client, api, sandbox), worker
        finally:
            worker.stop()
            await engine.dispose()


def worker_lines(worker: WorkerProcess) -> list[dict]:
    """The worker's log, every line of it one JSON object (json.loads fails the test on any other line)."""
    return [json.loads(line) for line in worker.log().splitlines() if line.strip()]


async def logged_lines(worker: WorkerProcess) -> list[dict]:
    return worker_lines(worker)


def ended(lines: list[dict], payment_id: str) -> list[dict]:
    return [line for line in lines if line.get("payment_id") == payment_id and "ended" in line["message"]]


async def test_a_psp_outage_is_one_warning_per_try_and_the_failed_deposit_says_why(
    logged: tuple[Stack, WorkerProcess],
) -> None:
    stack, worker = logged
    for psp in CARD_PSPS:
        await stack.psp_mode(psp, "down")
    try:
        response = await stack.api.post("/v1/payments/init", headers={"Idempotency-Key": uuid.uuid4().hex}, json={
            "amount": "20.00", "currency": "EUR", "method": "card", "player_id": new_player(),
            "return_url": "https://casino.example/return", "meta": {"country": "DE"}})
        assert response.status_code == 502 and response.json()["code"] == "psp_unavailable", response.text
        payment_id = response.json()["payment_id"]
        lines = await eventually(lambda: logged_lines(worker), lambda ls: ended(ls, payment_id), timeout=20)
    finally:
        for psp in CARD_PSPS:
            await stack.psp_mode(psp, "up")

    retries = [line for line in lines if line.get("payment_id") == payment_id and line.get("error_code")]
    assert {line["psp"] for line in retries} == set(CARD_PSPS)
    for line in retries:
        assert line["level"] == "WARNING" and line["error_code"] == "psp_unavailable", line
        assert (line["operation"], line["activity"]) == ("create_payment", "create_psp_payment"), line
        assert line["workflow_id"] == f"deposit-{payment_id}" and line["attempt"] == 1, line
        assert "traceback" not in line
    # Not one traceback for this deposit's expected failures; the SDK's "Completing activity as failed" is DEBUG.
    about_it = [line for line in lines if line.get("payment_id") == payment_id]
    assert not [line for line in about_it if "traceback" in line or "Traceback" in line["message"]]
    assert not [line for line in about_it if line["message"].startswith("Completing activity as failed")]
    [end] = ended(lines, payment_id)
    assert (end["level"], end["status"], end["failure_code"]) == ("WARNING", "failed", "psp_unavailable")
    assert {"time", "level", "logger", "message"} <= end.keys()


async def test_an_expired_deposit_logs_its_code(logged: tuple[Stack, WorkerProcess]) -> None:
    stack, worker = logged
    init = await stack.deposit(method="card", scenario="lost", player_id=new_player())
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "expired"
    lines = await eventually(lambda: logged_lines(worker), lambda ls: ended(ls, init["payment_id"]))
    [end] = ended(lines, init["payment_id"])
    assert (end["level"], end["status"], end["failure_code"]) == ("WARNING", "expired", "psp_timeout")
    assert end["message"] == f"deposit {init['payment_id']} ended expired (psp_timeout)"
