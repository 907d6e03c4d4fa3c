"""The wallet: double-entry accounts, idempotent transfers, two-phase holds and balance invariants."""

from ledger import transfer_ids
from ledger.accounts import house_account, parse_account, player_account, psp_clearing_account
from ledger.errors import (
    CurrencyMismatch,
    HoldAlreadyResolved,
    InsufficientFunds,
    InvalidAccount,
    InvalidTransfer,
    LedgerError,
    NotAHold,
    TransferConflict,
    TransferNotFound,
)
from ledger.invariants import InvariantReport, assert_invariants, check_invariants
from ledger.service import AccountBalance, Ledger, Transfer, TransferRequest

__all__ = [
    "AccountBalance",
    "CurrencyMismatch",
    "HoldAlreadyResolved",
    "InsufficientFunds",
    "InvalidAccount",
    "InvalidTransfer",
    "InvariantReport",
    "Ledger",
    "LedgerError",
    "NotAHold",
    "Transfer",
    "TransferConflict",
    "TransferNotFound",
    "TransferRequest",
    "assert_invariants",
    "check_invariants",
    "house_account",
    "parse_account",
    "player_account",
    "psp_clearing_account",
    "transfer_ids",
]
