"""Conversion arithmetic on a locked rate: Decimal from strings, integer minor units out, never floats.

The spread (basis points) is applied in the house's favour, and so is the rounding to the wallet currency's minor
unit: a credit (deposit) rounds down, a debit (payout) rounds up. The mid value (at the rate without spread,
rounded half up) is what the house's FX position moves by; the margin is the wallet amount's distance from it, so
it is never negative and the ledger books it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, InvalidOperation

from payloop.money import currency_exponent

BPS = 10_000
# Wide enough that no product of an amount (at most 10^13 minor units) and a rate is ever rounded before we say.
_EXACT = Context(prec=60)
_MAX_RATE_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Conversion:
    wallet_minor: int  # credited to (deposit) or charged from (payout) the wallet
    mid_minor: int  # the same amount at the mid rate, half up: what the house's FX position moves by
    margin_minor: int  # |wallet_minor - mid_minor|, the house's, in the wallet currency


def parse_rate(rate: str) -> Decimal:
    """A positive, finite decimal string ("0.9210"); ValueError for anything else (floats never get here)."""
    if not isinstance(rate, str) or not 0 < len(rate) <= _MAX_RATE_DIGITS + 1:
        raise ValueError(f"a rate is a decimal string of at most {_MAX_RATE_DIGITS} digits")
    try:
        value = Decimal(rate)
    except InvalidOperation:
        raise ValueError(f"not a decimal rate: {rate!r}") from None
    if not value.is_finite() or value <= 0 or not all(c.isdigit() or c == "." for c in rate):
        raise ValueError(f"a rate must be a positive decimal such as \"0.9210\": {rate!r}")
    return value


def _exact(amount_minor: int, from_currency: str, to_currency: str, rate: Decimal) -> Decimal:
    shift = currency_exponent(to_currency) - currency_exponent(from_currency)
    return _EXACT.multiply(_EXACT.multiply(Decimal(amount_minor), rate), Decimal(10) ** shift)


def _to_minor(value: Decimal, rounding: str) -> int:
    return int(value.quantize(Decimal(1), rounding=rounding, context=_EXACT))


def _check(amount_minor: int, spread_bps: int) -> None:
    if amount_minor <= 0:
        raise ValueError("amount_minor must be positive")
    if not 0 <= spread_bps < BPS:
        raise ValueError(f"spread_bps must be within 0..{BPS - 1}")


def convert_credit(amount_minor: int, from_currency: str, to_currency: str, rate: str, spread_bps: int
                   ) -> Conversion:
    """What a deposit of `amount_minor` credits a wallet in `to_currency`: rate less the spread, rounded down."""
    _check(amount_minor, spread_bps)
    exact = _exact(amount_minor, from_currency, to_currency, parse_rate(rate))
    mid = _to_minor(exact, ROUND_HALF_UP)
    wallet = _to_minor(_EXACT.divide(_EXACT.multiply(exact, Decimal(BPS - spread_bps)), Decimal(BPS)), ROUND_FLOOR)
    return Conversion(wallet, mid, mid - wallet)


def convert_debit(amount_minor: int, from_currency: str, to_currency: str, rate: str, spread_bps: int
                  ) -> Conversion:
    """What a payout of `amount_minor` charges a wallet in `to_currency`: rate plus the spread, rounded up."""
    _check(amount_minor, spread_bps)
    exact = _exact(amount_minor, from_currency, to_currency, parse_rate(rate))
    mid = _to_minor(exact, ROUND_HALF_UP)
    wallet = _to_minor(_EXACT.divide(_EXACT.multiply(exact, Decimal(BPS + spread_bps)), Decimal(BPS)),
                       ROUND_CEILING)
    return Conversion(wallet, mid, wallet - mid)
