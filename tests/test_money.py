"""Money parsing and formatting: exact, exponent-aware, never floats."""

import random
from decimal import Decimal

import pytest

from payloop.money import (
    CURRENCY_EXPONENTS,
    MAX_MINOR_UNITS,
    MoneyError,
    currency_exponent,
    to_decimal_string,
    to_minor_units,
)

VALID = [
    ("50.00", "EUR", 5000), ("50", "EUR", 5000), ("0.01", "EUR", 1), ("1000", "JPY", 1000), ("1.234", "KWD", 1234),
    ("50.1", "EUR", 5010), ("100000000000.00", "EUR", MAX_MINOR_UNITS), ("99999999999.99", "EUR", MAX_MINOR_UNITS - 1),
    ("10000000000.000", "KWD", MAX_MINOR_UNITS), ("10000000000000", "JPY", MAX_MINOR_UNITS), ("0.001", "BHD", 1),
]


@pytest.mark.parametrize(("amount", "currency", "minor"), VALID)
def test_parses_to_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor_units(amount, currency) == minor


@pytest.mark.parametrize(("amount", "currency", "minor"), VALID)
def test_valid_amounts_round_trip_through_the_decimal_string(amount: str, currency: str, minor: int) -> None:
    text = to_decimal_string(to_minor_units(amount, currency), currency)
    # The canonical form: the same amount, with exactly the currency's exponent of places.
    whole, _, fraction = amount.partition(".")
    assert text == whole + ("." + fraction.ljust(currency_exponent(currency), "0") if "." in text else "")
    assert to_minor_units(text, currency) == minor


def test_every_formatted_amount_parses_back_to_itself() -> None:
    rng = random.Random(20240601)
    for currency in CURRENCY_EXPONENTS:
        for minor in [1, 9, 10, 99, 100, 101, MAX_MINOR_UNITS - 1, MAX_MINOR_UNITS] + [
            rng.randint(1, MAX_MINOR_UNITS) for _ in range(200)
        ]:
            text = to_decimal_string(minor, currency)
            assert to_minor_units(text, currency) == minor, (text, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [("50.001", "EUR", "amount_precision"), ("1.5", "JPY", "amount_precision"), ("0", "EUR", "invalid_amount"),
     ("0.00", "EUR", "invalid_amount"), ("-1.00", "EUR", "invalid_amount"), ("1e3", "EUR", "invalid_amount"),
     ("NaN", "EUR", "invalid_amount"), (" 1.00", "EUR", "invalid_amount"), ("01.00", "EUR", "invalid_amount"),
     ("1.00", "XXX", "unsupported_currency"), ("100000000000.01", "EUR", "amount_too_large"),
     # Exact, not rounded at Decimal's 28 significant digits:
     ("1.000000000000000000000000000001", "EUR", "amount_precision"),
     ("99999999999.999999999999999999", "EUR", "amount_precision"),
     # More places than the exponent are refused even when they are zeros (a 422 by design):
     ("50.100", "EUR", "amount_precision"), ("1000.0", "JPY", "amount_precision"), ("1.2340", "KWD", "amount_precision"),
     ("1" * 33, "EUR", "invalid_amount"), ("0." + "0" * 30 + "1", "EUR", "invalid_amount"),
     ("1" * 5000, "EUR", "invalid_amount"), ("100000000000.00" + "0" * 18, "EUR", "invalid_amount"),
     ("50.00\n", "EUR", "invalid_amount"), ("50.00 ", "EUR", "invalid_amount"), ("\n50.00", "EUR", "invalid_amount"),
     ("+1.00", "EUR", "invalid_amount"), ("1.", "EUR", "invalid_amount"), (".5", "EUR", "invalid_amount"),
     ("", "EUR", "invalid_amount"), ("1_000", "EUR", "invalid_amount"), ("\u0661", "EUR", "invalid_amount"),
     ("1,00", "EUR", "invalid_amount"), ("Infinity", "EUR", "invalid_amount"), ("1000", "JPY\n", "unsupported_currency"),
     ("10000000000000.001", "KWD", "amount_too_large"), ("10000000000001", "JPY", "amount_too_large")],
)
def test_refuses_what_is_not_an_exact_positive_amount(amount: str, currency: str, code: str) -> None:
    with pytest.raises(MoneyError) as err:
        to_minor_units(amount, currency)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(5000, "EUR", "50.00"), (1, "EUR", "0.01"), (0, "EUR", "0.00"), (-250, "EUR", "-2.50"), (1000, "JPY", "1000"),
     (1234, "KWD", "1.234")],
)
def test_formats_with_the_currency_exponent(minor: int, currency: str, text: str) -> None:
    assert to_decimal_string(minor, currency) == text


def test_a_32_character_amount_is_still_parsed() -> None:
    amount = "1." + "0" * 30
    assert len(amount) == 32
    with pytest.raises(MoneyError) as err:
        to_minor_units(amount, "EUR")
    assert err.value.code == "amount_precision"  # got past the length check to the precision check


@pytest.mark.parametrize("amount", [50, 50.0, None, b"50.00"])
def test_refuses_what_is_not_a_string(amount: object) -> None:
    with pytest.raises(MoneyError) as err:
        to_minor_units(amount, "EUR")  # type: ignore[arg-type]
    assert err.value.code == "invalid_amount"


def test_round_trip_at_the_largest_amount() -> None:
    assert to_minor_units(to_decimal_string(MAX_MINOR_UNITS, "EUR"), "EUR") == MAX_MINOR_UNITS


def test_euro_equivalents_use_exact_decimal_rates() -> None:
    from payloop.money import parse_rates, to_eur_minor

    rates = parse_rates("USD=0.92,JPY=0.0061")
    assert to_eur_minor(200_000, "EUR", rates) == 200_000
    assert to_eur_minor(10_000, "USD", rates) == 9_200
    assert to_eur_minor(100_000, "JPY", rates) == 61_000
    with pytest.raises(MoneyError):
        to_eur_minor(1, "GBP", rates)
    with pytest.raises(MoneyError):
        parse_rates("USD=abc")


def test_rates_must_be_positive_finite_numbers() -> None:
    from payloop.money import parse_rates

    for spec in ("USD=0", "USD=-0.92", "USD=NaN", "USD=Infinity", "USD=", "USD=sNaN"):
        with pytest.raises(MoneyError) as bad:
            parse_rates(spec)
        assert bad.value.code == "invalid_rate", spec


def test_conversions_between_currencies_round_up_exactly() -> None:
    from payloop.money import convert_minor_up, parse_rates

    rates = parse_rates("USD=0.92,GBP=1.17,JPY=0.0061,KWD=2.98")
    assert convert_minor_up(10_000, "USD", "EUR", rates) == 9_200  # exact: no rounding
    assert convert_minor_up(1, "USD", "EUR", rates) == 1  # 0.92 cents: up, never down to 0
    assert convert_minor_up(9_200, "EUR", "USD", rates) == 10_000
    assert convert_minor_up(100, "EUR", "USD", rates) == 109  # 108.69… cents
    assert convert_minor_up(100, "GBP", "USD", rates) == 128  # 1.17 / 0.92 = 1.2717…
    assert convert_minor_up(1_000, "JPY", "EUR", rates) == 610  # 0 decimals → 2
    assert convert_minor_up(1, "EUR", "KWD", rates) == 4  # 2 decimals → 3: 3.355… fils
    assert convert_minor_up(0, "USD", "EUR", rates) == 0
    # Thirds are not representable in decimals: still exact, still up.
    thirds = {"EUR": Decimal(1), "USD": Decimal(3)}
    assert convert_minor_up(100, "EUR", "USD", thirds) == 34  # 33.33…
    assert convert_minor_up(300, "EUR", "USD", thirds) == 100  # exactly 100: not 101


def test_a_conversion_without_a_rate_is_fx_rate_missing() -> None:
    from payloop.money import convert_minor_up, parse_rates

    rates = parse_rates("USD=0.92")
    assert convert_minor_up(5_000, "SEK", "SEK", rates) == 5_000  # the same currency needs no rate
    for source, target in (("SEK", "EUR"), ("EUR", "SEK"), ("SEK", "USD")):
        with pytest.raises(MoneyError) as missing:
            convert_minor_up(5_000, source, target, rates)
        assert missing.value.code == "fx_rate_missing"
