"""RiskFacts for the rule tests: a clean deposit (no rule fires on it), changed one fact at a time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from risk.types import RiskFacts

CLEAN = RiskFacts(
    operation="deposit",
    amount_minor=5_000,
    currency="EUR",
    amount_eur_minor=5_000,
    method="card",
    country="DE",
    ip_country="DE",
    device_id="dev-1",
    instrument="fp_1",
    bin_country="DE",
    kyc_status="verified",
    account_age_days=30,
    lifetime_deposits_eur_minor=50_000,
    lifetime_deposit_count=5,
    lifetime_payouts_eur_minor=10_000,
    chargebacks=0,
    players_on_device=0,
    players_on_instrument=0,
    velocity={"count_player_1h": 0, "count_device_24h": 0, "count_instrument_24h": 0, "count_ip_1h": 0},
)


def facts(**changes: Any) -> RiskFacts:
    """CLEAN with some facts changed; `count_*` keys change the velocity counts."""
    velocity = dict(CLEAN.velocity)
    for name in [name for name in changes if name.startswith("count_")]:
        velocity[name] = changes.pop(name)
    return replace(CLEAN, velocity=velocity, **changes)
