"""Money: integer minor units plus an ISO 4217 currency inside; decimal strings at the edges. Never floats."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# ISO 4217 minor-unit exponents for the currencies the platform accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2,
    "HUF": 2, "RON": 2, "CAD": 2, "AUD": 2, "NZD": 2, "BRL": 2, "MXN": 2, "ZAR": 2, "INR": 2,
    "TRY": 2, "JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "KWD": 3, "BHD": 3, "JOD": 3, "TND": 3,
}

# Largest amount accepted in one operation, in minor units (fits a signed 64-bit column many times over).
MAX_MINOR_UNITS = 10**13

# Longest amount string looked at; the largest valid one ("100000000000.00" EUR) has 15 characters.
MAX_AMOUNT_CHARS = 32

# ASCII digits only, no sign/exponent/whitespace/leading zeros; used with fullmatch (so no trailing "\n" either).
_AMOUNT_RE = re.compile(r"(?P<whole>0|[1-9][0-9]*)(?:\.(?P<fraction>[0-9]+))?")


class MoneyError(ValueError):
    """An amount or currency that the platform does not accept; `code` is the API's stable error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def currency_exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise MoneyError("unsupported_currency", f"currency {currency!r} is not supported") from None


def to_minor_units(amount: str, currency: str) -> int:
    """Parse a positive decimal string ("50.00") into minor units, exactly: integer arithmetic, never rounding.

    The amount is digits with an optional fraction: no sign, exponent, whitespace or leading zeros, and at most
    MAX_AMOUNT_CHARS characters (invalid_amount). More fraction digits than the currency's exponent are an
    `amount_precision` error even when they are zeros: "50.100" EUR is refused, as "50.001" is (a 422 by design —
    the API speaks decimal strings with at most the currency's exponent of places). Fewer are fine ("50.1" EUR is
    5010). Zero is invalid_amount; more than MAX_MINOR_UNITS is amount_too_large.
    """
    exponent = currency_exponent(currency)
    if not isinstance(amount, str) or len(amount) > MAX_AMOUNT_CHARS:
        raise MoneyError("invalid_amount", "amount must be a positive decimal string such as \"50.00\"")
    match = _AMOUNT_RE.fullmatch(amount)
    if match is None:
        raise MoneyError("invalid_amount", "amount must be a positive decimal string such as \"50.00\"")
    whole, fraction = match.group("whole"), match.group("fraction") or ""
    if len(fraction) > exponent:
        raise MoneyError(
            "amount_precision", f"{currency} amounts have at most {exponent} decimal places"
        )
    units = int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    if units <= 0:
        raise MoneyError("invalid_amount", "amount must be greater than zero")
    if units > MAX_MINOR_UNITS:
        raise MoneyError("amount_too_large", "amount exceeds the largest accepted amount")
    return units


def to_decimal_string(minor_units: int, currency: str) -> str:
    """Format minor units as the API's decimal string, with exactly the currency's exponent of places."""
    exponent = currency_exponent(currency)
    sign = "-" if minor_units < 0 else ""
    digits = str(abs(minor_units)).rjust(exponent + 1, "0")
    if exponent == 0:
        return f"{sign}{digits}"
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def parse_rates(spec: str) -> dict[str, Decimal]:
    """"USD=0.92,GBP=1.17" → {"USD": Decimal("0.92"), …}: the euro value of one unit of each currency."""
    rates = {"EUR": Decimal(1)}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        currency, _, rate = entry.partition("=")
        currency_exponent(currency)
        try:
            value = Decimal(rate)
        except InvalidOperation:
            raise MoneyError("invalid_rate", f"bad rate for {currency}: {rate!r}") from None
        # A currency worth nothing (or NaN, or infinitely much) would make every conversion meaningless.
        if not value.is_finite() or value <= 0:
            raise MoneyError("invalid_rate", f"bad rate for {currency}: {rate!r} (must be a positive number)")
        rates[currency] = value
    return rates


def to_eur_minor(minor_units: int, currency: str, rates: dict[str, Decimal]) -> int:
    """The euro-cent equivalent of an amount (rounded down), for thresholds stated in euros."""
    if currency not in rates:
        raise MoneyError("unsupported_currency", f"no euro rate for {currency}")
    value = Decimal(minor_units).scaleb(-currency_exponent(currency)) * rates[currency]
    return int(value.scaleb(2))


def convert_minor_up(minor_units: int, currency: str, to_currency: str, rates: Mapping[str, Decimal]) -> int:
    """An amount in `to_currency` minor units, through the euro rates, rounded up: exact arithmetic, so a sum
    compared with a limit is never under-counted by rounding. The same currency converts to itself without a rate;
    otherwise a currency without a rate is MoneyError `fx_rate_missing`."""
    if currency == to_currency:
        return minor_units
    missing = [c for c in (currency, to_currency) if c not in rates]
    if missing:
        raise MoneyError("fx_rate_missing", f"no euro rate for {', '.join(missing)}")
    scale = Fraction(10) ** (currency_exponent(to_currency) - currency_exponent(currency))
    return math.ceil(minor_units * Fraction(rates[currency]) / Fraction(rates[to_currency]) * scale)
