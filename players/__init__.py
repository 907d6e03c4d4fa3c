"""Player controls: KYC status, responsible-gaming limits, self-exclusion, closed accounts; the audit log of who
changed what, and the player notifications outbox.

A domain package beside `ledger/`: it may import the foundation (`payloop`) and `ledger/` reads, nothing above.
"""

from players.controls import (
    LIMIT_INCREASE_DELAY,
    DepositGate,
    DepositLimit,
    GateVerdict,
    KycStatus,
    LimitPeriod,
    LimitHeadroom,
    LimitState,
    LimitUsage,
    PlayerControls,
    PlayerProfile,
    PlayerRuleError,
    PlayerStore,
    ScreeningDecision,
    change_limit,
    screen_deposit,
    window_start,
)

__all__ = [
    "LIMIT_INCREASE_DELAY",
    "DepositGate",
    "DepositLimit",
    "GateVerdict",
    "KycStatus",
    "LimitPeriod",
    "LimitHeadroom",
    "LimitState",
    "LimitUsage",
    "PlayerControls",
    "PlayerProfile",
    "PlayerRuleError",
    "PlayerStore",
    "ScreeningDecision",
    "change_limit",
    "screen_deposit",
    "window_start",
]
