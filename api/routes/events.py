"""Outbound events (README: Events (outbound webhooks)), scope `payments`, a client's own only:

- `POST /v1/event-endpoints {url, events?}` → 201 with the endpoint's signing secret, shown this once;
  `GET /v1/event-endpoints` (no secrets); `DELETE /v1/event-endpoints/{id}` (its deliveries not made yet stop).
- `GET /v1/events?after=&limit=` → `{events, next_after}`, ascending: a platform catches up on what it missed.

Ops (scope `ops`): `GET /v1/ops/event-deliveries?state=` (newest first, keyset pages) and
`POST /v1/ops/event-deliveries/{id}/replay` (a failed or delivered one sent again, audited).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api import corrections
from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses, validation_problem
from api.idempotency import IDEMPOTENCY_KEY_DOC, answer_json, answer_once, resolve_key
from api.schemas import IdempotencyKey, OpsActionRequest
from events.endpoints import Endpoint, UrlRefused, check_url, client_endpoints, create_endpoint, delete_endpoint
from events.outbox import (
    LIST_LIMIT_MAX,
    Delivery,
    ReplayRefused,
    client_events,
    event_seq,
    get_delivery,
    list_deliveries,
    replay_in,
)
from events.payloads import EVENT_TYPES

router = APIRouter(tags=["events"], responses=problem_responses(503))
ops_router = APIRouter(prefix="/v1/ops/event-deliveries", tags=["ops"], responses=problem_responses(503))
ENDPOINT = "event_endpoints.create"
EventType = Literal[tuple(sorted(EVENT_TYPES))]  # type: ignore[valid-type]
# A URL is ASCII (RFC 3986): an international host in its punycode form (xn--…).
EndpointUrl = Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://[\x21-\x7e]+$"),
                        Field(examples=["https://casino.example/payloop/events"])]
Payments = Annotated[Principal, Depends(require_scope("payments"))]
Ops = Annotated[Principal, Depends(require_scope("ops"))]
ROW_ID_MAX = 2**63 - 1  # a delivery id is a BIGINT: past it, a 422 rather than the database's overflow


class EndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "url": "https://casino.example/payloop/events", "events": ["payment.succeeded", "payment.failed"]}]})

    url: EndpointUrl
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES),
                                           description="the event types to send; every type when absent")
    idempotency_key: IdempotencyKey | None = None


class EndpointView(BaseModel):
    id: str
    url: str
    events: list[str] | None = Field(description="null: every type")
    created_at: str


class EndpointCreated(EndpointView):
    secret: str = Field(description="`whsec_…`: verify each delivery's signature with it; shown only here")


class EndpointList(BaseModel):
    endpoints: list[EndpointView]


class EventView(BaseModel):
    id: str = Field(examples=["evt_0000000000000042"])
    type: str
    created_at: str
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[EventView]
    next_after: str | None = Field(description="pass as `after` for what came since; null when nothing ever came")


class DeliveryView(BaseModel):
    id: int
    event_id: str
    event_type: str
    client_id: str
    endpoint_id: str
    state: str = Field(description="pending | delivering | delivered | failed")
    attempts: int
    next_attempt_at: str
    last_status_code: int | None
    last_error: str | None
    created_at: str
    delivered_at: str | None


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryView]
    next_before: int | None = Field(description="pass as `before` for the next (older) page; null on the last")


def _endpoint_view(endpoint: Endpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "url": endpoint.url, "events": endpoint.event_types,
            "created_at": endpoint.created_at.isoformat()}


def _delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id, "event_id": delivery.event_id, "event_type": delivery.event_type,
        "client_id": delivery.client_id, "endpoint_id": delivery.endpoint_id, "state": delivery.state,
        "attempts": delivery.attempts, "next_attempt_at": delivery.next_attempt_at.isoformat(),
        "last_status_code": delivery.last_status_code, "last_error": delivery.last_error,
        "created_at": delivery.created_at.isoformat(),
        "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
    }


@router.post("/v1/event-endpoints", status_code=201, response_model=EndpointCreated,
             responses=problem_responses(422))
async def register_endpoint(
    body: EndpointRequest, request: Request, principal: Payments,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", examples=["endpoint-1"],
                                                  description=IDEMPOTENCY_KEY_DOC)] = None,
) -> JSONResponse:
    """Registers an endpoint for the client's events. Outside dev mode the URL must be https and reach a public
    address. The answer holds the signing secret (a retry with the same Idempotency-Key repeats it while the endpoint
    exists; 409 `endpoint_deleted` after it was deleted)."""
    key = resolve_key(idempotency_key, body.idempotency_key)
    try:
        await check_url(body.url, allow_private=request.app.state.settings.dev_mode)
    except UrlRefused as refused:
        raise validation_problem([{"field": "url", "code": refused.code, "message": str(refused)}],
                                 str(refused)) from None
    event_types = sorted(set(body.events)) if body.events is not None else None

    async def create(endpoint_id: str) -> tuple[int, dict[str, Any]]:
        endpoint = await create_endpoint(request.app.state.engine, endpoint_id=endpoint_id,
                                         client_id=principal.client_id, url=body.url, event_types=event_types,
                                         now=datetime.now(timezone.utc))
        return 201, _endpoint_view(endpoint)  # stored for retries: the secret stays in event_endpoints alone

    status, stored, replayed = await answer_once(
        request.app.state.idempotency, principal.client_id, ENDPOINT, key,
        body.model_dump(exclude={"idempotency_key"}), "we", create)
    return answer_json(status, stored | {"secret": await _secret(request, principal.client_id, stored["id"])},
                       replayed)


async def _secret(request: Request, client_id: str, endpoint_id: str) -> str:
    """The endpoint's signing secret, read where it lives (answer_once's `present` is synchronous, so the answer is
    completed here); 409 when the endpoint the Idempotency-Key created has been deleted since."""
    for endpoint in await client_endpoints(request.app.state.engine, client_id):
        if endpoint.id == endpoint_id:
            return endpoint.secret
    raise Problem(409, "endpoint_deleted", "Endpoint deleted",
                  "the endpoint this Idempotency-Key registered has been deleted; register again with a new key")


@router.get("/v1/event-endpoints", response_model=EndpointList)
async def list_endpoints(request: Request, principal: Payments) -> dict[str, Any]:
    return {"endpoints": [_endpoint_view(e) for e in await client_endpoints(request.app.state.engine,
                                                                             principal.client_id)]}


@router.delete("/v1/event-endpoints/{endpoint_id}", status_code=204, responses=problem_responses(404))
async def remove_endpoint(
    endpoint_id: Annotated[str, Path(pattern=r"^we_[0-9a-f]{24}$")], request: Request, principal: Payments,
) -> Response:
    """Deletes the endpoint; its deliveries not made yet end `failed` ("endpoint deleted")."""
    if not await delete_endpoint(request.app.state.engine, principal.client_id, endpoint_id,
                                 datetime.now(timezone.utc)):
        raise Problem(404, "endpoint_not_found", "Endpoint not found", "the client has no endpoint with this id")
    return Response(status_code=204)


@router.get("/v1/events", response_model=EventPage, responses=problem_responses(422))
async def list_events(
    request: Request, principal: Payments,
    after: Annotated[str | None, Query(max_length=40, examples=["evt_0000000000000042"],
                                       description="the last event id seen; from the first when absent")] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 100,
) -> dict[str, Any]:
    """The client's events after `after`, oldest first: what a platform missed, whatever its endpoints got."""
    after_seq = 0
    if after is not None and (after_seq := event_seq(after)) is None:
        raise validation_problem([{"field": "query.after", "code": "invalid", "message": "not an event id"}],
                                 "after must be an event id (evt_ and 16 digits)")
    page = await client_events(request.app.state.engine, principal.client_id, after_seq=after_seq, limit=limit)
    return {"events": [event.body() for event in page], "next_after": page[-1].id if page else after}


@ops_router.get("", response_model=DeliveryPage, responses=problem_responses(422))
async def ops_deliveries(
    request: Request, _: Ops,
    state: Literal["pending", "delivering", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 100,
    before: Annotated[int | None, Query(ge=1, le=ROW_ID_MAX, description="the previous page's next_before")] = None,
) -> dict[str, Any]:
    """Deliveries of every client, newest first; `state=failed` is what ran out of retries."""
    page, next_before = await list_deliveries(request.app.state.engine, state=state, limit=limit, before=before)
    return {"deliveries": [_delivery_view(d) for d in page], "next_before": next_before}


@ops_router.post("/{delivery_id}/replay", response_model=DeliveryView, responses=problem_responses(404, 409, 422))
async def replay_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=ROW_ID_MAX)], request: Request, principal: Ops,
    body: OpsActionRequest | None = None,
) -> dict[str, Any]:
    """Sends a failed (or delivered) delivery again from now, with a fresh retry schedule; audited
    (`event_delivery.replay`)."""
    now = datetime.now(timezone.utc)
    engine = request.app.state.engine
    async with engine.begin() as conn:
        try:
            found = await replay_in(conn, delivery_id, now)
        except ReplayRefused as refused:
            raise Problem(409, refused.code, "Delivery not replayable", str(refused)) from None
        if not found:
            raise Problem(404, "delivery_not_found", "Delivery not found", "no delivery has this id")
        await corrections.record(conn, principal, "event_delivery.replay", f"event_delivery:{delivery_id}", {},
                                 body, now)
    return _delivery_view(await get_delivery(engine, delivery_id))
