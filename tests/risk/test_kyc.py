"""KYC gates per market, with the shipped markets (default: from EUR 2,000 of deposits — judged by the deposit
screening, tests/test_players.py; GB: before any deposit and before a payout)."""

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
    ("market", "status", "expected"),
    [
        # GB: verification before the first deposit, however small.
        (GB, "unverified", "kyc_required"),
        (GB, "pending", "kyc_required"),
        (GB, "verified", None),
        # Elsewhere not before the first (the threshold is the deposit screening's: tests/test_players.py).
        (DEFAULT, "unverified", None),
        (DEFAULT, "pending", None),
        (DEFAULT, "verified", None),
        # Rejected KYC: no deposit anywhere.
        (DEFAULT, "rejected", "kyc_rejected"),
        (GB, "rejected", "kyc_rejected"),
    ],
)
def test_deposits(market: Market, status: str, expected: str | None) -> None:
    assert kyc_gate(market, status, "deposit") == expected


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
    assert kyc_gate(market, status, "payout") == expected


def test_an_unlisted_country_gets_the_default_market() -> None:
    config = load_risk(Settings())
    assert config.market("DE") == DEFAULT != GB
    assert kyc_gate(config.market("DE"), "unverified", "deposit") is None
    assert kyc_gate(config.market("GB"), "unverified", "deposit") == "kyc_required"
    assert config.market("DE").kyc_deposit_threshold_eur_minor == 200_000
