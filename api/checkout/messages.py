"""What the checkout tells a player about each status and each refusal: a title, what happened and what to do
next, never a raw code. English source texts, marked with `N_` for `pybabel extract` and translated at render time
(i18n.py); a code not listed here gets its status's general message, so a new decline code never shows as a code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


def N_(text: str) -> str:  # noqa: N802 - gettext's conventional no-op marker, a keyword pybabel extracts
    return text


class Next(str, Enum):
    """The one thing the page offers next."""

    WAIT = "wait"  # nothing: the page follows the payment
    CONTINUE = "continue"  # to the PSP's page (3-D Secure, the bank)
    RETRY = "retry"  # the same method again
    OTHER_METHOD = "other_method"
    CONTACT_SUPPORT = "contact_support"
    DONE = "done"  # back to the casino


@dataclass(frozen=True)
class Outcome:
    tone: str  # success | progress | problem: the status panel's style and its role
    title: str
    detail: str
    next: Next
    final: bool


def _done(title: str, detail: str) -> Outcome:
    return Outcome("success", title, detail, Next.DONE, True)


def _waiting(title: str, detail: str, next_: Next = Next.WAIT) -> Outcome:
    return Outcome("progress", title, detail, next_, False)


def _problem(title: str, detail: str, next_: Next) -> Outcome:
    return Outcome("problem", title, detail, next_, True)


_PROCESSING = _waiting(N_("Payment in progress"),
                       N_("We are waiting for the payment provider's confirmation. This page updates by itself; you "
                          "do not need to pay again."))
_DECLINED = _problem(N_("Payment declined"),
                     N_("The payment provider declined the payment. Nothing was charged. Try again or choose "
                        "another method."), Next.OTHER_METHOD)
_NOT_CONFIRMED = _problem(N_("Payment not confirmed"),
                          N_("The payment was not confirmed in time, so nothing was charged. You can try again."),
                          Next.RETRY)
_CANCELLED = _problem(N_("Payment cancelled"),
                      N_("This payment was cancelled before it was completed, so nothing was charged. You can try "
                         "again."), Next.RETRY)
_CARD_DECLINED = _problem(N_("Card declined"),
                          N_("Your card issuer declined the payment. Nothing was charged. Check the card's details and "
                             "limits, or choose another method."), Next.OTHER_METHOD)
_STEP_UP = _problem(N_("Extra check not completed"),
                    N_("Your bank or the provider asked for an extra security check that this payment could not "
                       "complete. Nothing was charged. Try again, or choose another method."), Next.OTHER_METHOD)
_NOT_ACCEPTED = _problem(N_("Payment not accepted"),
                         N_("The payment provider did not accept this payment. Nothing was charged. Choose another "
                            "method."), Next.OTHER_METHOD)
_METHOD_UNAVAILABLE = _problem(N_("Method unavailable"),
                               N_("This method cannot take this payment right now. Nothing was charged. Choose "
                                  "another method."), Next.OTHER_METHOD)
_CHECK_UNAVAILABLE = _problem(N_("Please try again"),
                              N_("We could not check the payment just now. Nothing was charged. Try again in a "
                                 "moment."), Next.RETRY)
_PROVIDER_UNAVAILABLE = _problem(N_("Provider unavailable"),
                                 N_("The payment provider cannot be reached right now. Nothing was charged. Try "
                                    "another method, or try again in a few minutes."), Next.OTHER_METHOD)
_BANK_UNAVAILABLE = _problem(N_("Bank unavailable"),
                             N_("Your bank or card issuer cannot be reached right now. Nothing was charged. Try "
                                "another method, or try again in a few minutes."), Next.OTHER_METHOD)

# A PSP's codes (psp.registry.error_tables(), and its status answers') for "not now": its own outage or load, or
# that of the bank, card issuer or network behind it. Retried and failed over by the workflow; a deposit that runs
# out of PSPs ends `psp_unavailable`, but a PSP's status answer may name one of these.
_PROVIDER_OUTAGES = ("psp_unavailable", "psp_internal_error", "processing_error", "acquirer_unavailable",
                     "wallet_backend_unavailable", "wallet_network_down", "node_unavailable", "rate_limited",
                     "rate_limit", "rate_limit_exceeded", "too_many_requests", "throttled", "quota_exceeded")
_BANK_OUTAGES = ("issuer_unavailable", "bank_unavailable", "aspsp_unavailable")
# A PSP's codes asking for strong customer authentication the payment did not get (a deposit ends
# `step_up_required`; a status answer may name the PSP's own code).
_STEP_UP_CODES = ("step_up_required", "authentication_required", "sca_required", "consent_required",
                  "strong_auth_needed", "reauthorisation_required")
_NOT_ENOUGH_FUNDS = _problem(N_("Not enough funds"),
                             N_("Your account with the provider does not have enough money for this payment. "
                                "Nothing was charged. Choose a smaller amount or another method."), Next.OTHER_METHOD)
_WALLET_DECLINED = _problem(N_("Wallet declined"),
                            N_("Your e-wallet account cannot make this payment. Nothing was charged. Check your "
                               "account with the e-wallet provider, or choose another method."), Next.OTHER_METHOD)
_BANK_DECLINED = _problem(N_("Bank declined"),
                          N_("Your bank declined the payment. Nothing was charged. Choose another method."),
                          Next.OTHER_METHOD)

# A payment whose start failed before it existed (its form's answer was a service error).
NOT_STARTED = _problem(N_("Payment not started"), N_("We could not start this payment, so nothing was charged. Try "
                                                     "again."), Next.RETRY)

DEPOSIT_STATUSES: dict[str, Outcome] = {
    "pending": _PROCESSING,
    "authorized": _PROCESSING,
    "captured": _PROCESSING,
    "requires_action": _waiting(N_("Confirm your payment"),
                                N_("Your bank or card issuer asks you to confirm this payment on its page."),
                                Next.CONTINUE),
    "kyc_required": _waiting(N_("Identity check needed"),
                             N_("Before this deposit can go ahead, we must verify your identity. Upload your "
                                "documents in your casino account; the deposit waits for the check and continues by "
                                "itself."), Next.CONTACT_SUPPORT),
    "credited": _done(N_("Deposit successful"), N_("The money is in your balance. You can go back and play.")),
    "in_review": Outcome("progress", N_("Deposit being checked"),
                         N_("Our team is checking this payment. Your balance is updated as soon as it is approved; "
                            "do not pay again."), Next.CONTACT_SUPPORT, True),
    "refunded": _problem(N_("Deposit refunded"),
                         N_("This deposit could not be accepted and the money was sent back to you."),
                         Next.CONTACT_SUPPORT),
    "expired": _NOT_CONFIRMED,
    "failed": _DECLINED,
    "rejected": _problem(N_("Deposit not accepted"),
                         N_("We cannot accept this deposit. Please contact support."), Next.CONTACT_SUPPORT),
}

# Why a deposit failed (status `failed`), by its code: a PSP's decline or outage, or a step of ours that could not
# be done (workflows/deposit.py). A code not here gets the failed status's message.
DEPOSIT_FAILURES: dict[str, Outcome] = {
    "card_declined": _CARD_DECLINED,
    # The card's issuer suspects the card: the player is told what any decline says, not why.
    "stolen_card": _CARD_DECLINED,
    "fraud_suspected": _CARD_DECLINED,
    "expired_card": _problem(N_("Card expired"),
                             N_("This card has expired, so nothing was charged. Use another card or choose another "
                                "method."), Next.OTHER_METHOD),
    "insufficient_funds": _NOT_ENOUGH_FUNDS,
    "funds_unavailable": _NOT_ENOUGH_FUNDS,  # ewallet_b's word
    "3ds_failed": _problem(N_("Authentication failed"),
                           N_("The card's security check (3-D Secure) was not passed, so nothing was charged. Try "
                              "again, or choose another method."), Next.RETRY),
    "authorisation_rejected": _problem(N_("Cancelled at your bank"),
                                       N_("The payment was not authorised at your bank. Nothing was charged. Try "
                                          "again or choose another method."), Next.RETRY),
    "bank_rejected": _BANK_DECLINED,
    "payment_rejected_by_aspsp": _BANK_DECLINED,  # paybybank_b's word
    "account_blocked": _WALLET_DECLINED,
    "wallet_suspended": _WALLET_DECLINED,  # ewallet_b's word
    # The player's account at the PSP (an e-wallet, a bank), not the casino account (DEPOSIT_CODES).
    "account_closed": _problem(N_("Provider account closed"),
                               N_("Your account with the payment provider is closed, so nothing was charged. Choose "
                                  "another method."), Next.OTHER_METHOD),
    "address_screening_failed": _problem(N_("Payment not accepted"),
                                         N_("The provider could not accept a payment from this wallet address. "
                                            "Choose another method."), Next.OTHER_METHOD),
    "psp_rejected": _NOT_ACCEPTED,
    **dict.fromkeys(_STEP_UP_CODES, _STEP_UP),
    **dict.fromkeys(_PROVIDER_OUTAGES, _PROVIDER_UNAVAILABLE),
    **dict.fromkeys(_BANK_OUTAGES, _BANK_UNAVAILABLE),
    "no_route": _METHOD_UNAVAILABLE,
    "method_unavailable": _METHOD_UNAVAILABLE,
    "screening_unavailable": _CHECK_UNAVAILABLE,
    "routing_unavailable": _CHECK_UNAVAILABLE,
    # No exchange rate for a deposit in another currency than the player's wallet (the rate source is down).
    "fx_unavailable": _problem(N_("Currency conversion unavailable"),
                               N_("We could not get an exchange rate for this payment just now. Nothing was charged. "
                                  "Try again in a moment, or pay in your account's currency."), Next.RETRY),
    # Cancelled (from the Temporal UI or CLI) before a PSP answered; or cancelled at the PSP (the player left its
    # page); or left to expire there.
    "workflow_cancelled": _CANCELLED,
    "psp_cancelled": _CANCELLED,
    "psp_expired": _NOT_CONFIRMED,
}

# Why a deposit was refused (status `rejected`: our screening, a review) or expired, by its code; also the page of
# a player who cannot deposit at all (pages.py). A code not here gets its status's message.
DEPOSIT_CODES: dict[str, Outcome] = {
    "deposit_limit_exceeded": _problem(N_("Deposit limit reached"),
                                       N_("This deposit would go over the deposit limit you set. Choose a smaller "
                                          "amount, or wait until your limit period starts again."), Next.RETRY),
    "self_excluded": _problem(N_("Deposits paused"),
                              N_("You have excluded yourself from playing, so deposits are not possible until the "
                                 "exclusion ends. If you need help, contact support or a player-support "
                                 "organisation."), Next.CONTACT_SUPPORT),
    "account_closed": _problem(N_("Account closed"),
                               N_("Your account is closed, so deposits are not possible. Please contact support."),
                               Next.CONTACT_SUPPORT),
    "kyc_rejected": _problem(N_("Identity check not passed"),
                             N_("We could not verify your identity, so deposits are not possible. Please contact "
                                "support."), Next.CONTACT_SUPPORT),
    "kyc_timeout": _problem(N_("Identity check not completed"),
                            N_("Your identity was not verified in time, so this deposit was cancelled and nothing was "
                               "charged. Complete the check in your account, then try again."), Next.CONTACT_SUPPORT),
}

PAYOUT_STATUSES: dict[str, Outcome] = {
    "pending": _waiting(N_("Withdrawal requested"),
                        N_("Your withdrawal is being checked. The amount is reserved from your balance.")),
    "processing": _waiting(N_("Withdrawal on its way"),
                           N_("The payment provider is sending the money. This page updates by itself.")),
    "kyc_required": _waiting(N_("Identity check needed"),
                             N_("Before we can pay out, we must verify your identity. Upload your documents in your "
                                "casino account; the withdrawal continues by itself once you are verified."),
                             Next.CONTACT_SUPPORT),
    "in_review": _waiting(N_("Withdrawal being checked"),
                          N_("Our team is checking this withdrawal. The amount stays reserved; you do not need to do "
                             "anything."), Next.CONTACT_SUPPORT),
    "paid": _done(N_("Withdrawal sent"), N_("The money was sent to your payment method.")),
    "failed": _problem(N_("Withdrawal failed"),
                       N_("The provider could not pay out. The amount is back in your balance. Please contact "
                          "support."), Next.CONTACT_SUPPORT),
    "rejected": _problem(N_("Withdrawal not possible"),
                         N_("We cannot pay out this withdrawal. The amount is back in your balance. Please contact "
                            "support."), Next.CONTACT_SUPPORT),
    "cancelled": _problem(N_("Withdrawal cancelled"),
                          N_("The withdrawal was cancelled and the amount is back in your balance."), Next.RETRY),
}

_PAYOUT_PROVIDER_UNAVAILABLE = _problem(N_("Provider unavailable"),
                                        N_("The payment provider cannot be reached right now. The amount is back in "
                                           "your balance. Try again in a few minutes."), Next.RETRY)

# Why a payout failed (status `failed`), by its code: a step of ours, or a PSP that could not be reached
# (workflows/withdrawal.py). A PSP's refusal gets the failed status's message, whatever its code.
PAYOUT_FAILURES: dict[str, Outcome] = {
    "no_payout_route": _problem(N_("No payout method available"),
                                N_("No payment method can take this withdrawal right now. The amount is back in your "
                                   "balance. Try again later or contact support."), Next.CONTACT_SUPPORT),
    "internal_error": _problem(N_("Withdrawal not completed"),
                               N_("We could not complete this withdrawal. The amount is back in your balance. Please "
                                  "try again later or contact support."), Next.CONTACT_SUPPORT),
    **dict.fromkeys(_PROVIDER_OUTAGES + _BANK_OUTAGES, _PAYOUT_PROVIDER_UNAVAILABLE),
    # No exchange rate for a withdrawal in another currency than the wallet's: it ended before any hold.
    "fx_unavailable": _problem(N_("Currency conversion unavailable"),
                               N_("We could not get an exchange rate for this withdrawal just now. Your balance is "
                                  "unchanged. Try again in a moment."), Next.RETRY),
}

# Why a payout was refused (status `rejected`: its checks, the balance, a review) or cancelled, by its code. A code
# not here gets its status's message.
PAYOUT_CODES: dict[str, Outcome] = {
    "insufficient_funds": _problem(N_("Not enough balance"),
                                   N_("Your available balance does not cover this withdrawal. Choose a smaller "
                                      "amount."), Next.RETRY),
    "self_excluded": _problem(N_("Withdrawal on hold"),
                              N_("Withdrawals during a self-exclusion are handled by our support team. Please "
                                 "contact support."), Next.CONTACT_SUPPORT),
    "account_closed": _problem(N_("Account closed"),
                               N_("Your account is closed. Please contact support about your balance."),
                               Next.CONTACT_SUPPORT),
    "kyc_rejected": _problem(N_("Identity check not passed"),
                             N_("We could not verify your identity, so withdrawals are not possible. Please contact "
                                "support."), Next.CONTACT_SUPPORT),
    "kyc_timeout": _problem(N_("Identity check not completed"),
                            N_("Your identity was not verified in time, so the withdrawal was cancelled and the "
                               "amount is back in your balance. Complete the check, then try again."),
                            Next.CONTACT_SUPPORT),
}

# The checkout's own refusals of a form or a URL.
FORM_ERRORS: dict[str, str] = {
    "amount_required": N_("Enter an amount."),
    "invalid_amount": N_("Enter an amount as a number, for example 50.00."),
    "amount_precision": N_("This currency has fewer decimal places; round the amount."),
    "amount_too_large": N_("The amount is too large."),
    "amount_not_positive": N_("Enter an amount above zero."),
    "unsupported_currency": N_("This currency is not available."),
    "over_balance": N_("The amount is more than your available balance."),
    "method_required": N_("Choose a payment method."),
    "method_disabled": N_("This method is not available right now. Choose another one."),
    "unsupported_method": N_("This method is not available right now. Choose another one."),
    "form_expired": N_("This form is out of date. Check the details and send it again."),
}
FORM_ERROR_FALLBACK = N_("This value cannot be used. Check it and try again.")

METHOD_NAMES = {"card": N_("Card"), "ewallet": N_("E-wallet"), "bank_transfer": N_("Pay by bank"),
                "crypto": N_("Crypto")}
# The shipped routing file's ETAs, so that they are translated too (the catalog test keeps them complete).
ETA_TEXTS = (N_("instant"), N_("1-3 business days"), N_("same business day"),
             N_("10-60 minutes (network confirmations)"), N_("within 1 hour"))
PERIOD_NAMES = {"day": N_("Daily limit"), "week": N_("Weekly limit"), "month": N_("Monthly limit")}
# The sandbox PSPs' behaviours offered on the forms when PAYLOOP_CHECKOUT_SANDBOX_SCENARIOS is on.
SANDBOX_DEPOSIT_CHOICES = (("approve", N_("Approve (frictionless)")), ("challenge", N_("3-D Secure challenge")),
                           ("3ds_fail", N_("3-D Secure fails")), ("decline", N_("Decline")))
SANDBOX_PAYOUT_CHOICES = (("approve", N_("Pay out")), ("decline", N_("Decline")), ("fail", N_("Fail after acceptance")))


def method_name(method: str) -> str:
    """A method's name to translate; a method added to the routing file without one shows its own name."""
    return METHOD_NAMES.get(method, method)


def deposit_outcome(status: str, failure_code: str | None) -> Outcome:
    """The code's outcome where it says more than the status: a failed deposit's code is a PSP's or a step's, a
    refused or expired one's is ours (some codes are both, in two senses: `account_closed`)."""
    codes = {"failed": DEPOSIT_FAILURES, "rejected": DEPOSIT_CODES, "expired": DEPOSIT_CODES}.get(status, {})
    return codes.get(failure_code or "") or DEPOSIT_STATUSES.get(status, _PROCESSING)


def payout_outcome(status: str, failure_code: str | None) -> Outcome:
    codes = {"failed": PAYOUT_FAILURES, "rejected": PAYOUT_CODES, "cancelled": PAYOUT_CODES}.get(status, {})
    return codes.get(failure_code or "") or PAYOUT_STATUSES.get(status, PAYOUT_STATUSES["pending"])


def form_error(code: str) -> str:
    return FORM_ERRORS.get(code, FORM_ERROR_FALLBACK)
