"""The connectors' settlement report parsers against reports written by hand (each family's words, as a real PSP's
report would have them), served over real HTTP by a stand-in report server: what a report that cannot be read
raises (MalformedReport naming the line, after the lines before it), and what a broken transfer raises (the error
taxonomy of psp/base.py). Also the sandbox's discrepancy arithmetic in every currency precision."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from payloop.settlement import (
    CAPTURE,
    CHARGEBACK_FEE,
    PAYOUT,
    REFUND,
    MalformedReport,
    SettlementLine,
)
from psp.base import PspTransientError
from psp.sandbox.settlement import Settled, discrepancies
from tests.psp.psp_testkit import bound_socket, make_connector, serve

DAY = date(2031, 1, 2)

CARD_HEADER = ("Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,Creation Date,"
               "TimeZone,Type,Modification Reference,Gross Currency,Gross Debit (GC),Gross Credit (GC),Net Currency,"
               "Net Debit (NC),Net Credit (NC),Commission (NC),Batch Number")


def card_row(kind: str = "Settled", gross: tuple[str, str] = ("", "50.00"), net: tuple[str, str] = ("", "49.05"),
             commission: str = "0.95", currency: str = "EUR", merchant_reference: str = "pay_1",
             line_id: str = "L1") -> str:
    return (f"Casino,Casino_CARD,card_ref_1,{merchant_reference},card,2031-01-02 10:00:00,UTC,{kind},{line_id},"
            f"{currency},{gross[0]},{gross[1]},{currency},{net[0]},{net[1]},{commission},11324")


WALLET_HEADER = ("id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,"
                 "payment_metadata[merchant_reference]")


def wallet_row(gross: str = "50.00", fee: str = "1.25", net: str = "48.75", category: str = "charge",
               currency: str = "eur", merchant_reference: str = "pay_1") -> str:
    return (f"txn_1,2031-01-02 10:00:00,2031-01-02 00:00:00,{currency},{gross},{fee},{net},{category},ewallet_ref_1,"
            f"{merchant_reference}")


BANK_HEADER = ("Booking Date,Value Date,Entry Reference,Credit Debit Indicator,Amount,Charges,Currency,End To End Id,"
               "Account Servicer Reference,Bank Transaction Code")


def bank_row(indicator: str = "CRDT", amount: str = "50.00", charges: str = "0.35", code: str = "PMNT-RCDT-ESCT",
             booked: str = "2031-01-02", end_to_end_id: str = "pay_1") -> str:
    return f"{booked},2031-01-02,E1,{indicator},{amount},{charges},EUR,{end_to_end_id},paybybank_ref_1,{code}"


def crypto_row(**changes: object) -> str:
    entry: dict[str, object] = {"entry_id": "ent_1", "type": "deposit", "invoice_id": "crypto_ref_1",
                                "order_id": "pay_1", "amount": "5000", "network_fee": "50", "net": "4950",
                                "currency": "EUR", "settled_at": "2031-01-02T10:00:00Z"}
    entry.update(changes)
    return json.dumps(entry)


@dataclass
class ReportServer:
    """Serves `bodies[psp]` at /reports/{psp}/settlement, a chunk at a time; a chunk that is an exception breaks
    the connection there."""

    url: str = ""
    bodies: dict[str, list[str | Exception]] = field(default_factory=dict)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/reports/{psp}/settlement")
        async def report(psp: str) -> StreamingResponse:
            async def chunks() -> AsyncIterator[str]:
                for chunk in self.bodies[psp]:
                    if isinstance(chunk, Exception):
                        raise chunk
                    yield chunk
                    await asyncio.sleep(0)

            return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")

        return app


@pytest.fixture(scope="module")
async def reports() -> AsyncIterator[ReportServer]:
    sock, url = bound_socket()
    server = ReportServer(url)
    async with serve(server.app(), sock):
        yield server


async def read(reports: ReportServer, http: httpx.AsyncClient, psp: str, lines: list[str]) -> list[SettlementLine]:
    reports.bodies[psp] = ["".join(f"{line}\n" for line in lines)]
    return [line async for line in make_connector(psp, reports.url, http).settlement_report(DAY)]


async def test_the_hand_written_reports_read_as_expected(reports: ReportServer, http: httpx.AsyncClient) -> None:
    """The words of each family, independent of the sandbox's writer: every kind and its sign."""
    card = await read(reports, http, "card", [
        CARD_HEADER, card_row(), card_row("Refunded", ("20.00", ""), ("20.10", ""), "0.10", merchant_reference="rf_1"),
        card_row("Fee", ("", ""), ("15.00", ""), "15.00", line_id="L3"),
        card_row("Settled", ("", "1000"), ("", "970"), "30", currency="JPY", merchant_reference=""),
    ])
    wallet = await read(reports, http, "ewallet", [
        WALLET_HEADER, wallet_row(), wallet_row("-10.00", "0.00", "-10.00", "payout", merchant_reference="po_1")])
    bank = await read(reports, http, "paybybank", [
        BANK_HEADER, bank_row(), bank_row("DBIT", "20.00", "0.20", "PMNT-ICDT-RRTN", end_to_end_id="NOTPROVIDED")])
    coins = await read(reports, http, "crypto", [
        crypto_row(), crypto_row(type="withdrawal", amount="-2000", network_fee="110", net="-2110", order_id=None)])

    def terms(line: SettlementLine) -> tuple[object, ...]:
        return (line.kind, line.merchant_reference, line.currency, line.gross_minor, line.fee_minor, line.booked_on)

    assert [terms(line) for line in card] == [
        (CAPTURE, "pay_1", "EUR", 5000, 95, DAY), (REFUND, "rf_1", "EUR", -2000, 10, DAY),
        (CHARGEBACK_FEE, "pay_1", "EUR", 0, 1500, DAY), (CAPTURE, None, "JPY", 1000, 30, DAY)]
    assert (card[0].line_id, card[0].psp_reference, card[0].batch, card[0].psp) == ("L1", "card_ref_1", "11324", "card")
    assert [terms(line) for line in wallet] == [(CAPTURE, "pay_1", "EUR", 5000, 125, DAY),
                                                (PAYOUT, "po_1", "EUR", -1000, 0, DAY)]
    assert [terms(line) for line in bank] == [(CAPTURE, "pay_1", "EUR", 5000, 35, DAY),
                                              (REFUND, None, "EUR", -2000, 20, DAY)]
    assert [terms(line) for line in coins] == [(CAPTURE, "pay_1", "EUR", 5000, 50, DAY),
                                               (PAYOUT, None, "EUR", -2000, 110, DAY)]


# (psp, the report's lines, the line that cannot be read, what the error says)
MALFORMED = [
    ("card", [], 1, "empty"),
    ("card", ["Psp Reference,Type"], 1, "the header lacks"),
    ("card", [CARD_HEADER + ",Type"], 1, "named twice"),
    ("card", [CARD_HEADER, card_row(), "Casino,Casino_CARD,card_ref_2"], 3, "fields where the header names"),
    ("card", [CARD_HEADER, card_row(), card_row(net=("", "49.00"))], 3, "is not gross"),
    ("card", [CARD_HEADER, card_row(), card_row(gross=("50.00", ""), net=("50.95", ""))], 3, "wrong sign"),
    ("card", [CARD_HEADER, card_row(), card_row("Refunded")], 3, "wrong sign"),
    ("card", [CARD_HEADER, card_row(), card_row("Fee", net=("", "49.05"))], 3, "wrong sign"),
    ("card", [CARD_HEADER, card_row(), card_row("MerchantPayout")], 3, "unknown Type"),
    ("card", [CARD_HEADER, card_row(), card_row(gross=("1.00", "50.00"))], 3, "both"),
    ("card", [CARD_HEADER, card_row(), card_row(gross=("", "50.001"))], 3, "decimal places"),
    ("card", [CARD_HEADER, card_row(), card_row(commission="-0.95", net=("", "50.95"))], 3, "amount"),
    ("card", [CARD_HEADER, card_row(), card_row(currency="XXX")], 3, "not supported"),
    ("card", [CARD_HEADER, card_row(), card_row(line_id="")], 3, "line id"),
    ("card", [CARD_HEADER, card_row(), card_row(line_id="x" * 201)], 3, "longer than 200"),
    ("card", [CARD_HEADER, card_row(), '"unterminated'], 3, "CSV"),
    ("card", [CARD_HEADER, card_row(), ""], 3, "fields where the header names"),
    ("ewallet", [WALLET_HEADER, wallet_row(), wallet_row(currency="EUR")], 3, "lower-case"),
    ("ewallet", [WALLET_HEADER, wallet_row(), wallet_row(net="48.00")], 3, "is not gross"),
    ("ewallet", [WALLET_HEADER, wallet_row(), wallet_row(category="refund")], 3, "wrong sign"),
    ("ewallet", [WALLET_HEADER, wallet_row(), wallet_row(category="adjustment")], 3, "unknown reporting_category"),
    ("ewallet", [WALLET_HEADER, wallet_row(), wallet_row(gross="+50.00")], 3, "amount"),
    ("paybybank", [BANK_HEADER, bank_row(), bank_row(booked="2031-01-01")], 3, "booked on"),
    ("paybybank", [BANK_HEADER, bank_row(), bank_row(indicator="CR")], 3, "Credit Debit Indicator"),
    ("paybybank", [BANK_HEADER, bank_row(), bank_row(code="PMNT-XXXX-ESCT")], 3, "Bank Transaction Code"),
    ("paybybank", [BANK_HEADER, bank_row(), bank_row(indicator="DBIT")], 3, "wrong sign"),
    ("paybybank", [BANK_HEADER, bank_row(), bank_row(amount="-50.00")], 3, "amount"),
    ("crypto", [crypto_row(), "{not json"], 2, "line 2"),
    ("crypto", [crypto_row(), "[1, 2]"], 2, "not a JSON object"),
    ("crypto", [crypto_row(), crypto_row(amount=5000)], 2, "amount must be minor units"),
    ("crypto", [crypto_row(), crypto_row(amount="50.00")], 2, "amount must be minor units"),
    ("crypto", [crypto_row(), crypto_row(net="5000")], 2, "is not gross"),
    ("crypto", [crypto_row(), crypto_row(type="refund", refund_id="r1")], 2, "wrong sign"),
    ("crypto", [crypto_row(), crypto_row(type="refund", amount="-5000", net="-5050")], 2, "refund_id"),
    ("crypto", [crypto_row(), crypto_row(type="airdrop")], 2, "unknown type"),
    ("crypto", [crypto_row(), crypto_row(network_fee="-50", net="5050")], 2, "negative fee"),
    ("crypto", [crypto_row(), crypto_row(order_id="")], 2, "order_id"),
    ("crypto", [crypto_row(), crypto_row(order_id="o" * 101)], 2, "merchant reference is longer than 100"),
    ("crypto", [crypto_row(), ""], 2, "line 2"),
]


@pytest.mark.parametrize(("psp", "lines", "bad_line", "says"), MALFORMED,
                         ids=[f"{psp}-{says}-{i}" for i, (psp, _, _, says) in enumerate(MALFORMED)])
async def test_a_report_that_cannot_be_read_raises_malformed_report_naming_the_line(
    psp: str, lines: list[str], bad_line: int, says: str, reports: ReportServer, http: httpx.AsyncClient
) -> None:
    reports.bodies[psp] = ["".join(f"{line}\n" for line in lines)]
    read_before: list[SettlementLine] = []

    with pytest.raises(MalformedReport) as malformed:
        async for line in make_connector(psp, reports.url, http).settlement_report(DAY):
            read_before.append(line)

    assert f"line {bad_line}:" in str(malformed.value) and says in str(malformed.value), malformed.value
    assert str(DAY) in str(malformed.value) and psp in str(malformed.value)
    # The lines before the bad one were read (a CSV report's header holds none).
    header_lines = 0 if psp == "crypto" else 1
    assert len(read_before) == max(0, bad_line - 1 - header_lines)


async def test_a_report_cut_off_mid_stream_is_a_lost_connection(
    reports: ReportServer, http: httpx.AsyncClient
) -> None:
    reports.bodies["card"] = [f"{CARD_HEADER}\n{card_row()}\n", RuntimeError("the PSP's report server fell over")]
    read_before: list[SettlementLine] = []

    with pytest.raises(PspTransientError) as cut:
        async for line in make_connector("card", reports.url, http).settlement_report(DAY):
            read_before.append(line)

    assert cut.value.code == "psp_connection_lost"
    assert len(read_before) == 1


async def test_an_unreachable_report_server_is_psp_unreachable(http: httpx.AsyncClient) -> None:
    sock, url = bound_socket()
    sock.close()  # nothing listens there

    with pytest.raises(PspTransientError) as unreachable:
        [line async for line in make_connector("ewallet", url, http).settlement_report(DAY)]

    assert unreachable.value.code == "psp_unreachable"


async def test_a_report_that_stops_coming_is_a_timeout() -> None:
    app = FastAPI()

    @app.get("/reports/{psp}/settlement")
    async def stalled(psp: str) -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            yield f"{BANK_HEADER}\n"
            await asyncio.sleep(5)  # longer than the client waits for a read

        return StreamingResponse(chunks())

    sock, url = bound_socket()
    async with serve(app, sock), httpx.AsyncClient(timeout=0.2) as impatient:
        with pytest.raises(PspTransientError) as timed_out:
            [line async for line in make_connector("paybybank", url, impatient).settlement_report(DAY)]

    assert timed_out.value.code == "psp_timeout"


# -- the sandbox's discrepancies, in every precision ---------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "gross_minor", "fee_minor", "currency", "lines"),
    [
        ("approve", 5000, 95, "EUR", [(5000, 95, 0)]),
        ("settle_missing", 5000, 95, "EUR", []),
        ("settle_twice", 5000, 95, "EUR", [(5000, 95, 0), (5000, 95, 0)]),
        ("settle_late", 5000, 95, "EUR", [(5000, 95, 1)]),
        ("settle_amount_differs", 5000, 95, "EUR", [(4900, 95, 0)]),  # 1.00 less
        ("settle_amount_differs", 5000, 95, "JPY", [(4999, 95, 0)]),  # 1 yen less
        ("settle_amount_differs", 5000, 95, "KWD", [(4000, 95, 0)]),  # 1.000 dinar less
        ("settle_amount_differs", 100, 26, "EUR", [(99, 26, 0)]),  # 1.00 would leave nothing: 0.01 less
        ("settle_amount_differs", 1, 0, "EUR", [(2, 0, 0)]),  # nothing less is possible: 0.01 more
        ("settle_fee_differs", 5000, 95, "EUR", [(5000, 105, 0)]),  # 0.10 more
        ("settle_fee_differs", 5000, 95, "KWD", [(5000, 195, 0)]),  # 0.100 more
        ("settle_fee_differs", 5000, 44, "JPY", [(5000, 45, 0)]),  # a yen has no tenth: 1 more
    ],
)
def test_a_discrepancy_changes_a_capture_line_in_the_currencys_own_units(
    scenario: str, gross_minor: int, fee_minor: int, currency: str, lines: list[tuple[int, int, int]]
) -> None:
    assert discrepancies(Settled(CAPTURE, "pay_1", "ref_1", currency, gross_minor, fee_minor, scenario)) == lines


def test_a_discrepancy_scenario_changes_only_the_capture_line() -> None:
    refund = Settled(REFUND, "rf_1", "ref_1", "EUR", -5000, 10, "settle_missing")

    assert discrepancies(refund) == [(-5000, 10, 0)]
