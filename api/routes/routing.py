"""PSP routing seen from outside: PSP health for ops, and the payment methods a player can use right now; and two
ops corrections on routing (README: Corrections), each audited with the change in one transaction:

- `POST /v1/ops/psps/{psp}/circuit {state: open|closed|auto}`: hold a PSP's circuit open or closed, or hand it back
  to the breaker (psp/routing/health.py, honoured by every process through the database).
- `GET /v1/ops/methods`, `POST /v1/ops/methods/{method} {enabled}`: switch a payment method off (hidden from
  `GET /v1/payment-methods`, refused at `POST /v1/payments/init` with `method_disabled`) and on again."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from api import corrections
from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses
from api.inputs import amount_in_minor_units
from api.schemas import (
    CircuitForceRequest, MethodSwitchList, MethodSwitchRequest, MethodSwitchView, PaymentMethods, PspHealthList,
    PspHealthView,
)
from payloop.money import to_decimal_string
from psp.registry import PROVIDERS
from psp.routing import CircuitState, RoutingConfig, route, switches
from psp.routing.health import HealthStore

router = APIRouter(tags=["routing"], responses=problem_responses(503))
ops_router = APIRouter(prefix="/v1/ops", tags=["ops"], responses=problem_responses(503))
Ops = Annotated[Principal, Depends(require_scope("ops"))]

# A stable seed for the listing's weighted choices (the listing shows what a typical payment gets).
LISTING_SEED = "payment-methods"


def routing_config(request: Request) -> RoutingConfig:
    return request.app.state.routing


def health_store(request: Request) -> HealthStore:
    state = request.app.state
    store = getattr(state, "psp_health", None)
    if store is None:  # the app's lifespan normally makes it; be safe when it did not
        store = state.psp_health = HealthStore(state.engine, routing_config(request))
    return store


def disabled_methods(request: Request) -> switches.DisabledMethods:
    return request.app.state.disabled_methods


def available_psps() -> frozenset[str]:
    return frozenset(p.name for p in PROVIDERS)


@router.get("/v1/ops/psp-health", tags=["ops"], response_model=PspHealthList)
async def psp_health(
    request: Request, _principal: Annotated[Principal, Depends(require_scope("ops"))]
) -> dict[str, Any]:
    """Each PSP's circuit and its success and error rates over the attempts its circuit breaker judges."""
    return {"psps": await psp_health_now(request)}


async def psp_health_now(request: Request) -> list[dict[str, Any]]:
    """Every PSP's health as the route shows it (and the ops console)."""
    snapshot = await health_store(request).snapshot(registered=available_psps())
    return [health.as_json() for health in snapshot.values()]


@router.get("/v1/payment-methods", tags=["payments"], response_model=PaymentMethods)
async def payment_methods(
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("payments"))],
    currency: Annotated[str, Query(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. EUR")],
    amount: Annotated[str, Query(max_length=32, description='decimal string, e.g. "50.00"')],
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2")] = None,
) -> dict[str, Any]:
    """The methods a deposit of `amount` `currency` from `country` can use now, with the fee and ETA of the PSP
    it would most likely be routed to. A method whose PSPs all have an open circuit, or that ops switched off,
    is left out."""
    amount_minor = amount_in_minor_units(amount, currency)
    return {"currency": currency, "amount": to_decimal_string(amount_minor, currency), "country": country,
            "methods": await methods_now(request, currency, amount_minor, country)}


async def methods_now(request: Request, currency: str, amount_minor: int, country: str | None) -> list[dict[str, Any]]:
    """The methods a deposit can use now, each with its likeliest PSP, its fee (minor units and decimal string)
    and ETA (the route and the checkout)."""
    config = routing_config(request)
    available = available_psps()
    states = await health_store(request).states()
    switched_off = await disabled_methods(request).get()
    methods: list[dict[str, Any]] = []
    for method in sorted({m for p in config.psps if p.name in available for m in p.methods} - switched_off):
        candidates = route(config, method=method, currency=currency, amount_minor=amount_minor, country=country,
                           risk=None, payment_id=LISTING_SEED, available=available, health=states)
        if not candidates or all(states.get(c.psp) == CircuitState.OPEN for c in candidates):
            continue
        top = candidates[0]
        psp = config.psp(top.psp)
        methods.append({"method": method, "fee": to_decimal_string(top.fee_minor, currency),
                        "fee_minor": top.fee_minor, "eta": psp.eta if psp is not None else ""})
    return methods


# --- ops: forced circuits, method switches -----------------------------------------------------------------------


@ops_router.post("/psps/{psp}/circuit", response_model=PspHealthView, responses=problem_responses(404, 422))
async def force_circuit(
    psp: str, body: CircuitForceRequest, request: Request, principal: Ops,
) -> dict[str, Any]:
    """Holds the PSP's circuit `open` (the router treats it as open — no traffic while another candidate is
    usable — and it never turns half-open) or `closed` (failures never open it), or `auto`: back to the circuit
    breaker, closed, its window starting afresh. Every process honours it at once (it is kept in the database).
    The answer is the PSP's health as `GET /v1/ops/psp-health` shows it."""
    return await force(request, principal, psp, body)


async def force(request: Request, principal: Principal, psp: str, body: CircuitForceRequest) -> dict[str, Any]:
    """The circuit forced (the route and the ops console): 404 unknown_psp; the PSP's health after."""
    if routing_config(request).psp(psp) is None:
        raise Problem(404, "unknown_psp", "Unknown PSP", "no PSP of that name is in the routing file")
    forced = None if body.state == "auto" else CircuitState(body.state)
    now = datetime.now(timezone.utc)

    async def audited(conn: AsyncConnection) -> None:
        await corrections.record(conn, principal, "psp.circuit.force", f"psp:{psp}", {"state": body.state}, body,
                                 now)

    store = health_store(request)
    await store.force(psp, forced, now, on_forced=audited)
    return (await store.snapshot(registered=available_psps()))[psp].as_json()


@ops_router.get("/methods", response_model=MethodSwitchList)
async def list_method_switches(request: Request, _principal: Ops) -> MethodSwitchList:
    """Every payment method with its switch (a method never switched is on)."""
    return MethodSwitchList(methods=await method_switches(request))


async def method_switches(request: Request) -> list[MethodSwitchView]:
    """Every method's switch (the route and the ops console's methods page)."""
    found = await switches.switches(request.app.state.engine, request.app.state.methods)
    return [_switch_view(found_switch) for found_switch in found]


@ops_router.post("/methods/{method}", response_model=MethodSwitchView, responses=problem_responses(404, 422))
async def switch_method(
    method: str, body: MethodSwitchRequest, request: Request, principal: Ops,
) -> MethodSwitchView:
    """Switches a payment method off (`enabled: false`: hidden from `GET /v1/payment-methods`, new deposits
    refused with 422 `method_disabled`; deposits already started go on) or on again."""
    return await switch(request, principal, method, body)


async def switch(request: Request, principal: Principal, method: str, body: MethodSwitchRequest) -> MethodSwitchView:
    """The method switched (the route and the ops console): 404 unknown_method."""
    if method not in request.app.state.methods:
        raise Problem(404, "unknown_method", "Unknown method", "no PSP takes a payment method of that name")
    now = datetime.now(timezone.utc)

    async def audited(conn: AsyncConnection) -> None:
        await corrections.record(conn, principal, "method.switch", f"method:{method}", {"enabled": body.enabled},
                                 body, now)

    switched = await switches.switch(request.app.state.engine, method, body.enabled, principal.client_id, now,
                                     on_switched=audited)
    disabled_methods(request).forget()  # this process honours it at once; the others within their cache's TTL
    return _switch_view(switched)


def _switch_view(switch: switches.MethodSwitch) -> MethodSwitchView:
    return MethodSwitchView(method=switch.method, enabled=switch.enabled,
                            updated_at=switch.updated_at.isoformat() if switch.updated_at else None,
                            updated_by=switch.updated_by)
