"""Logs an operator can read and a log pipeline can parse: one setup for every process (API, worker, sandbox PSP,
codec server), one JSON object per line by default (`PAYLOOP_LOG_FORMAT=json|text`), and one access line per HTTP
request with its trace id.

Every line has `time` (ISO 8601, UTC), `level`, `logger` and `message`, and when known: `trace_id` (the HTTP
request it belongs to), `workflow_id`, `payment_id` / `payout_id` / `refund_id` (from the workflow id), `activity`
and `attempt` (Temporal's workflow and activity loggers put these in `extra`; they become fields here).

Never logged: query strings, request or response bodies, headers (Authorization among them), card data.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("json", "text")
# The HTTP request a line belongs to ("" outside one); the API's problem+json bodies carry it too.
trace_id_var: ContextVar[str] = ContextVar("trace_id", default="")

# Temporal's loggers put their context in these `extra` keys; it is shown as the fields below, not as dicts.
_TEMPORAL_EXTRAS = ("temporal_workflow", "temporal_activity", "__temporal_error_identifier")
# uvicorn adds an ANSI-coloured copy of some messages.
_SKIPPED_EXTRAS = (*_TEMPORAL_EXTRAS, "color_message")
# The workflow id's prefix → the field naming the record (workflows/*.py `workflow_id()`).
_RECORD_IDS = {"deposit-": "payment_id", "withdrawal-": "payout_id", "refund-": "refund_id"}
# Libraries whose INFO lines are one per call, noise rather than history.
_QUIET_LOGGERS = ("httpx", "httpcore")


def setup_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    """Routes every logger of the process (uvicorn's and Temporal's too) to one stderr handler in `log_format`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PayloopJsonFormatter() if log_format == "json" else PayloopTextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn started with log_config=None keeps these as they are: through the root handler, nothing else.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    _temporal_context_on_message(log_format == "text")


def _temporal_context_on_message(on_message: bool) -> None:
    """Temporal appends its context dict to every message by default; in JSON it is in fields already."""
    from temporalio import activity, workflow

    workflow.logger.workflow_info_on_message = on_message
    activity.logger.activity_info_on_message = on_message


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The line's context: its HTTP request's trace id, its workflow, record and activity."""
    fields: dict[str, Any] = {}
    if trace_id := trace_id_var.get():
        fields["trace_id"] = trace_id
    temporal = getattr(record, "temporal_activity", None) or getattr(record, "temporal_workflow", None)
    if isinstance(temporal, dict) and (workflow_id := temporal.get("workflow_id")):
        fields["workflow_id"] = workflow_id
        for prefix, field in _RECORD_IDS.items():
            if workflow_id.startswith(prefix):
                fields[field] = workflow_id.removeprefix(prefix)
    activity = getattr(record, "temporal_activity", None)
    if isinstance(activity, dict):
        fields["activity"] = activity.get("activity_type")
        fields["attempt"] = activity.get("attempt")
    return fields


def utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="milliseconds")


class PayloopJsonFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message, the context fields, then the call's `extra`."""

    def __init__(self) -> None:
        super().__init__("{levelname}{name}{message}", style="{",
                         rename_fields={"levelname": "level", "name": "logger", "exc_info": "traceback"},
                         reserved_attrs=[*RESERVED_ATTRS, *_SKIPPED_EXTRAS])

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = utc_iso(record.created)
        super().add_fields(log_data, record, message_dict)
        for key, value in context_fields(record).items():
            log_data.setdefault(key, value)  # a call's own `extra` says it more precisely


class PayloopTextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value…` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return utc_iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        # Temporal's context is on the message already (its loggers' default); the request's trace id is not.
        line = super().format(record)
        trace_id = trace_id_var.get()
        return f"{line} trace_id={trace_id}" if trace_id else line


# -- the access line and trace id of each HTTP request ----------------------------------------------------------

# W3C Trace Context `traceparent`: version-trace_id-parent_id-flags, lowercase hex; a version after 00 may add fields.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def trace_id_from_traceparent(value: str | None) -> str | None:
    """The trace id of a valid `traceparent` header, else None (a new one is made then)."""
    match = _TRACEPARENT.match((value or "").strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return trace_id


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AccessLogMiddleware:
    """ASGI middleware: gives each HTTP request a trace id (its `traceparent`'s, else a new one) for every line
    logged while it runs, returns it as `X-Trace-Id`, and logs one line once the response is sent: method, path
    (never the query string), status, duration_ms. `loggable_path` rewrites a path that holds a credential (a
    checkout URL's token) before it is logged."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], logger_name: str,
                 loggable_path: Callable[[str], str] = lambda path: path) -> None:
        self.app = app
        self.log = logging.getLogger(logger_name)
        self.loggable_path = loggable_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        trace_id = trace_id_from_traceparent(_header(scope, b"traceparent")) or uuid.uuid4().hex
        token = trace_id_var.set(trace_id)
        started = time.monotonic()
        status = 500  # what the client gets when the app raises before it answers

        async def send_with_trace_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-trace-id", trace_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace_id)
        finally:
            duration_ms = int((time.monotonic() - started) * 1000)
            path = self.loggable_path(scope["path"])
            self.log.info("%s %s %s %d ms", scope["method"], path, status, duration_ms,
                          extra={"method": scope["method"], "path": path, "status": status,
                                 "duration_ms": duration_ms})
            trace_id_var.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None
