"""RFC 9457 problem+json for every error, with a stable `code`, the request's `trace_id` and `retryable`."""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://docs.payloop.dev/errors/"

trace_id_var: ContextVar[str] = ContextVar("trace_id", default="")
log = logging.getLogger("payloop.api")


class Problem(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        retryable: bool = False,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.retryable = retryable
        self.errors = errors or []
        self.headers = headers or {}
        self.extensions = extensions

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
            "code": self.code,
            "trace_id": trace_id_var.get(),
            "retryable": self.retryable,
            "errors": self.errors,
        }
        body.update(self.extensions)
        return body

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers)


def validation_problem(errors: list[dict[str, str]], detail: str = "the request is not valid") -> Problem:
    return Problem(422, "validation_error", "Validation failed", detail, errors=errors)


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def _trace(request: Request, call_next):  # noqa: ANN001, ANN202
        trace_id = uuid.uuid4().hex
        trace_id_var.set(trace_id)
        try:
            response = await call_next(request)
        except Exception:  # a real incident: logged with its trace id, answered as problem+json
            log.exception("unhandled error (trace_id=%s)", trace_id)
            response = Problem(500, "internal_error", "Internal error", retryable=True).response()
        response.headers["X-Trace-Id"] = trace_id
        return response

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = [str(part) for part in err.get("loc", ()) if part not in ("body",)]
            errors.append({"field": ".".join(loc) or "body", "code": str(err.get("type", "invalid")),
                           "message": str(err.get("msg", "invalid value"))})
        return validation_problem(errors).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else None
        return Problem(exc.status_code, code, title, detail, headers=dict(exc.headers or {})).response()
