"""A PSP's settlement, line by line: the vocabulary the PSP connectors parse reports into (psp/) and the ledger's
reconciliation matches against its own movements (ledger/reconciliation.py).

Amounts are integer minor units, signed from the merchant's side: what the PSP pays us is positive (a capture, a
chargeback reversed), what it takes is negative (a refund, a payout, a chargeback). A fee is what the PSP kept for
the line, never negative; the line's net (gross - fee) is what it adds to or takes from the settlement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

CAPTURE = "capture"  # a deposit captured: merchant_reference our payment id
REFUND = "refund"  # merchant_reference our refund id
PAYOUT = "payout"  # merchant_reference our payout id
CHARGEBACK = "chargeback"  # a dispute opened, its money pulled back: psp_reference the PSP's dispute id
CHARGEBACK_REVERSAL = "chargeback_reversal"  # a dispute won, its money given back
CHARGEBACK_FEE = "chargeback_fee"  # the fee of a lost dispute, on a line of its own (gross 0)
LINE_KINDS = frozenset({CAPTURE, REFUND, PAYOUT, CHARGEBACK, CHARGEBACK_REVERSAL, CHARGEBACK_FEE})
# The sign of each kind's gross: a parser refuses a line whose sign disagrees.
GROSS_SIGNS = {CAPTURE: 1, REFUND: -1, PAYOUT: -1, CHARGEBACK: -1, CHARGEBACK_REVERSAL: 1, CHARGEBACK_FEE: 0}


@dataclass(frozen=True, slots=True)
class SettlementLine:
    """One line of a PSP's settlement report, in our terms.

    - `line_id`: the PSP's own id of the line, unique among all its reports and stable across fetches (a line paid
      twice comes as two lines with two ids).
    - `merchant_reference`: our id the line is about (payment, refund or payout id; for the chargeback kinds our
      disputed payment's id); None when the PSP does not know one (a line we may never have made).
    - `psp_reference`: the PSP's reference of the operation (its payment, refund or payout reference; for the
      chargeback kinds the dispute's id).
    - `booked_on`: the UTC day the PSP settled the line (the report's day).
    """

    psp: str
    line_id: str
    kind: str
    merchant_reference: str | None
    psp_reference: str
    currency: str
    gross_minor: int
    fee_minor: int
    booked_on: date
    batch: str | None = None

    @property
    def net_minor(self) -> int:
        return self.gross_minor - self.fee_minor


@dataclass(frozen=True, slots=True)
class SettlementTerms:
    """How a PSP settles, as its contract says: the reconciliation's tolerances for it.

    - `sla_days`: a movement of day D must be in a report of day D .. D + sla_days; until the end of that last day
      an unsettled movement is `expected`, after it `missing_at_psp`.
    - `fee_tolerance_minor`: a reported fee this close to the booked one (rounding) matches; the difference is
      booked as the PSP's fee.
    """

    sla_days: int = 2
    fee_tolerance_minor: int = 0


class MalformedReport(ValueError):
    """A settlement report that cannot be read (bad header, a line that does not parse, a net that is not gross
    less fee, a gross of the wrong sign): the run stops there and fails, raising no case for the unreadable line; the
    lines before it stay as classified (a re-run classifies them the same)."""
