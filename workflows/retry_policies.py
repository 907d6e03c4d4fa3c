"""How long the workflows wait for their activities and how they retry them: one named policy per kind of step,
shared by every workflow, units in every name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy

from payloop.psp_decision import PspDecision
from workflows.types import ErrorType

# Every activity ends (or is timed out) within this; PSP calls bound their own HTTP exchange below it.
DATABASE_STEP_TIMEOUT = timedelta(seconds=10)
PSP_CALL_TIMEOUT = timedelta(seconds=15)

# Screening, routing and checks: short database steps; a few tries, then the workflow decides (no money moved).
DATABASE_STEP = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10), maximum_attempts=10
)
# Ledger moves, alerts, notifications and limit releases must happen: retried until done. A ledger conflict (the
# same transfer id with another body) is a bug to look at, never retried.
UNTIL_DONE = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=[ErrorType.LEDGER_CONFLICT],
)
# A PSP create is one try per activity: the PSP step makes the tries itself, so it sees every try's error.
ONE_TRY = RetryPolicy(maximum_attempts=1)
# Status look-ups and cancels: a few quick tries; "not found" and a refused request are answers, not failures.
PSP_LOOK_UP = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
    non_retryable_error_types=[PspDecision.REJECTED.value, PspDecision.NOT_FOUND.value],
)


@dataclass(frozen=True)
class Backoff:
    """Waits between tries: `first_wait_seconds`, then multiplied by `factor` up to `max_wait_seconds`."""

    tries: int
    first_wait_seconds: float
    max_wait_seconds: float
    factor: float = 2.0

    def waits_seconds(self) -> list[float]:
        """The wait after each try but the last."""
        waits, wait = [], self.first_wait_seconds
        for _ in range(self.tries - 1):
            waits.append(wait)
            wait = min(wait * self.factor, self.max_wait_seconds)
        return waits


# A PSP create: 4 tries under one Idempotency-Key, 0.2 s apart at first, doubling up to 5 s.
PSP_CREATE_TRIES = Backoff(tries=4, first_wait_seconds=0.2, max_wait_seconds=5.0)
# While no PSP takes a payout, the wait between rounds doubles from the payout's first retry up to this.
PAYOUT_DEFER_MAX_WAIT_SECONDS = 900.0
# A re-check nudge (an unverified webhook naming the record) makes the PSP step ask the PSP at most this often.
RECHECK_MIN_INTERVAL_SECONDS = 30.0
# A refund in review (its PSP's outcome unknown) asks the PSP by itself after the first wait, doubling up to the max.
REFUND_REVIEW_LOOK_UP_FIRST_SECONDS = 3600.0
REFUND_REVIEW_LOOK_UP_MAX_SECONDS = 24 * 3600.0
# A payout waiting for KYC re-reads the status this often by itself (visibility may lag behind the nudge).
KYC_RECHECK_SECONDS = 3600.0
