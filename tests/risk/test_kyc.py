"""KYC gates per market, with the shipped markets (default: from EUR 2,000 of deposits; GB: before any deposit
and before a payout)."""

from __future__ import annotations

import pytest

from payloop.settings import Settings
from risk.config import load_risk
from risk.kyc import kyc_gate
from risk.types import Market

MARKETS = load_risk(Settings()).markets
DEFAULT = MARKETS["default"]
GB = MARKETS["GB"]


@pytest.mark.parametrize(
    ("market", "status", "lifetime_eur_minor", "amount_eur_minor", "expected"),
    [
        # GB: verification before the first deposit, however small.
        (GB, "unverified", 0, 1_000, "kyc_required"),
        (GB, "pending", 0, 1_000, "kyc_required"),
        (GB, "verified", 0, 1_000, None),
        # Elsewhere: only once lifetime deposits with this one reach EUR 2,000.
        (DEFAULT, "unverified", 0, 1_000, None),
        (DEFAULT, "unverified", 190_000, 9_999, None),
        (DEFAULT, "unverified", 190_000, 10_000, "kyc_required"),
        (DEFAULT, "unverified", 0, 200_000, "kyc_required"),
        (DEFAULT, "pending", 250_000, 1_000, "kyc_required"),
        (DEFAULT, "verified", 250_000, 1_000, None),
        # A deposit of unknown euro value (no rate) is taken to reach the threshold.
        (DEFAULT, "unverified", 0, None, "kyc_required"),
        (Market(kyc_deposit_threshold_eur_minor=None), "unverified", 10**9, None, None),
        # Rejected KYC: no deposit anywhere.
        (DEFAULT, "rejected", 0, 1_000, "kyc_rejected"),
        (GB, "rejected", 0, 1_000, "kyc_rejected"),
    ],
)
def test_deposits(market: Market, status: str, lifetime_eur_minor: int, amount_eur_minor: int | None,
                  expected: str | None) -> None:
    assert kyc_gate(market, status, "deposit", lifetime_eur_minor, amount_eur_minor) == expected


@pytest.mark.parametrize(
    ("market", "status", "expected"),
    [
        (GB, "unverified", "kyc_required"),
        (GB, "rejected", "kyc_required"),
        (GB, "verified", None),
        # The default market does not ask for KYC before a payout (AML and risk may still send it to review).
        (DEFAULT, "unverified", None),
        (DEFAULT, "rejected", None),
    ],
)
def test_payouts_need_kyc_only_where_the_market_says_so(market: Market, status: str, expected: str | None) -> None:
    assert kyc_gate(market, status, "payout", 10**7, 10**6) == expected


def test_an_unlisted_country_gets_the_default_market() -> None:
    config = load_risk(Settings())
    assert config.market("DE") == DEFAULT != GB
    assert kyc_gate(config.market("DE"), "unverified", "deposit", 0, 1_000) is None
    assert kyc_gate(config.market("GB"), "unverified", "deposit", 0, 1_000) == "kyc_required"
