"""Every ledger transfer id, in one place. An id is derived from the business operation and the step, never
random: posting the same step again finds the first transfer (UNIQUE id), so a retried activity or a re-run
workflow never moves money twice."""

from __future__ import annotations

# What a PSP charges a fee for: `fee(operation, reference)`.
FEE_OPERATIONS = frozenset({"capture", "refund", "payout", "chargeback"})


def deposit_credit(payment_id: str) -> str:
    """A captured deposit credited to the player (PSP clearing → player)."""
    return f"deposit:{payment_id}:credit"


def payout_hold(payout_id: str) -> str:
    """A payout's hold (player → house payouts, pending until posted or voided)."""
    return f"payout:{payout_id}:hold"


def game(transaction_id: str, kind: str) -> str:
    """A game-round move: `kind` is bet, win or rollback."""
    return f"game:{transaction_id}:{kind}"


def fee(operation: str, reference: str) -> str:
    """A PSP's fee for one operation (house fees → PSP clearing): `reference` is the payment id (capture), refund
    id (refund), payout id (payout) or `<psp>:<dispute_id>` (chargeback)."""
    if operation not in FEE_OPERATIONS:
        raise ValueError(f"unknown fee operation {operation!r}")
    return f"fee:{operation}:{reference}"


def refund_hold(refund_id: str) -> str:
    """What the player funds of a refund (player → PSP clearing, pending until the PSP's final word)."""
    return f"refund:{refund_id}:hold"


def refund_shortfall(refund_id: str) -> str:
    """The part of a refund the player's balance did not cover (house player receivables → PSP clearing, pending)."""
    return f"refund:{refund_id}:shortfall"


def dispute_key(psp: str, dispute_id: str) -> str:
    """A dispute's reference in the ledger and its fee's: dispute ids are unique per PSP only."""
    return f"{psp}:{dispute_id}"


def dispute(psp: str, dispute_id: str, step: str) -> str:
    """A dispute's move: `step` is one of DISPUTE_STEPS (see ledger/disputes.py for what each moves)."""
    if step not in DISPUTE_STEPS:
        raise ValueError(f"unknown dispute step {step!r}")
    return f"dispute:{dispute_key(psp, dispute_id)}:{step}"


# A step's transfer kind is `dispute_<step>` and its reference the dispute key: the invariants find a dispute's
# transfers by kind and reference.
DISPUTE_STEPS = ("pulled", "hold", "shortfall", "chargeback", "returned", "shortfall_reversal")


def settlement(kind: str, item_key: str) -> str:
    """A matched settlement line's net between the PSP clearing and house:bank; `kind` a settlement line kind
    (payloop/settlement.py), `item_key` the ledger item it settled (ledger/reconciliation.py)."""
    return f"settlement:{kind}:{item_key}"


def settlement_step(settlement_id: str, step: str) -> str:
    """A settlement's second move (SETTLEMENT_STEPS): `fee_difference` (a fee within tolerance, between the PSP's
    fee account and its clearing) or `paid_out` (a payout the PSP paid, house:payouts → clearing)."""
    if step not in SETTLEMENT_STEPS:
        raise ValueError(f"unknown settlement step {step!r}")
    return f"{settlement_id}:{step}"


def recon(case_id: str, step: str) -> str:
    """A reconciliation case's resolution move (RECON_STEPS); `settlement` settles the case's line like a matched
    one, with its own settlement_step()s."""
    if step not in RECON_STEPS:
        raise ValueError(f"unknown reconciliation step {step!r}")
    return f"recon:{case_id}:{step}"


SETTLEMENT_STEPS = ("fee_difference", "paid_out")
RECON_STEPS = ("settlement", "item_settlement", "adjustment", "write_off", "write_off_ledger")


FX_LEGS = ("wallet", "margin", "paid", "shortfall")


def fx(kind: str, reference: str, leg: str) -> str:
    """A conversion's leg (ledger/fx.py): `kind` deposit or payout, `reference` its id, `leg` one of FX_LEGS; or
    a return of a converted deposit's: `kind` refund or dispute, `reference` the refund id or dispute key."""
    if leg not in FX_LEGS:
        raise ValueError(f"unknown FX leg {leg!r}")
    return f"fx:{kind}:{reference}:{leg}"
