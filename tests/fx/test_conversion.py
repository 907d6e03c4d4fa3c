"""Conversion arithmetic: Decimal from strings, integer minor units, the spread and the rounding in the house's
favour, currencies of every exponent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fx import Conversion, convert_credit, convert_debit, parse_rate


def test_a_deposit_credits_the_rate_less_the_spread_rounded_down() -> None:
    # 100.00 USD at 0.9210 = 92.10 EUR; less 50 bps = 91.6395 → 91.63; the house keeps 0.47 of the mid 92.10.
    assert convert_credit(10000, "USD", "EUR", "0.9210", 50) == Conversion(9163, 9210, 47)


def test_a_payout_charges_the_rate_plus_the_spread_rounded_up() -> None:
    # 100.00 USD at 0.9210 = 92.10 EUR; plus 50 bps = 92.5605 → 92.57.
    assert convert_debit(10000, "USD", "EUR", "0.9210", 50) == Conversion(9257, 9210, 47)


def test_exponents_zero_and_three() -> None:
    # 100.00 USD → JPY at 151.237: 15123.7 yen, mid 15124 (half up); less 50 bps 15048.08 → 15048.
    assert convert_credit(10000, "USD", "JPY", "151.237", 50) == Conversion(15048, 15124, 76)
    # 1,000 JPY → EUR at 0.0061: 6.10 EUR exactly; less 50 bps 6.0695 → 6.06.
    assert convert_credit(1000, "JPY", "EUR", "0.0061", 50) == Conversion(606, 610, 4)
    # 10.00 EUR → KWD at 0.3312: 3.312 KWD = 3312 fils; plus 50 bps 3328.56 → 3329.
    assert convert_debit(1000, "EUR", "KWD", "0.3312", 50) == Conversion(3329, 3312, 17)


def test_no_spread_still_rounds_for_the_house() -> None:
    # 0.01 EUR at 0.5 USD is half a cent: the wallet gets 0 on a credit, pays 1 on a debit; the mid is 1 (half up).
    assert convert_credit(1, "EUR", "USD", "0.5", 0) == Conversion(0, 1, 1)
    assert convert_debit(1, "EUR", "USD", "0.5", 0) == Conversion(1, 1, 0)


@pytest.mark.parametrize("rate", ["0", "-1", "1e3", "NaN", "Infinity", " 1", "0.92 ", "", "1" * 22])
def test_a_rate_is_a_positive_plain_decimal_string(rate: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(rate)


def test_a_float_is_no_rate() -> None:
    with pytest.raises(ValueError):
        parse_rate(0.92)  # type: ignore[arg-type]


@given(amount_minor=st.integers(1, 10**13), rate=st.decimals("0.000001", "100000", places=6),
       spread_bps=st.integers(0, 1000))
def test_the_margin_is_never_negative_and_the_sides_bracket_the_mid(amount_minor: int, rate, spread_bps: int
                                                                   ) -> None:
    credit = convert_credit(amount_minor, "USD", "EUR", str(rate), spread_bps)
    debit = convert_debit(amount_minor, "USD", "EUR", str(rate), spread_bps)
    assert credit.wallet_minor <= credit.mid_minor <= debit.wallet_minor
    assert credit.margin_minor == credit.mid_minor - credit.wallet_minor >= 0
    assert debit.margin_minor == debit.wallet_minor - debit.mid_minor >= 0
