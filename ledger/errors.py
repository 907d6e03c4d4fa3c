"""Ledger errors. Each carries a stable, machine-readable `code` that the API maps to its error model."""

from __future__ import annotations


class LedgerError(Exception):
    code = "ledger_error"


class InvalidAccount(LedgerError, ValueError):
    code = "invalid_account"

    def __init__(self, account_id: str, reason: str) -> None:
        super().__init__(f"invalid account id {account_id!r}: {reason}")
        self.account_id = account_id


class InvalidTransfer(LedgerError, ValueError):
    """A malformed request (non-positive amount, same account on both sides, bad id or metadata)."""

    code = "invalid_transfer"


class CurrencyMismatch(LedgerError, ValueError):
    code = "currency_mismatch"

    def __init__(self, account_id: str, account_currency: str, currency: str) -> None:
        super().__init__(f"account {account_id} holds {account_currency}, transfer is in {currency}")
        self.account_id = account_id
        self.account_currency = account_currency
        self.currency = currency


class InsufficientFunds(LedgerError):
    code = "insufficient_funds"

    def __init__(self, account_id: str, available: int) -> None:
        super().__init__(f"insufficient funds in {account_id}: {available} available")
        self.account_id = account_id
        self.available = available


class TransferConflict(LedgerError):
    """The transfer id exists with a different body: never a second posting."""

    code = "transfer_conflict"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"transfer {transfer_id} already exists with a different body")
        self.transfer_id = transfer_id


class TransferNotFound(LedgerError, LookupError):
    code = "transfer_not_found"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"transfer {transfer_id} not found")
        self.transfer_id = transfer_id


class HoldAlreadyResolved(LedgerError):
    """Posting a voided hold, or voiding a posted one."""

    code = "hold_already_resolved"

    def __init__(self, transfer_id: str, status: str) -> None:
        super().__init__(f"hold {transfer_id} is already {status}")
        self.transfer_id = transfer_id
        self.status = status


class NotAHold(LedgerError):
    """post_hold / void_hold on a transfer that was posted directly, not held."""

    code = "not_a_hold"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"transfer {transfer_id} is not a hold")
        self.transfer_id = transfer_id


class PaymentNotFound(LedgerError, LookupError):
    """No `payments` row: the deposit workflow records a payment before any money moves on it."""

    code = "payment_not_found"

    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id} is not recorded")
        self.payment_id = payment_id


class CaptureConflict(LedgerError):
    """A capture recorded again with other amounts (or at another PSP): never a second credit."""

    code = "capture_conflict"

    def __init__(self, payment_id: str, detail: str) -> None:
        super().__init__(f"payment {payment_id}: {detail}")
        self.payment_id = payment_id


class RecordNotFound(LedgerError, LookupError):
    """An unknown refund or dispute."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key} not found")
        self.code = f"{what}_not_found"
        self.key = key


class RecordConflict(LedgerError):
    """A refund or dispute id used again with other parameters: the first one stands, nothing moves."""

    def __init__(self, what: str, key: str, detail: str) -> None:
        super().__init__(f"{what} {key} already exists with {detail}")
        self.code = f"{what}_conflict"
        self.key = key


class AlreadyFinal(LedgerError):
    """A refund or dispute settled with one outcome is told another: money never flips."""

    def __init__(self, what: str, key: str, status: str) -> None:
        super().__init__(f"{what} {key} is already {status}")
        self.code = f"{what}_already_final"
        self.key = key
        self.status = status
