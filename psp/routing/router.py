"""The PSP router: pure and deterministic — the same inputs (including the player id) give the same list.

Deposits (`route`):
1. Eligible PSPs: in the routing file, available at runtime (a provider exists), and taking the method, currency,
   country and amount (per-currency limits). A country of None is served only by PSPs whose countries are ["*"].
2. The first rule whose conditions match AND which names at least one eligible PSP wins (a rule whose PSPs are
   all unavailable — e.g. not deployed — is passed over rather than leaving the payment without a route).
   Its candidates are ordered by rank; within a rank, weighted candidates are drawn by weight from a hash of
   the player id (the payment id when none is given), so the A/B assignment is sticky per player: the same player
   gets the same order on every deposit, a 3-D Secure retry (a new payment) included, and moves only when their
   PSP fails (its circuit open, or the call failing over within the payment). The draw is without replacement, so
   the failover order is weighted too. Each draw places the player at a fixed point in [0, 1) and picks the
   candidate whose share of the weights covers it, so a change of weights moves only the players between the old
   and the new boundary (70/30 → 60/40 moves a seventh of the first PSP's players), not everyone. Unweighted
   candidates are ordered by fee (lowest first), then name. Candidates that are not eligible are dropped.
3. No rule → every eligible PSP, by fee then name.
4. Health: OPEN circuits are skipped — unless every candidate is open, in which case all are returned in the
   order above (a last resort: trying a PSP that is probably down beats failing the payment without trying;
   the PSP-call activity's failures keep the circuit open). HALF_OPEN PSPs keep their place: they are the probe
   (HealthStore.try_probe limits how many calls probe at once). A PSP missing from `health` counts as CLOSED.

Payouts (`payout_route`): PSPs paying out to the method in the currency/country/amount, by payout fee then name;
closed loop puts the player's deposit PSP first when it qualifies and its circuit is not open; same health rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import NamedTuple

from psp.routing.config import CandidateSpec, PspConfig, RoutingConfig


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Candidate(NamedTuple):
    psp: str
    fee_minor: int  # in the payment's currency
    reason: str


def route(
    config: RoutingConfig,
    *,
    method: str,
    currency: str,
    amount_minor: int,
    country: str | None,
    risk: str | None,
    payment_id: str,
    available: set[str] | frozenset[str],
    health: Mapping[str, CircuitState],
    player_id: str | None = None,
) -> list[Candidate]:
    """Ordered PSP candidates for a deposit; [] when no PSP can take it. `player_id` seeds the A/B draws (sticky per
    player); without one, the payment id does."""
    draw_seed = player_id or payment_id
    eligible = {p.name: p for p in config.psps
                if p.name in available and p.accepts(method, currency, country, amount_minor)}
    if not eligible:
        return []
    for index, rule in enumerate(config.rules):
        if not rule.matches(method=method, currency=currency, amount_minor=amount_minor, country=country, risk=risk):
            continue
        ranked = [(rank, spec) for rank, spec in rule.ranked() if spec.psp in eligible]
        if not ranked:
            continue
        label = f"rule {rule.name!r}" if rule.name else f"rule #{index + 1}"
        ordered: list[Candidate] = []
        for rank in sorted({rank for rank, _ in ranked}):
            group = [spec for r, spec in ranked if r == rank]
            # The rule's name (not its place in the file) in the seed: adding a rule above moves no one.
            ordered += _order_rank(group, eligible, amount_minor, currency,
                                   f"{draw_seed}|{rule.name or index}|{rank}", f"{label}, rank {rank}")
        return _apply_health(ordered, health)
    by_cost = sorted(eligible.values(), key=lambda p: (p.fee_minor(amount_minor, currency), p.name))
    return _apply_health([Candidate(p.name, p.fee_minor(amount_minor, currency), "no rule matched: lowest fee")
                          for p in by_cost], health)


def payout_route(
    config: RoutingConfig,
    *,
    method: str,
    currency: str,
    amount_minor: int,
    country: str | None,
    deposit_psp: str | None,
    available: set[str] | frozenset[str],
    health: Mapping[str, CircuitState],
) -> list[Candidate]:
    """Ordered PSP candidates for a payout to `method`; the deposit PSP first when closed loop is possible."""
    eligible = sorted(
        (p for p in config.psps if p.name in available and p.pays_out(method, currency, country, amount_minor)),
        key=lambda p: (p.payout_fee_minor(amount_minor, currency), p.name),
    )
    ordered = [Candidate(p.name, p.payout_fee_minor(amount_minor, currency), "lowest payout fee") for p in eligible]
    loop = next((c for c in ordered if c.psp == deposit_psp), None)
    if loop is not None and health.get(loop.psp, CircuitState.CLOSED) != CircuitState.OPEN:
        ordered.remove(loop)
        ordered.insert(0, loop._replace(reason="closed loop: the PSP the player deposited with"))
    return _apply_health(ordered, health)


def payout_choice(
    config: RoutingConfig,
    *,
    deposit_psp: str | None,
    fallback_methods: Iterable[str],
    currency: str,
    amount_minor: int,
    country: str | None,
    available: set[str] | frozenset[str],
    health: Mapping[str, CircuitState],
) -> tuple[str, Candidate] | None:
    """Where a payout goes, as (method, first candidate): closed loop — back to the method the player last deposited
    with (`deposit_psp`), through that PSP unless its circuit is open, then the other PSPs paying out to that method
    by fee; with no such deposit or route, the fallback PSP's methods. None when no PSP pays it out."""
    methods = [closed_loop_method(config, deposit_psp)] if deposit_psp else []
    methods += sorted(fallback_methods)
    for method in filter(None, methods):
        candidates = payout_route(config, method=method, currency=currency, amount_minor=amount_minor,
                                  country=country, deposit_psp=deposit_psp, available=available, health=health)
        if candidates:
            return method, candidates[0]
    return None


def closed_loop_method(config: RoutingConfig, deposit_psp: str, deposit_method: str | None = None) -> str | None:
    """The method to pay a player back through `deposit_psp`: the deposit's own method when that PSP pays out to
    it, else the first method (alphabetically) the PSP both takes and pays out to, else None."""
    psp = config.psp(deposit_psp)
    if psp is None:
        return None
    if deposit_method is not None and deposit_method in psp.payout_methods:
        return deposit_method
    both = sorted(set(psp.methods) & set(psp.payout_methods))
    return both[0] if both else None


def _order_rank(group: list[CandidateSpec], eligible: dict[str, PspConfig], amount_minor: int, currency: str,
                seed: str, label: str) -> list[Candidate]:
    def fee(spec: CandidateSpec) -> int:
        return eligible[spec.psp].fee_minor(amount_minor, currency)

    if group[0].weight is None:  # validation: a rank is weighted throughout or not at all
        return [Candidate(s.psp, fee(s), f"{label}, lowest fee") for s in sorted(group, key=lambda s: (fee(s), s.psp))]
    total = sum(s.weight or 0 for s in group)
    remaining = sorted(group, key=lambda s: s.psp)  # a stable order for the draw, independent of the file's order
    out: list[Candidate] = []
    draw = 0
    while remaining:
        chosen = _weighted_pick(remaining, f"{seed}|{draw}")
        share = f"weight {chosen.weight}/{total}"
        out.append(Candidate(chosen.psp, fee(chosen), f"{label}, A/B {share}" + (" (failover)" if draw else "")))
        remaining.remove(chosen)
        draw += 1
    return out


def bucket(seed: str, modulus: int) -> int:
    """A uniform-enough number in [0, modulus) from a string: SHA-256, first 8 bytes (bias < modulus / 2**64)."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % modulus


_POINTS = 2**64


def _weighted_pick(specs: list[CandidateSpec], seed: str) -> CandidateSpec:
    """The candidate whose share of the weights covers the seed's point in [0, 1) (point / 2**64, compared in
    integers): the point does not depend on the weights, so new weights move only the players they must."""
    point = bucket(seed, _POINTS)
    total = sum(s.weight or 0 for s in specs)
    covered = 0
    for spec in specs:
        covered += spec.weight or 0
        if point * total < covered * _POINTS:
            return spec
    return specs[-1]  # unreachable: the last candidate covers up to 1


def _apply_health(ordered: list[Candidate], health: Mapping[str, CircuitState]) -> list[Candidate]:
    def state(c: Candidate) -> CircuitState:
        return health.get(c.psp, CircuitState.CLOSED)

    usable = [c for c in ordered if state(c) != CircuitState.OPEN]
    if not usable:  # everything is open: a last resort, in order
        return [c._replace(reason=f"{c.reason}; circuit open (every candidate is)") for c in ordered]
    return [c._replace(reason=f"{c.reason}; circuit half-open (probe)") if state(c) == CircuitState.HALF_OPEN
            else c for c in usable]
