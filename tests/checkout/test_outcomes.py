"""Every code a deposit or a payout can end with gets words of its own on the status page, or is named here as one
whose status's words are right — never a provider's decline for what was a cancellation or an outage. The codes:
the PSPs' error tables (psp.registry.error_tables()), the sandbox PSPs' failure codes, and the workflows' own
(workflows/deposit.py, workflows/withdrawal.py, with the screening's and the payout check's refusals)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

import workflows
from api.checkout.messages import (
    DEPOSIT_CODES,
    DEPOSIT_FAILURES,
    DEPOSIT_STATUSES,
    PAYOUT_CODES,
    PAYOUT_FAILURES,
    PAYOUT_STATUSES,
    Outcome,
    deposit_outcome,
    payout_outcome,
)
from payloop.psp_decision import PspDecision
from psp.registry import error_tables
from psp.sandbox.app import BANK_REJECTED_CODE, DECLINE_CODES, PAYOUT_DECLINE_CODE, PAYOUT_FAILURE_CODE
from workflows.deposit import _REFUSAL_CODES
from workflows.psp_step import PAYMENT_CALLS, PAYOUT_CALLS

PSP_CODES = {code for table in error_tables().values() for code in table}
# A PSP's "no" (as opposed to "not now"): what a payout that fails at a PSP ends with.
PSP_REFUSALS = {code for table in error_tables().values() for code, decision in table.items()
                if decision in (PspDecision.HARD_DECLINE, PspDecision.STEP_UP)}
# The sandbox's failure codes in its status answers and webhooks (psp/sandbox/app.py).
SANDBOX_DEPOSIT_FAILURES = {*DECLINE_CODES.values(), "3ds_failed", BANK_REJECTED_CODE}
SANDBOX_PAYOUT_FAILURES = {PAYOUT_DECLINE_CODE, PAYOUT_FAILURE_CODE}

# Every code a deposit ends with, by its final status.
DEPOSIT_ENDINGS: dict[str, set[str]] = {
    "failed": {
        # workflows/deposit.py: cancelled before a PSP answered; no route; routing or screening failing; no PSP
        # took it; a PSP's refusal without a code, a step-up request, a refused request.
        "workflow_cancelled", "no_route", "method_unavailable", "routing_unavailable", "screening_unavailable",
        "psp_unavailable", "declined", *_REFUSAL_CODES.values(),
        "fx_unavailable",  # no exchange rate for a deposit in another currency than the wallet's
        # A PSP's final status without a code (f"psp_{status}").
        *(f"psp_{status}" for status in PAYMENT_CALLS.final_statuses - {"captured"}),
        # A PSP's hard decline by its code, or the code of its status answer.
        *PSP_CODES, *SANDBOX_DEPOSIT_FAILURES,
    },
    "rejected": {
        # The screening: players/controls.py (screen_deposit) and activities/deposit.py (its risk gate).
        "account_closed", "self_excluded", "fx_rate_missing", "deposit_limit_exceeded", "kyc_rejected", "risk_denied",
        "review_rejected",  # a person, in review
    },
    "expired": {"psp_timeout", "kyc_timeout"},
    "refunded": {"review_rejected"},
}
# The codes whose status's words are right, by status.
DEPOSIT_STATUS_SAYS_IT: dict[str, set[str]] = {
    # "The payment provider declined the payment. Nothing was charged." — a PSP's decline that gives no reason;
    # payout_declined is a payout's code in the card PSPs' table (no deposit ends with it).
    "failed": {"declined", "psp_failed", "payout_declined"},
    # "We cannot accept this deposit. Please contact support." — no risk rule or review reason is disclosed.
    "rejected": {"risk_denied", "fx_rate_missing", "review_rejected"},
    "expired": {"psp_timeout"},  # "The payment was not confirmed in time, so nothing was charged."
    "refunded": {"review_rejected"},  # "This deposit could not be accepted and the money was sent back to you."
}
DEPOSIT_TABLES = {"failed": DEPOSIT_FAILURES, "rejected": DEPOSIT_CODES, "expired": DEPOSIT_CODES, "refunded": {}}

# Every code a payout ends with, by its final status.
PAYOUT_ENDINGS: dict[str, set[str]] = {
    "rejected": {
        # workflows/withdrawal.py: the hold (balance, or it failed), the KYC wait, a review.
        "insufficient_funds", "hold_failed", "kyc_timeout", "review_timeout", "review_rejected",
        # The payout check: activities/withdrawal.py (check_payout).
        "account_closed", "self_excluded", "kyc_rejected", "risk_denied",
    },
    # workflows/withdrawal.py: cancelled from Temporal or by the client; no outcome in time, cancelled at the PSP.
    "cancelled": {"workflow_cancelled", "cancelled_by_client", "psp_timeout"},
    "failed": {
        # workflows/withdrawal.py: a step that cannot succeed, no payout route, no PSP took it; a PSP's refusal
        # without a code, its final status without a code.
        "internal_error", "no_payout_route", "psp_unavailable", "declined",
        "fx_unavailable",  # no exchange rate for a payout in another currency than the wallet's
        *(f"psp_{status}" for status in PAYOUT_CALLS.final_statuses - {"paid"}),
        *PSP_CODES, *SANDBOX_PAYOUT_FAILURES,
    },
}
PAYOUT_STATUS_SAYS_IT: dict[str, set[str]] = {
    # "We cannot pay out this withdrawal. The amount is back in your balance. Please contact support."
    "rejected": {"hold_failed", "review_timeout", "review_rejected", "risk_denied"},
    # "The withdrawal was cancelled and the amount is back in your balance."
    "cancelled": {"workflow_cancelled", "cancelled_by_client", "psp_timeout"},
    # "The provider could not pay out. The amount is back in your balance." — a PSP's no, whatever its reason.
    "failed": {"declined", "psp_failed", "psp_cancelled", *PSP_REFUSALS, *SANDBOX_PAYOUT_FAILURES},
}
PAYOUT_TABLES = {"rejected": PAYOUT_CODES, "cancelled": PAYOUT_CODES, "failed": PAYOUT_FAILURES}


def literal_codes(module: str) -> set[str]:
    """The codes a workflow module ends with as string literals: in the code argument of its Finish(...),
    _finish(...) and _end(...) calls (the second positional, or failure_code=), outside f-strings."""
    codes: set[str] = set()
    for call in ast.walk(ast.parse((Path(workflows.__file__).parent / module).read_text())):
        if not isinstance(call, ast.Call):
            continue
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
        if name not in ("Finish", "_finish", "_end"):
            continue
        for argument in call.args[1:2] + [k.value for k in call.keywords if k.arg == "failure_code"]:
            in_f_strings = {id(part) for node in ast.walk(argument) if isinstance(node, ast.JoinedStr)
                            for part in node.values}
            codes |= {node.value for node in ast.walk(argument) if isinstance(node, ast.Constant)
                      and isinstance(node.value, str) and id(node) not in in_f_strings}
    return codes


@pytest.mark.parametrize(("module", "endings"), [("deposit.py", DEPOSIT_ENDINGS), ("withdrawal.py", PAYOUT_ENDINGS)])
def test_every_code_a_workflow_ends_with_is_listed_here(module: str, endings: dict[str, set[str]]) -> None:
    found = literal_codes(module)
    assert {"workflow_cancelled", "psp_timeout", "declined"} <= found  # the reading finds what is there
    unlisted = found - set().union(*endings.values())
    assert not unlisted, f"{module} ends with codes not listed here: {sorted(unlisted)}"


def _unworded(endings: dict[str, set[str]], says_it: dict[str, set[str]], tables: dict[str, dict[str, Outcome]],
              statuses: dict[str, Outcome], outcome_of: Callable[[str, str | None], Outcome]) -> list[str]:
    """The (status, code) pairs that get no words of their own and are not named as ones whose status says it; and
    named ones that have words after all (an entry the page would show instead)."""
    wrong = []
    for status, codes in endings.items():
        for code in sorted(codes):
            outcome = outcome_of(status, code)
            if code in says_it.get(status, set()):
                if code in tables[status] or outcome != statuses[status]:
                    wrong.append(f"{status}/{code}: named as its status's, but has words of its own")
            elif code not in tables[status] or outcome == statuses[status]:
                wrong.append(f"{status}/{code}: the status's words ({statuses[status].title!r})")
    return wrong


def test_every_deposit_ending_has_words_of_its_own_or_its_status_s_are_right() -> None:
    wrong = _unworded(DEPOSIT_ENDINGS, DEPOSIT_STATUS_SAYS_IT, DEPOSIT_TABLES, DEPOSIT_STATUSES, deposit_outcome)
    assert not wrong, "\n".join(wrong)


def test_every_payout_ending_has_words_of_its_own_or_its_status_s_are_right() -> None:
    wrong = _unworded(PAYOUT_ENDINGS, PAYOUT_STATUS_SAYS_IT, PAYOUT_TABLES, PAYOUT_STATUSES, payout_outcome)
    assert not wrong, "\n".join(wrong)


def test_a_cancellation_or_an_outage_is_never_called_a_decline() -> None:
    declined = DEPOSIT_STATUSES["failed"]
    for code in ("workflow_cancelled", "psp_cancelled", "step_up_required", "psp_rejected", "issuer_unavailable",
                 "bank_unavailable", "node_unavailable", "wallet_backend_unavailable"):
        assert "declined" not in deposit_outcome("failed", code).detail, code
        assert deposit_outcome("failed", code) != declined, code
    assert deposit_outcome("failed", "workflow_cancelled").title == "Payment cancelled"
