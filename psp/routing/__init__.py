"""PSP routing: the routing file (config), the pure router, and PSP health with a circuit breaker (health).

`psp.routing.health` (HealthStore, the psp_attempts / psp_circuits tables) and `psp.routing.switches` (ops'
method switches) are imported on their own: they need the database, the rest is pure.
"""

from payloop.yaml_files import Issue
from psp.routing.config import (
    Cost,
    HealthThresholds,
    PspConfig,
    RoutingConfig,
    RoutingConfigError,
    Rule,
    default_routing_path,
    load_routing,
    load_routing_file,
    parse_routing,
)
from psp.routing.router import (
    Candidate,
    CircuitState,
    closed_loop_method,
    payout_choice,
    payout_route,
    route,
)

__all__ = [
    "Candidate", "CircuitState", "Cost", "HealthThresholds", "Issue", "PspConfig", "RoutingConfig",
    "RoutingConfigError", "Rule", "closed_loop_method", "default_routing_path", "load_routing", "load_routing_file",
    "parse_routing", "payout_choice", "payout_route", "route",
]
