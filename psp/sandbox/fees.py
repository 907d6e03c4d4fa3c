"""What each sandbox PSP charges, and reports in its webhooks and look-ups, for each settled operation.

A price list per PSP and operation (the record kinds: a captured `payment`, a paid `payout`, a succeeded `refund`,
a lost `dispute` = the chargeback fee): fixed + amount × percentage, in the operation's currency, computed in
integer minor units (psp.routing.Cost: Decimal, rounded half-up, never floats). The card acquirers and the
e-wallets report their fees; pay-by-bank and crypto PSPs report none (a merchant learns those from the settlement),
so our ledger prices them with the routing file's cost model. Every PSP deducts its fees in its settlement report
(psp/sandbox/settlement.py): the reported ones, and the pay-by-bank and crypto PSPs' from price lists of their own
(SETTLEMENT_FEE_SCHEDULES). The shipped routing file (psp/routing.yaml) quotes all these same price lists
(tests/psp/test_fees.py holds the two together).
"""

from __future__ import annotations

from psp.routing import Cost

# Zero-decimal currencies get their own fixed fee: "0.25" of a yen is nothing.
_CARD_FIXED = {"*": "0.25", "JPY": "30", "KRW": "300", "CLP": "200", "ISK": "35"}
_CARD_B_FIXED = {"*": "0.30", "JPY": "35", "KRW": "350", "CLP": "240", "ISK": "42"}
_CHARGEBACK_FIXED = {"*": "15.00", "JPY": "2000", "KRW": "20000", "CLP": "14000", "ISK": "2200"}

FEE_SCHEDULES: dict[str, dict[str, Cost]] = {
    "card": {
        "payment": Cost(fixed=_CARD_FIXED, percentage="1.4"),
        "payout": Cost(fixed={"*": "0.50", "JPY": "60", "KRW": "600", "CLP": "400", "ISK": "70"}),
        "refund": Cost(fixed={"*": "0.10", "JPY": "15", "KRW": "150", "CLP": "100", "ISK": "15"}),
        "dispute": Cost(fixed=_CHARGEBACK_FIXED),
    },
    "card_b": {
        "payment": Cost(fixed=_CARD_B_FIXED, percentage="1.5"),
        "payout": Cost(fixed={"*": "0.60", "JPY": "70", "KRW": "700", "CLP": "480", "ISK": "84"}),
        "refund": Cost(fixed={"*": "0.15", "JPY": "20", "KRW": "200", "CLP": "140", "ISK": "20"}),
        "dispute": Cost(fixed={"*": "20.00", "JPY": "2700", "KRW": "27000", "CLP": "19000", "ISK": "2900"}),
    },
    "ewallet": {
        "payment": Cost(percentage="2.5"),
        "payout": Cost(percentage="1.0"),
        "refund": Cost(fixed={"*": "0.20", "JPY": "30", "KRW": "300", "CLP": "200", "ISK": "30"}),
        "dispute": Cost(fixed=_CHARGEBACK_FIXED),
    },
    # A little dearer than ewallet, so ewallet goes first.
    "ewallet_b": {
        "payment": Cost(fixed={"*": "0.10", "JPY": "15", "KRW": "150", "CLP": "100", "ISK": "15"}, percentage="2.6"),
        "payout": Cost(percentage="1.2"),
        "refund": Cost(fixed={"*": "0.25", "JPY": "35", "KRW": "350", "CLP": "240", "ISK": "35"}),
        "dispute": Cost(fixed={"*": "12.00", "JPY": "1600", "KRW": "16000", "CLP": "11000", "ISK": "1750"}),
    },
}


def fee_minor(psp: str, operation: str, amount_minor: int, currency: str) -> int | None:
    """The fee `psp` reports for a settled `operation` of `amount_minor`; None where it reports none."""
    cost = FEE_SCHEDULES.get(psp, {}).get(operation)
    return None if cost is None else cost.fee_minor(amount_minor, currency)


# Pay-by-bank and crypto have no chargebacks, so no dispute price.
_SETTLEMENT_ONLY: dict[str, dict[str, Cost]] = {
    "paybybank": {
        "payment": Cost(fixed={"*": "0.20"}, percentage="0.3"),
        "payout": Cost(fixed={"*": "0.20"}),
        "refund": Cost(fixed={"*": "0.20"}),  # a credit transfer back, priced like a payout
    },
    "paybybank_b": {
        "payment": Cost(fixed={"*": "0.25"}, percentage="0.35"),
        "payout": Cost(fixed={"*": "0.25"}),
        "refund": Cost(fixed={"*": "0.25"}),
    },
    "crypto": {
        "payment": Cost(percentage="1.0"),
        "payout": Cost(fixed={"*": "1.00"}, percentage="0.5"),
        "refund": Cost(fixed={"*": "1.00"}, percentage="0.5"),  # coins sent back: the network fee, as for a payout
    },
    "crypto_b": {
        "payment": Cost(percentage="1.2"),
        "payout": Cost(fixed={"*": "1.20"}, percentage="0.5"),
        "refund": Cost(fixed={"*": "1.20"}, percentage="0.5"),
    },
}
# What each PSP deducts in its settlement: the reported fees, and the settlement-only price lists.
SETTLEMENT_FEE_SCHEDULES: dict[str, dict[str, Cost]] = FEE_SCHEDULES | _SETTLEMENT_ONLY


def settlement_fee_minor(psp: str, operation: str, amount_minor: int, currency: str) -> int:
    """The fee `psp` deducts in its settlement for an `operation` of `amount_minor`; 0 where it charges none."""
    cost = SETTLEMENT_FEE_SCHEDULES.get(psp, {}).get(operation)
    return 0 if cost is None else cost.fee_minor(amount_minor, currency)
