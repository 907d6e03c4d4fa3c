"""What the connectors' settlement report parsers share: reading a CSV report a line at a time by its header's
column names, and the amount fields reports write.

Each connector parses its own family's format (its `settlement_parser`, in its module); psp/http_connector.py streams
the report and feeds it a line at a time, turning whatever a parser raises (ValueError and co, PARSE_ERRORS) into
`MalformedReport` naming the line, and checks every line's sign and fee against payloop/settlement.py.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import ClassVar

from payloop.money import MAX_MINOR_UNITS, currency_exponent
from payloop.settlement import SettlementLine
from psp.http_connector import decimal_fee_minor

_MINOR = re.compile(r"-?(0|[1-9][0-9]{0,15})")
# The longest ids a line may carry, as the ledger stores them (our ids are at most 100 characters): a longer one is
# no id of ours nor one we can keep, so the report is refused rather than a run stuck on a value its table refuses.
REFERENCE_MAX_CHARS = {"line id": 200, "PSP reference": 200, "merchant reference": 100, "batch": 100}


def unsigned_decimal_minor(value: str, currency: str) -> int:
    """A decimal string with the currency's precision ("50.00"), which may be zero ("0.00")."""
    return decimal_fee_minor(value, currency)


def signed_decimal_minor(value: str, currency: str) -> int:
    """As unsigned_decimal_minor, with an optional leading minus ("-50.00")."""
    negative = value.startswith("-")
    minor = unsigned_decimal_minor(value[1:] if negative else value, currency)
    return -minor if negative else minor


def signed_minor_string(value: object, name: str) -> int:
    """Minor units as a decimal string ("5000", "-5000", "0")."""
    if not isinstance(value, str) or not _MINOR.fullmatch(value) or abs(int(value)) > MAX_MINOR_UNITS:
        raise ValueError(f"{name} must be minor units as a decimal string")
    return int(value)


def report_currency(value: str) -> str:
    currency_exponent(value)  # MoneyError (a ValueError) for a currency we do not take
    return value


def checked_net(gross_minor: int, fee_minor: int, net_minor: int) -> None:
    """A report that states a net: it must be the gross less the fee."""
    if net_minor != gross_minor - fee_minor:
        raise ValueError(f"net {net_minor} is not gross {gross_minor} less fee {fee_minor}")


@dataclass
class LineParser:
    """Parses one report (of `psp`, of `day`) a line at a time: `feed` each line, then `finish` at its end."""

    psp: str
    day: date

    def feed(self, text: str) -> SettlementLine | None:
        """The settlement line `text` holds, or None for a line that holds none (a header)."""
        raise NotImplementedError

    def finish(self) -> None:
        """The report ended: raise ValueError if it cannot have ended there."""

    def line(self, *, kind: str, line_id: str, merchant_reference: str | None, psp_reference: str, currency: str,
             gross_minor: int, fee_minor: int, batch: str | None = None) -> SettlementLine:
        if not line_id or not psp_reference or merchant_reference == "":
            raise ValueError("a line needs its line id and PSP reference (and a merchant reference or none)")
        for name, value in (("line id", line_id), ("PSP reference", psp_reference),
                            ("merchant reference", merchant_reference), ("batch", batch)):
            if value is not None and (len(value) > REFERENCE_MAX_CHARS[name] or not value.isprintable()):
                raise ValueError(f"the {name} is longer than {REFERENCE_MAX_CHARS[name]} characters or not printable")
        return SettlementLine(psp=self.psp, line_id=line_id, kind=kind, merchant_reference=merchant_reference,
                              psp_reference=psp_reference, currency=currency, gross_minor=gross_minor,
                              fee_minor=fee_minor, booked_on=self.day, batch=batch)


@dataclass
class CsvLineParser(LineParser):
    """A CSV report: a header line naming the columns (at least `COLUMNS`, in any order; others are ignored),
    then one row per line (a field holding a line break is refused: reports here never write one). `DELIMITER`: a
    comma, or the report's own (a tab, a semicolon)."""

    COLUMNS: ClassVar[tuple[str, ...]]
    DELIMITER: ClassVar[str] = ","
    _index: dict[str, int] | None = None
    _width: int = 0

    def feed(self, text: str) -> SettlementLine | None:
        try:
            [cells] = csv.reader([text], strict=True, delimiter=self.DELIMITER)
        except (csv.Error, ValueError):
            raise ValueError("not one CSV row") from None
        if self._index is None:
            self._index, self._width = _header(cells, self.COLUMNS), len(cells)
            return None
        if len(cells) != self._width:
            raise ValueError(f"{len(cells)} fields where the header names {self._width}")
        return self.row({name: cells[i] for name, i in self._index.items()})

    def finish(self) -> None:
        if self._index is None:
            raise ValueError("the report is empty: no header")

    def row(self, cells: Mapping[str, str]) -> SettlementLine:
        raise NotImplementedError


def _header(cells: list[str], required: tuple[str, ...]) -> dict[str, int]:
    if len(set(cells)) != len(cells):
        raise ValueError("a column is named twice in the header")
    missing = [name for name in required if name not in cells]
    if missing:
        raise ValueError(f"the header lacks {', '.join(missing)}")
    return {name: cells.index(name) for name in required}
