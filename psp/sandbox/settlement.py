"""The sandbox PSPs' settlement: what each PSP settled on each UTC day, and its report of that day in its family's
own format, modelled on real ones and streamed (`GET /reports/{psp}/settlement?date=YYYY-MM-DD`).

A record settles when it reaches the status its PSP pays or takes money in (psp/sandbox/app.py `Sandbox.changed`):
a captured payment, a succeeded refund, a paid payout, a dispute opened (chargeback), won (reversal) or lost (the
chargeback fee, on a line of its own). Its line is booked on the UTC day it got there, or on the PSP's `book_on` day
when one is set (`POST /control/{psp}/settlement`); a payment's `settle_*` scenario changes its capture line
(psp/scenarios.py SETTLEMENT_SCENARIOS). Every line gets its line id once, when booked, so every fetch of a report
shows the same ids; a line settled twice is two lines with two ids.

Amounts here are our vocabulary (signed integer minor units from the merchant's side, payloop/settlement.py); each
`ReportFormat` writes them in its provider's words, independently of the connectors' parsers
(psp/*_connector.py), so the tests exercise both sides.

A report is generated lazily as it streams, a chunk of lines at a time: the booked lines of the day (those booked
when the fetch began), then the synthetic lines of the day's synthetic specs (only the spec is kept in memory).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)

from payloop.money import (
    MoneyError,
    currency_exponent,
    to_decimal_string,
    to_minor_units,
)
from payloop.settlement import (
    CAPTURE,
    CHARGEBACK,
    CHARGEBACK_FEE,
    CHARGEBACK_REVERSAL,
    PAYOUT,
    REFUND,
)
from psp.sandbox.fees import settlement_fee_minor
from psp.scenarios import FAMILIES

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ZERO = re.compile(r"0(?:\.(0+))?")
LINES_PER_CHUNK = 500  # lines written per chunk of the streamed body
MAX_SYNTHETIC_LINES = 1_000_000


@dataclass(frozen=True, slots=True)
class Settled:
    """What a record settles as, before the PSP books it (its scenario may change that)."""

    kind: str  # one of payloop.settlement.LINE_KINDS
    merchant_reference: str | None
    psp_reference: str
    currency: str
    gross_minor: int  # signed: + the PSP pays us, - it takes
    fee_minor: int
    scenario: str = "approve"


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a settlement report."""

    line_id: str
    kind: str
    merchant_reference: str | None
    psp_reference: str
    currency: str
    gross_minor: int
    fee_minor: int
    occurred_at: datetime  # when the record got to the settled status
    booked_on: date

    @property
    def net_minor(self) -> int:
        return self.gross_minor - self.fee_minor


def discrepancies(settled: Settled) -> list[tuple[int, int, int]]:
    """(gross, fee, days late) of each line a settled operation is booked as: one, as it is, unless its payment's
    scenario says otherwise (only captures carry one)."""
    gross_minor, fee_minor, unit_minor = settled.gross_minor, settled.fee_minor, 10 ** currency_exponent(settled.currency)
    if settled.kind != CAPTURE:
        return [(gross_minor, fee_minor, 0)]
    match settled.scenario:
        case "settle_missing":
            return []
        case "settle_twice":
            return [(gross_minor, fee_minor, 0), (gross_minor, fee_minor, 0)]
        case "settle_late":
            return [(gross_minor, fee_minor, 1)]
        case "settle_amount_differs":
            # One major unit less, or one minor unit less where that would leave nothing; a capture of one minor
            # unit cannot settle for less and settles for one more.
            less_minor = unit_minor if gross_minor > unit_minor else 1 if gross_minor > 1 else -1
            return [(gross_minor - less_minor, fee_minor, 0)]
        case "settle_fee_differs":
            # 0.10 of the major unit; a zero-decimal currency has no tenth, so one minor unit.
            return [(gross_minor, fee_minor + max(1, unit_minor // 10), 0)]
    return [(gross_minor, fee_minor, 0)]


# -- the formats ---------------------------------------------------------------------------------


def _csv_row(values: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _decimal(minor: int, currency: str) -> str:
    return to_decimal_string(minor, currency)


def _debit_credit(minor: int, currency: str) -> tuple[str, str]:
    """An amount in a debit and a credit column: one of them filled, or neither for zero."""
    if minor == 0:
        return "", ""
    amount = _decimal(abs(minor), currency)
    return (amount, "") if minor < 0 else ("", amount)


class ReportFormat:
    """How one family's PSPs write their settlement report."""

    media_type: ClassVar[str] = "text/csv; charset=utf-8"

    def header(self) -> str | None:
        return None

    def row(self, psp: str, entry: Entry) -> str:
        raise NotImplementedError

    def new_line_id(self) -> str:
        raise NotImplementedError

    def synthetic_line_id(self, spec_no: int, index: int) -> str:
        """Unlike any id new_line_id() makes, and the same on every fetch."""
        raise NotImplementedError

    async def stream(self, psp: str, entries: Iterable[Entry]) -> AsyncIterator[str]:
        """The report, a chunk of lines at a time (each chunk is sent before the next one is written)."""
        header = self.header()
        chunk = [header] if header else []
        for entry in entries:
            chunk.append(self.row(psp, entry))
            if len(chunk) >= LINES_PER_CHUNK:
                yield "".join(chunk)
                chunk = []
        if chunk:
            yield "".join(chunk)


class AdyenLikeReport(ReportFormat):
    """card, card_b: a "settlement details" CSV as an acquirer like Adyen writes it. Gross and net amounts sit in
    debit / credit columns (decimal strings in the currency's precision), the fee in `Commission (NC)`; the
    `Modification Reference` is the line's id; a batch per booking day."""

    COLUMNS = ("Company Account", "Merchant Account", "Psp Reference", "Merchant Reference", "Payment Method",
               "Creation Date", "TimeZone", "Type", "Modification Reference", "Gross Currency", "Gross Debit (GC)",
               "Gross Credit (GC)", "Net Currency", "Net Debit (NC)", "Net Credit (NC)", "Commission (NC)",
               "Batch Number")
    TYPES: ClassVar[dict[str, str]] = {
        CAPTURE: "Settled", REFUND: "Refunded", PAYOUT: "PaidOut", CHARGEBACK: "Chargeback",
        CHARGEBACK_REVERSAL: "ChargebackReversed", CHARGEBACK_FEE: "Fee",
    }
    BATCH_EPOCH = date(2000, 1, 1)

    def header(self) -> str:
        return _csv_row(self.COLUMNS)

    def row(self, psp: str, entry: Entry) -> str:
        currency = entry.currency
        return _csv_row((
            "PayloopCasino", f"PayloopCasino_{psp.upper()}", entry.psp_reference, entry.merchant_reference or "",
            "card", _timestamp(entry.occurred_at), "UTC", self.TYPES[entry.kind], entry.line_id,
            currency, *_debit_credit(entry.gross_minor, currency),
            currency, *_debit_credit(entry.net_minor, currency), _decimal(entry.fee_minor, currency),
            str((entry.booked_on - self.BATCH_EPOCH).days),
        ))

    def new_line_id(self) -> str:
        return secrets.token_hex(8).upper()

    def synthetic_line_id(self, spec_no: int, index: int) -> str:
        return f"S{spec_no:05d}{index:010d}"


class StripeLikeReport(ReportFormat):
    """ewallet: a balance-transactions CSV as a wallet like Stripe itemises it: signed decimal `gross` and `net`,
    `fee` (what it kept), lower-case currency, the line's id `txn_…`, the PSP reference as `source_id`, our id in
    the payment's metadata column."""

    COLUMNS = ("id", "created_utc", "available_on_utc", "currency", "gross", "fee", "net", "reporting_category",
               "source_id", "payment_metadata[merchant_reference]")
    CATEGORIES: ClassVar[dict[str, str]] = {
        CAPTURE: "charge", REFUND: "refund", PAYOUT: "payout", CHARGEBACK: "dispute",
        CHARGEBACK_REVERSAL: "dispute_reversal", CHARGEBACK_FEE: "fee",
    }

    def header(self) -> str:
        return _csv_row(self.COLUMNS)

    def row(self, psp: str, entry: Entry) -> str:
        currency = entry.currency
        return _csv_row((
            entry.line_id, _timestamp(entry.occurred_at), f"{entry.booked_on.isoformat()} 00:00:00",
            currency.lower(), _decimal(entry.gross_minor, currency), _decimal(entry.fee_minor, currency),
            _decimal(entry.net_minor, currency), self.CATEGORIES[entry.kind], entry.psp_reference,
            entry.merchant_reference or "",
        ))

    def new_line_id(self) -> str:
        return f"txn_{secrets.token_hex(12)}"

    def synthetic_line_id(self, spec_no: int, index: int) -> str:
        return f"txn_syn{spec_no}x{index}"


class BankStatementReport(ReportFormat):
    """paybybank: a bank statement's entries, camt.053-flavoured: a credit/debit indicator with an unsigned
    decimal amount (the operation's), the bank's charges for it, the ISO bank transaction code, our end-to-end id
    (NOTPROVIDED when the payer gave none) and the servicer's reference."""

    COLUMNS = ("Booking Date", "Value Date", "Entry Reference", "Credit Debit Indicator", "Amount", "Charges",
               "Currency", "End To End Id", "Account Servicer Reference", "Bank Transaction Code")
    # Domain-family-subfamily: a received SEPA credit transfer, an issued one, and a received one sent back.
    CODES: ClassVar[dict[str, str]] = {CAPTURE: "PMNT-RCDT-ESCT", PAYOUT: "PMNT-ICDT-ESCT", REFUND: "PMNT-ICDT-RRTN"}

    def header(self) -> str:
        return _csv_row(self.COLUMNS)

    def row(self, psp: str, entry: Entry) -> str:
        currency = entry.currency
        return _csv_row((
            entry.booked_on.isoformat(), entry.occurred_at.date().isoformat(), entry.line_id,
            "DBIT" if entry.gross_minor < 0 else "CRDT", _decimal(abs(entry.gross_minor), currency),
            _decimal(entry.fee_minor, currency), currency, entry.merchant_reference or "NOTPROVIDED",
            entry.psp_reference, self.CODES[entry.kind],
        ))

    def new_line_id(self) -> str:
        return f"E{secrets.token_hex(8).upper()}"

    def synthetic_line_id(self, spec_no: int, index: int) -> str:
        return f"SYN{spec_no}-{index}"


class CryptoLedgerReport(ReportFormat):
    """crypto: NDJSON, one settled entry per line, amounts in minor units as strings (signed `amount` and `net`,
    `network_fee` what the PSP kept). A deposit or withdrawal names its invoice (`invoice_id`), a refund its own
    id (`refund_id`)."""

    media_type = "application/x-ndjson"
    TYPES: ClassVar[dict[str, str]] = {CAPTURE: "deposit", PAYOUT: "withdrawal", REFUND: "refund"}

    def row(self, psp: str, entry: Entry) -> str:
        entry_type = self.TYPES[entry.kind]
        body: dict[str, Any] = {"entry_id": entry.line_id, "type": entry_type}
        body["refund_id" if entry_type == "refund" else "invoice_id"] = entry.psp_reference
        body |= {
            "order_id": entry.merchant_reference, "amount": str(entry.gross_minor),
            "network_fee": str(entry.fee_minor), "net": str(entry.net_minor), "currency": entry.currency,
            "settled_at": entry.occurred_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        return json.dumps(body, separators=(",", ":")) + "\n"

    def new_line_id(self) -> str:
        return f"ent_{secrets.token_hex(10)}"

    def synthetic_line_id(self, spec_no: int, index: int) -> str:
        return f"ent_syn{spec_no}_{index}"


class WalletPayoutReport(ReportFormat):
    """ewallet_b: a tab-separated settlement report: per line its `line_ref`, `booked_on`, the wallet's `txn_id`,
    our `txn_ref` (empty when unknown), the operation (`op`: debit, credit, reversal, claim, claim_reversal,
    claim_fee), `direction` IN (to us) or OUT with the unsigned `amount`, the `charge` kept, the signed `net`."""

    media_type = "text/tab-separated-values; charset=utf-8"
    COLUMNS = ("line_ref", "booked_on", "txn_id", "txn_ref", "op", "ccy", "direction", "amount", "charge", "net")
    OPS: ClassVar[dict[str, str]] = {
        CAPTURE: "debit", PAYOUT: "credit", REFUND: "reversal", CHARGEBACK: "claim",
        CHARGEBACK_REVERSAL: "claim_reversal", CHARGEBACK_FEE: "claim_fee",
    }

    def header(self) -> str:
        return "\t".join(self.COLUMNS) + "\n"

    def row(self, psp: str, entry: Entry) -> str:
        currency = entry.currency
        return "\t".join((
            entry.line_id, entry.booked_on.isoformat(), entry.psp_reference, entry.merchant_reference or "",
            self.OPS[entry.kind], currency, "IN" if entry.gross_minor > 0 else "OUT",
            _decimal(abs(entry.gross_minor), currency), _decimal(entry.fee_minor, currency),
            _decimal(entry.net_minor, currency),
        )) + "\n"

    def new_line_id(self) -> str:
        return f"sl_{secrets.token_hex(10)}"

    def synthetic_line_id(self, spec_no: int, index: int) -> str:
        return f"sl_syn{spec_no}_{index}"


class ContinentalStatementReport(ReportFormat):
    """paybybank_b: a continental bank's statement export: semicolon-separated, decimal comma ("-50,00"), a signed
    `Amount`, the bank's `Fee`, `TransactionType` (PaymentReceived, PayoutSent, RefundSent), our `EndToEndId` (empty
    when none) and their `ResourceId`."""

    COLUMNS = ("BookingDate", "ValueDate", "EntryId", "TransactionType", "Amount", "Fee", "Currency", "EndToEndId",
               "ResourceId")
    TYPES: ClassVar[dict[str, str]] = {CAPTURE: "PaymentReceived", PAYOUT: "PayoutSent", REFUND: "RefundSent"}

    def header(self) -> str:
        return ";".join(self.COLUMNS) + "\n"

    def row(self, psp: str, entry: Entry) -> str:
        currency = entry.currency
        return ";".join((
            entry.booked_on.isoformat(), entry.occurred_at.date().isoformat(), entry.line_id, self.TYPES[entry.kind],
            _decimal_comma(entry.gross_minor, currency), _decimal_comma(entry.fee_minor, currency), currency,
            entry.merchant_reference or "", entry.psp_reference,
        )) + "\n"

    def new_line_id(self) -> str:
        return f"ST{secrets.token_hex(8).upper()}"

    def synthetic_line_id(self, spec_no: int, index: int) -> str:
        return f"STSYN{spec_no}X{index}"


def _decimal_comma(minor: int, currency: str) -> str:
    sign = "-" if minor < 0 else ""
    return sign + _decimal(abs(minor), currency).replace(".", ",")


_REPORTS_BY_FAMILY: dict[str, ReportFormat] = {
    "card": AdyenLikeReport(), "ewallet": StripeLikeReport(), "ewallet_b": WalletPayoutReport(),
    "paybybank": BankStatementReport(), "paybybank_b": ContinentalStatementReport(), "crypto": CryptoLedgerReport(),
}
REPORTS: dict[str, ReportFormat] = {psp: _REPORTS_BY_FAMILY[family] for psp, family in FAMILIES.items()}


# -- the controls --------------------------------------------------------------------------------


def parse_day(value: Any) -> date:
    """A `YYYY-MM-DD` day; ValueError for anything else (fromisoformat alone takes "20261204" and week dates)."""
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        raise ValueError("a day is YYYY-MM-DD")
    return date.fromisoformat(value)


Day = Annotated[date, BeforeValidator(parse_day)]
Reference = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Prefix = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Amount = Annotated[str, Field(max_length=32)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrphanBody(_Strict):
    date: Day
    psp_reference: Reference
    amount: Amount
    currency: Currency


class SyntheticBody(_Strict):
    date: Day
    count: StrictInt = Field(ge=1, le=MAX_SYNTHETIC_LINES)
    currency: Currency
    amount: Amount
    fee: Amount  # may be zero
    merchant_reference_prefix: Prefix
    psp_reference_prefix: Prefix


class SettlementControlBody(_Strict):
    """Exactly one of: an orphan line, the PSP's booking day (null: the real one), a synthetic spec."""

    orphan: OrphanBody | None = None
    book_on: Day | None = None
    synthetic: SyntheticBody | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SettlementControlBody:
        given = self.model_fields_set
        if len(given) != 1:
            raise ValueError("give exactly one of orphan, book_on, synthetic")
        if "book_on" not in given and getattr(self, next(iter(given))) is None:
            raise ValueError(f"{next(iter(given))} must be an object")
        return self


def _fee_minor(value: str, currency: str) -> int:
    """A fee as a decimal string, which unlike an amount may be zero ("0", "0.00")."""
    zero = _ZERO.fullmatch(value)
    if zero is None:
        return to_minor_units(value, currency)
    if len(zero.group(1) or "") > currency_exponent(currency):
        raise MoneyError("amount_precision", f"{currency} amounts have at most {currency_exponent(currency)} "
                                             "decimal places")
    return 0


@dataclass(frozen=True)
class SyntheticSpec:
    """`count` settled capture lines, generated only while a report streams."""

    spec_no: int
    psp: str
    day: date
    count: int
    currency: str
    amount_minor: int
    fee_minor: int
    merchant_reference_prefix: str
    psp_reference_prefix: str

    def entries(self) -> Iterator[Entry]:
        report = REPORTS[self.psp]
        occurred_at = datetime.combine(self.day, time(12), UTC)
        for index in range(self.count):
            yield Entry(report.synthetic_line_id(self.spec_no, index), CAPTURE,
                        f"{self.merchant_reference_prefix}{index}", f"{self.psp_reference_prefix}{index}",
                        self.currency, self.amount_minor, self.fee_minor, occurred_at, self.day)

    def described(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(), "count": self.count, "currency": self.currency,
            "amount": _decimal(self.amount_minor, self.currency), "fee": _decimal(self.fee_minor, self.currency),
            "merchant_reference_prefix": self.merchant_reference_prefix,
            "psp_reference_prefix": self.psp_reference_prefix,
        }


class SettlementBook:
    """Every sandbox PSP's settled lines, by PSP and booking day."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, date], list[Entry]] = defaultdict(list)
        self.synthetic: dict[tuple[str, date], list[SyntheticSpec]] = defaultdict(list)
        self.book_on: dict[str, date] = {}  # per PSP: the day it books on instead of the real one
        self._spec_numbers = itertools.count(1)

    def book(self, psp: str, settled: Settled) -> list[Entry]:
        """Book what a record settles as on today's (or the PSP's book_on) day, as its scenario says."""
        now = datetime.now(UTC)
        day = self.book_on.get(psp, now.date())
        entries = [
            Entry(REPORTS[psp].new_line_id(), settled.kind, settled.merchant_reference, settled.psp_reference,
                  settled.currency, gross_minor, fee_minor, now, day + timedelta(days=days_late))
            for gross_minor, fee_minor, days_late in discrepancies(settled)
        ]
        for entry in entries:
            self.lines[(psp, entry.booked_on)].append(entry)
        return entries

    def report(self, psp: str, day: date) -> Iterator[Entry]:
        """The day's lines, as booked when called (a line booked while the report streams waits for the next
        fetch), then its synthetic ones."""
        booked = self.lines.get((psp, day), [])
        specs = list(self.synthetic.get((psp, day), ()))
        return itertools.chain(
            itertools.islice(booked, len(booked)), itertools.chain.from_iterable(s.entries() for s in specs)
        )

    def control(self, psp: str, body: SettlementControlBody) -> dict[str, Any]:
        """Apply one settlement control; what was stored. Raises MoneyError for an amount or currency refused."""
        if body.orphan is not None:
            return {"orphan": self._orphan(psp, body.orphan)}
        if body.synthetic is not None:
            return {"synthetic": self._synthetic(psp, body.synthetic)}
        if body.book_on is None:
            self.book_on.pop(psp, None)
        else:
            self.book_on[psp] = body.book_on
        return {"book_on": None if body.book_on is None else body.book_on.isoformat()}

    def _orphan(self, psp: str, orphan: OrphanBody) -> dict[str, Any]:
        amount_minor = to_minor_units(orphan.amount, orphan.currency)
        fee_minor = settlement_fee_minor(psp, "payment", amount_minor, orphan.currency)
        entry = Entry(REPORTS[psp].new_line_id(), CAPTURE, None, orphan.psp_reference, orphan.currency,
                      amount_minor, fee_minor, datetime.combine(orphan.date, time(12), UTC), orphan.date)
        self.lines[(psp, orphan.date)].append(entry)
        return {"line_id": entry.line_id, "date": orphan.date.isoformat(), "psp_reference": orphan.psp_reference,
                "amount": _decimal(amount_minor, orphan.currency), "currency": orphan.currency,
                "fee": _decimal(fee_minor, orphan.currency)}

    def _synthetic(self, psp: str, body: SyntheticBody) -> dict[str, Any]:
        spec = SyntheticSpec(
            spec_no=next(self._spec_numbers), psp=psp, day=body.date, count=body.count, currency=body.currency,
            amount_minor=to_minor_units(body.amount, body.currency), fee_minor=_fee_minor(body.fee, body.currency),
            merchant_reference_prefix=body.merchant_reference_prefix, psp_reference_prefix=body.psp_reference_prefix,
        )
        self.synthetic[(psp, spec.day)].append(spec)
        return spec.described()
