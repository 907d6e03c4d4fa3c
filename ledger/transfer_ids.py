"""Every ledger transfer id, in one place. An id is derived from the business operation and the step, never
random: posting the same step again finds the first transfer (UNIQUE id), so a retried activity or a re-run
workflow never moves money twice."""

from __future__ import annotations


def deposit_credit(payment_id: str) -> str:
    """A captured deposit credited to the player (PSP clearing → player)."""
    return f"deposit:{payment_id}:credit"


def payout_hold(payout_id: str) -> str:
    """A payout's hold (player → house payouts, pending until posted or voided)."""
    return f"payout:{payout_id}:hold"


def game(transaction_id: str, kind: str) -> str:
    """A game-round move: `kind` is bet, win or rollback."""
    return f"game:{transaction_id}:{kind}"
