"""Money parsing and formatting: exact, exponent-aware, never floats."""

import pytest

from payloop.money import MAX_MINOR_UNITS, MoneyError, to_decimal_string, to_minor_units


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("50.00", "EUR", 5000), ("50", "EUR", 5000), ("0.01", "EUR", 1), ("1000", "JPY", 1000), ("1.234", "KWD", 1234),
     ("50.1", "EUR", 5010)],
)
def test_parses_to_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor_units(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [("50.001", "EUR", "amount_precision"), ("1.5", "JPY", "amount_precision"), ("0", "EUR", "invalid_amount"),
     ("0.00", "EUR", "invalid_amount"), ("-1.00", "EUR", "invalid_amount"), ("1e3", "EUR", "invalid_amount"),
     ("NaN", "EUR", "invalid_amount"), (" 1.00", "EUR", "invalid_amount"), ("01.00", "EUR", "invalid_amount"),
     ("1.00", "XXX", "unsupported_currency"), ("100000000000.01", "EUR", "amount_too_large")],
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
