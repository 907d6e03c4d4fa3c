"""The log lines (payloop/logs.py): JSON fields, Temporal's context as fields, the trace id of an HTTP request
(from its traceparent), the access line without query strings, and expected PSP failures without a traceback."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationErrorCategory

from activities.psp_calls import psp_failure
from api.app import create_app
from payloop.logs import AccessLogMiddleware, PayloopJsonFormatter, trace_id_from_traceparent
from payloop.settings import Settings
from psp.base import (
    PspDeclined,
    PspError,
    PspFailover,
    PspNotFound,
    PspRequestRejected,
    PspStepUpRequired,
    PspTransientError,
)
from tests.processes import REPO

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

Lines = Callable[[], list[dict]]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Every line logged during the test, as the JSON objects a payloop process writes."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(PayloopJsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    client_log = logging.getLogger("httpx")  # the tests' HTTP client, not the app; quiet as setup_logging has it
    client_level = client_log.level
    client_log.setLevel(logging.WARNING)
    try:
        yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        client_log.setLevel(client_level)


def test_a_line_is_one_json_object_with_time_level_logger_message(json_lines: Lines) -> None:
    logging.getLogger("payloop.test").warning("deposit %s ended %s", "pay_1", "failed", extra={"failure_code": "x"})
    [line] = json_lines()
    assert line["level"] == "WARNING" and line["logger"] == "payloop.test"
    assert line["message"] == "deposit pay_1 ended failed" and line["failure_code"] == "x"
    assert datetime.fromisoformat(line["time"]).utcoffset() == timezone.utc.utcoffset(None)
    assert "trace_id" not in line  # outside a request


def test_temporal_context_becomes_fields(json_lines: Lines) -> None:
    log = logging.getLogger("temporalio.activity")
    activity = {"workflow_id": "deposit-pay_7", "activity_type": "create_psp_payment", "attempt": 2,
                "workflow_run_id": "r", "activity_id": "5"}
    log.info("in an activity", extra={"temporal_activity": activity})
    log.info("in a workflow", extra={"temporal_workflow": {"workflow_id": "withdrawal-po_3", "attempt": 1}})
    log.info("a refund", extra={"temporal_workflow": {"workflow_id": "refund-rf_9"}})
    in_activity, in_workflow, refund = json_lines()
    assert {k: in_activity[k] for k in ("workflow_id", "payment_id", "activity", "attempt")} == {
        "workflow_id": "deposit-pay_7", "payment_id": "pay_7", "activity": "create_psp_payment", "attempt": 2}
    assert in_workflow["payout_id"] == "po_3" and "activity" not in in_workflow and "attempt" not in in_workflow
    assert refund["refund_id"] == "rf_9"
    assert not {"temporal_activity", "temporal_workflow"} & (in_activity.keys() | in_workflow.keys())


@pytest.mark.parametrize(("header", "trace_id"), [
    (TRACEPARENT, TRACE_ID),
    (f"01-{TRACE_ID}-00f067aa0ba902b7-01-future", TRACE_ID),  # a later version may add fields
    (f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra", None),  # version 00 may not
    (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None),  # version ff is invalid
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # all-zero trace id
    (f"00-{TRACE_ID}-{'0' * 16}-01", None),  # all-zero parent id
    (f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01", None),  # uppercase hex
    (f"00-{TRACE_ID}\n-00f067aa0ba902b7-01", None),
    ("00-abc-def-01", None),
    ("", None),
    (None, None),
])
def test_trace_id_from_traceparent(header: str | None, trace_id: str | None) -> None:
    assert trace_id_from_traceparent(header) == trace_id


def _app_logging_inside() -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        logging.getLogger("payloop.test").info("looking at %s", thing)
        return {"thing": thing}

    app.add_middleware(AccessLogMiddleware, logger_name="payloop.test.access")
    return app


async def test_every_line_of_a_request_has_its_traceparent_trace_id(json_lines: Lines) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app_logging_inside()), base_url="http://t") as c:
        response = await c.get("/things/t1?token=q-secret-1", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200 and response.headers["x-trace-id"] == TRACE_ID
    inside, access = json_lines()
    assert inside["message"] == "looking at t1" and inside["trace_id"] == TRACE_ID
    assert access["logger"] == "payloop.test.access" and access["trace_id"] == TRACE_ID
    assert {k: access[k] for k in ("method", "path", "status")} == {"method": "GET", "path": "/things/t1",
                                                                    "status": 200}
    assert isinstance(access["duration_ms"], int) and access["duration_ms"] >= 0
    assert "q-secret-1" not in json.dumps(json_lines())


async def test_a_request_without_traceparent_gets_a_trace_id_of_its_own(json_lines: Lines) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app_logging_inside()), base_url="http://t") as c:
        first = await c.get("/things/a", headers={"traceparent": "garbage"})
        second = await c.get("/things/b")
    ids = [first.headers["x-trace-id"], second.headers["x-trace-id"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", trace_id) for trace_id in ids) and ids[0] != ids[1]
    assert [line["trace_id"] for line in json_lines()] == [ids[0], ids[0], ids[1], ids[1]]


async def test_the_api_logs_its_trace_id_and_never_a_query_string_or_key(engine: AsyncEngine,
                                                                        json_lines: Lines) -> None:
    app = create_app(Settings(api_keys="k:back-office:ops"), engine=engine, temporal=object())  # type: ignore[arg-type]
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api",
        headers={"Authorization": "Bearer wrong-key-secret-2", "traceparent": TRACEPARENT},
    ) as client:
        response = await client.get("/v1/payments/pay_1?card=4111111111111111")
    assert response.status_code == 401
    assert response.headers["x-trace-id"] == TRACE_ID and response.json()["trace_id"] == TRACE_ID
    [access] = [line for line in json_lines() if line["logger"] == "payloop.api.access"]
    assert (access["path"], access["status"], access["trace_id"]) == ("/v1/payments/pay_1", 401, TRACE_ID)
    logged = json.dumps(json_lines())
    assert "4111111111111111" not in logged and "wrong-key-secret-2" not in logged


def _run_logging(log_format: str) -> str:
    script = ("import logging; from payloop.logs import setup_logging, trace_id_var; "
              f"setup_logging({log_format!r}); trace_id_var.set('t-1'); "
              "logging.getLogger('uvicorn.error').info('started'); logging.getLogger('httpx').info('a call')")
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                          timeout=60).stderr


def test_setup_routes_every_logger_to_one_json_handler() -> None:
    [line] = [json.loads(text) for text in _run_logging("json").splitlines()]  # httpx's INFO is quiet
    assert (line["logger"], line["message"], line["trace_id"]) == ("uvicorn.error", "started", "t-1")


def test_setup_in_text() -> None:
    [line] = _run_logging("text").splitlines()
    assert re.fullmatch(r"\S+ INFO uvicorn.error: started trace_id=t-1", line)
    with pytest.raises(ValueError, match="log format"):
        from payloop.logs import setup_logging

        setup_logging("xml")


def test_an_expected_psp_failure_is_one_warning_and_benign(json_lines: Lines) -> None:
    failure = psp_failure(PspTransientError("psp_unavailable", "card is down"), "card", "create_payment")
    assert failure.category == ApplicationErrorCategory.BENIGN
    assert (failure.type, failure.details, failure.non_retryable) == ("retry", ("psp_unavailable",), False)
    [line] = json_lines()
    assert line["level"] == "WARNING" and "traceback" not in line
    assert {k: line[k] for k in ("psp", "operation", "error_code")} == {
        "psp": "card", "operation": "create_payment", "error_code": "psp_unavailable"}
    opened = psp_failure(PspTransientError("psp_timeout"), "card", "create_payment", circuit_opened=True)
    assert opened.non_retryable and opened.category == ApplicationErrorCategory.BENIGN


def test_the_psps_own_answers_are_benign_without_a_line(json_lines: Lines) -> None:
    """A decline, a step-up, a failover or "not found" is the PSP's answer, not a fault: no traceback, no line here."""
    for err, decision in ((PspDeclined("card_declined"), "hard_decline"), (PspStepUpRequired("sca_required"), "step_up"),
                          (PspFailover("try_another"), "failover"), (PspNotFound("not_found"), "not_found")):
        failure = psp_failure(err, "card", "create_payment")
        assert (failure.type, failure.non_retryable, failure.category) == (
            decision, True, ApplicationErrorCategory.BENIGN)
    assert json_lines() == []


def test_other_psp_failures_keep_the_sdks_line(json_lines: Lines) -> None:
    rejected = psp_failure(PspRequestRejected("invalid_request", "card: 400"), "card", "create_payment")
    malformed = psp_failure(PspError("bad_psp_response", "card: not JSON"), "card", "get_payment")
    assert rejected.category == malformed.category == ApplicationErrorCategory.UNSPECIFIED
    assert (rejected.type, rejected.non_retryable) == ("rejected", True)
    assert (malformed.type, malformed.non_retryable) == ("retry", False)
    assert json_lines() == []
