"""KYC gates per market: whether a player must be verified before this deposit or payout."""

from __future__ import annotations

from risk.types import Market

VERIFIED = "verified"
REJECTED = "rejected"


def kyc_gate(market: Market, kyc_status: str, operation: str) -> str | None:
    """None when the operation may go ahead; "kyc_rejected" for a deposit of a player whose KYC was rejected;
    "kyc_required" when the market wants the player verified first: before any deposit where it says so
    (kyc_before_first_deposit, e.g. GB), before any payout where it says kyc_before_payout.

    The market's deposit threshold (`kyc_deposit_threshold_eur_minor`) is judged by the deposit screening under
    the player's lock (players/controls.py), with the deposits in flight: deposits started together cannot pass
    it together.
    """
    if kyc_status == VERIFIED:
        return None
    if operation == "payout":
        return "kyc_required" if market.kyc_before_payout else None
    if kyc_status == REJECTED:
        return "kyc_rejected"
    return "kyc_required" if market.kyc_before_first_deposit else None
