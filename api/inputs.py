"""Checks of client input that need more than a schema: amounts against their currency."""

from __future__ import annotations

from collections.abc import Collection

from api.errors import Problem
from payloop.money import MoneyError, to_minor_units


def amount_in_minor_units(amount: str, currency: str, field: str = "amount") -> int:
    try:
        return to_minor_units(amount, currency)
    except MoneyError as err:
        where = "currency" if err.code == "unsupported_currency" else field
        raise Problem(422, err.code, "Invalid amount", str(err),
                      errors=[{"field": where, "code": err.code, "message": str(err)}]) from None


def check_sandbox_scenario(scenario: str | None, allowed: frozenset[str]) -> None:
    if scenario is not None and scenario not in allowed:
        raise Problem(422, "validation_error", "Validation failed", f"sandbox_scenario must be one of {sorted(allowed)}",
                      errors=[{"field": "meta.sandbox_scenario", "code": "unknown", "message": "unknown scenario"}])


def check_sandbox_card(card: str | None, allowed: Collection[str]) -> None:
    if card is not None and card not in allowed:
        raise Problem(422, "validation_error", "Validation failed", f"sandbox_card must be one of {sorted(allowed)}",
                      errors=[{"field": "meta.sandbox_card", "code": "unknown", "message": "unknown test card"}])
