"""RFC 9457 problem+json for every error, with a stable `code`, the request's `trace_id` and `retryable`: the
exception handlers, the trace id middleware and the OpenAPI documentation. The `Problem` exception itself is in
`api.problems` (imported here too), so `api.auth` raises it without importing this module."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from api import card_numbers
from api.auth import authentication_problem
from api.problems import PROBLEM_JSON, Problem, trace_id_var

log = logging.getLogger("payloop.api")


class FieldProblem(BaseModel):
    field: str
    code: str
    message: str


class ProblemDetails(BaseModel):
    """An error (RFC 9457, `application/problem+json`). Some problems carry more members, e.g. `payment_id`."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    type: str
    title: str
    status: int
    detail: str
    code: str  # stable and machine-readable
    trace_id: str  # also in the X-Trace-Id header
    retryable: bool
    errors: list[FieldProblem]  # field problems; empty when the error is not about fields


PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
FASTAPI_DEFAULT_422 = {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "the scheme to authenticate with", "required": True,
                                          "schema": {"type": "string"}}}
_RESPONSE_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing or invalid API key",
    402: "Insufficient funds, or the payment provider declined",
    403: "The API key lacks the scope, or the object belongs to another client",
    404: "Not found",
    408: "The request body did not arrive in time",
    409: "Illegal state change, or a request with this Idempotency-Key is still in flight",
    413: "Payload too large",
    422: "Validation failed, a rule or limit was breached, or an Idempotency-Key was reused with another body",
    429: "Rate limited",
    502: "The payment provider failed",
    503: "A dependency (database, payment engine) is unavailable; retry after Retry-After",
    504: "No answer in time; the request goes on, read its status",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring problem+json answers for these statuses."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {"description": _RESPONSE_DESCRIPTIONS.get(status, "Error"),
                                    "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}}}
        if status in (429, 503):
            response["headers"] = {name: {**spec, "required": True} for name, spec in _RETRY_AFTER.items()}
        elif status == 409:
            response["headers"] = _RETRY_AFTER  # when the Idempotency-Key is in flight
        responses[status] = response
    return responses


def _document_problems(app: FastAPI) -> None:
    """Makes the OpenAPI schema say what every operation answers: problem+json for validation errors (instead of
    FastAPI's default 422 body, which this API never sends), 401 and 403 for every operation behind an API key,
    and the ProblemDetails schema itself. Operation-specific problems are declared on the routes."""
    make_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = make_openapi()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                if responses.get("422", {}).get("content", {}).get("application/json") == FASTAPI_DEFAULT_422:
                    responses["422"] = problem_responses(422)[422]
                if "requestBody" in operation:  # a body that is not even JSON (e.g. not UTF-8), or a late one
                    responses.setdefault("400", problem_responses(400)[400])
                    responses.setdefault("408", problem_responses(408)[408])
                if operation.get("security"):
                    unauthorized = problem_responses(401)[401] | {"headers": _WWW_AUTHENTICATE}
                    responses.setdefault("401", unauthorized)
                    responses.setdefault("403", problem_responses(403)[403])
                    responses.setdefault("429", problem_responses(429)[429])  # the per-client rate limit
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem.pop("$defs", {}))
        components["ProblemDetails"] = problem
        if "#/components/schemas/HTTPValidationError" not in json.dumps(schema["paths"]):
            components.pop("HTTPValidationError", None)  # FastAPI's default 422 body, replaced above
            components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


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


def _client_abort(request: Request) -> JSONResponse:
    """The client hung up before its body arrived: its abort, not our incident (no traceback, no 500); the answer
    goes nowhere, but the access log shows a 400."""
    log.info("client disconnected before sending its whole body: %s %s", request.method, request.url.path)
    return Problem(400, "client_disconnected", "Client disconnected", "the request body was cut short").response()


def install(app: FastAPI) -> None:
    _document_problems(app)

    @app.middleware("http")
    async def _unhandled(request: Request, call_next):  # noqa: ANN001, ANN202
        # The trace id (and its X-Trace-Id header) comes from payloop.logs.AccessLogMiddleware, outside this one.
        try:
            return await call_next(request)
        except Exception:  # a real incident: logged with its trace id, answered as problem+json
            log.exception("unhandled error (trace_id=%s)", trace_id_var.get())
            return Problem(500, "internal_error", "Internal error", retryable=True).response()

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (unauthenticated := authentication_problem(request)) is not None:
            return unauthenticated.response()
        errors = []
        for err in exc.errors():
            loc = [str(part) for part in err.get("loc", ()) if part not in ("body",)]
            errors.append({"field": ".".join(loc) or "body", "code": str(err.get("type", "invalid")),
                           "message": str(err.get("msg", "invalid value"))})
        if any(err["code"] == card_numbers.CODE for err in errors):
            # Its own code, so clients can tell it from a typo; the value itself is never repeated (nor logged).
            return Problem(422, card_numbers.CODE, "Card number not allowed",
                           "a field holds what looks like a card number; nothing was stored or started. Card "
                           "details are entered at the payment provider, never sent here", errors=errors).response()
        return validation_problem(errors).response()

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> JSONResponse:
        return _client_abort(request)  # raised where a route reads the body itself (webhooks)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI reading a JSON body makes it a 400
            return _client_abort(request)
        if exc.status_code == 400 and (unauthenticated := authentication_problem(request)) is not None:
            return unauthenticated.response()  # a body FastAPI could not parse, sent without credentials
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else None
        return Problem(exc.status_code, code, title, detail, headers=dict(exc.headers or {})).response()
