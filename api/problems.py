"""The `Problem` exception every route, dependency and store raises: one RFC 9457 problem+json answer.

A module of its own so that both `api.errors` (which answers them) and `api.auth` (which raises them, and which
`api.errors` asks about unauthenticated requests) import it without importing each other.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from payloop.logs import trace_id_var  # set per request by payloop.logs.AccessLogMiddleware

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://docs.payloop.dev/errors/"


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
        # The payment or payout a failed request may have started (set by api.idempotency.answer_once on a 5xx):
        # for the checkout to follow it, never shown in the body.
        self.resource_id: str | None = None

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
