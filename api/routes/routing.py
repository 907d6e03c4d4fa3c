"""PSP routing seen from outside: PSP health for ops, and the payment methods a player can use right now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.auth import Principal, require_scope
from api.errors import problem_responses
from api.inputs import amount_in_minor_units
from api.schemas import PaymentMethods, PspHealthList
from payloop.money import to_decimal_string
from psp.registry import PROVIDERS
from psp.routing import CircuitState, RoutingConfig, route
from psp.routing.health import HealthStore

router = APIRouter(tags=["routing"], responses=problem_responses(503))

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
    it would most likely be routed to. A method whose PSPs all have an open circuit is left out."""
    amount_minor = amount_in_minor_units(amount, currency)
    config = routing_config(request)
    available = available_psps()
    states = await health_store(request).states()
    methods: list[dict[str, str]] = []
    for method in sorted({m for p in config.psps if p.name in available for m in p.methods}):
        candidates = route(config, method=method, currency=currency, amount_minor=amount_minor, country=country,
                           risk=None, payment_id=LISTING_SEED, available=available, health=states)
        if not candidates or all(states.get(c.psp) == CircuitState.OPEN for c in candidates):
            continue
        top = candidates[0]
        psp = config.psp(top.psp)
        methods.append({"method": method, "fee": to_decimal_string(top.fee_minor, currency),
                        "eta": psp.eta if psp is not None else ""})
    return {"currency": currency, "amount": to_decimal_string(amount_minor, currency), "country": country,
            "methods": methods}
