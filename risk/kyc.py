"""KYC gates per market: whether a player must be verified before this deposit or payout."""

from __future__ import annotations

from risk.types import Market

VERIFIED = "verified"
REJECTED = "rejected"


def kyc_gate(market: Market, kyc_status: str, operation: str, lifetime_deposits_eur_minor: int,
             amount_eur_minor: int | None) -> str | None:
    """None when the operation may go ahead; "kyc_rejected" for a deposit of a player whose KYC was rejected;
    "kyc_required" when the market wants the player verified first.

    Deposits: verification before any deposit where the market says so (kyc_before_first_deposit, e.g. GB), else
    once lifetime deposits with this one reach the market's threshold. A deposit whose euro value is unknown (no
    rate) is taken to reach it: a threshold that a missing rate could skip would be no gate.
    Payouts: verification only where the market says kyc_before_payout.
    """
    if kyc_status == VERIFIED:
        return None
    if operation == "payout":
        return "kyc_required" if market.kyc_before_payout else None
    if kyc_status == REJECTED:
        return "kyc_rejected"
    if market.kyc_before_first_deposit:
        return "kyc_required"
    threshold = market.kyc_deposit_threshold_eur_minor
    if threshold is None:
        return None
    if amount_eur_minor is None or lifetime_deposits_eur_minor + amount_eur_minor >= threshold:
        return "kyc_required"
    return None
