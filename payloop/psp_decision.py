"""What a PSP's error means for the payment or payout that met it: the one vocabulary shared by the connectors'
error tables (psp/), the activities that report PSP errors, and the workflows that act on them.

Pure (no I/O, no imports): the workflows import it inside Temporal's sandbox.
"""

from __future__ import annotations

from enum import StrEnum


class PspDecision(StrEnum):
    # The four an error table may give a provider's code (a GSM-style table per provider).
    RETRY = "retry"  # transient (5xx, timeout, rate limit): try the same PSP again, with backoff
    FAILOVER = "failover"  # this PSP cannot take it now (issuer / acquirer down): the next candidate, at once
    HARD_DECLINE = "hard_decline"  # refused for good (card declined, insufficient funds): never retried
    STEP_UP = "step_up"  # wants strong customer authentication (3DS / SCA) this request did not carry
    # Answers no table gives, decided by the HTTP status alone.
    REJECTED = "rejected"  # any other 4xx: our request is wrong or illegal in the record's state
    NOT_FOUND = "not_found"  # a look-up or cancel of something the PSP does not know

    @classmethod
    def table_decisions(cls) -> frozenset[PspDecision]:
        """The decisions an error table may map a code to."""
        return frozenset({cls.RETRY, cls.FAILOVER, cls.HARD_DECLINE, cls.STEP_UP})
