"""Settlement reports over real HTTP: the sandbox writes each family's report (psp/sandbox/settlement.py), each
connector streams it and reads it with its own parser (psp/*_connector.py), and what comes out is exactly what the
PSP settled, priced as the routing file quotes it (what our ledger books).

The module runs its own sandbox, so only its own records settle there, and gives each test a report day of its own
(`book_on`), so tests never see each other's lines.
"""

from __future__ import annotations

import asyncio
import itertools
import tracemalloc
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from payloop.settings import Settings
from payloop.settlement import (
    CAPTURE,
    CHARGEBACK,
    CHARGEBACK_FEE,
    CHARGEBACK_REVERSAL,
    PAYOUT,
    REFUND,
    SettlementLine,
    SettlementTerms,
)
from psp.base import PspPayment, PspRequestRejected, PspTransientError
from psp.http_connector import HttpPspConnector
from psp.registry import PROVIDERS
from psp.routing import PspConfig, default_routing_path, load_routing_file
from psp.sandbox import SandboxConfig, create_app
from psp.sandbox_connector import SandboxConnector
from psp.scenarios import PSPS, SETTLEMENT_SCENARIOS
from tests.psp.psp_testkit import (
    PSP_METHOD,
    RETRY_DELAYS,
    WEBHOOK_SECRET,
    RunningSandbox,
    WebhookReceiver,
    bound_socket,
    captured_payment,
    eventually,
    make_connector,
    payout_request,
    psp_mode,
    refund_request,
    serve,
)

ROUTING = load_routing_file(default_routing_path())
DISPUTING_PSPS = ("card", "card_b", "ewallet")
_DAYS = itertools.count()


@pytest.fixture(scope="module")
async def own_sandbox(receiver: WebhookReceiver) -> AsyncIterator[RunningSandbox]:
    sock, url = bound_socket()
    config = SandboxConfig(webhook_url_template=receiver.url + "/webhooks/{psp}", webhook_secret=WEBHOOK_SECRET,
                           public_url=url, settle_delay_seconds=0.02, webhook_retry_delays=RETRY_DELAYS)
    async with serve(create_app(config), sock):
        yield RunningSandbox(url, config)


@pytest.fixture
async def day(own_sandbox: RunningSandbox, http: httpx.AsyncClient) -> AsyncIterator[date]:
    """A report day no other test uses, on which every sandbox PSP books from now on (back to the real day after)."""
    report_day = date(2031, 1, 1) + timedelta(days=2 * next(_DAYS))  # every other day: settle_late's is free too
    answers = await asyncio.gather(*(control(http, own_sandbox, psp, {"book_on": report_day.isoformat()})
                                     for psp in PSPS))
    assert {answer.status_code for answer in answers} == {200}
    yield report_day
    await asyncio.gather(*(control(http, own_sandbox, psp, {"book_on": None}) for psp in PSPS))


@pytest.fixture
def psps(own_sandbox: RunningSandbox, http: httpx.AsyncClient) -> dict[str, HttpPspConnector]:
    return {psp: make_connector(psp, own_sandbox.url, http) for psp in PSPS}


async def control(http: httpx.AsyncClient, sandbox: RunningSandbox, psp: str, body: Any) -> httpx.Response:
    return await http.post(f"{sandbox.url}/control/{psp}/settlement", json=body)


async def report(connector: HttpPspConnector, day: date) -> list[SettlementLine]:
    return [line async for line in connector.settlement_report(day)]


def config(psp: str) -> PspConfig:
    found = ROUTING.psp(psp)
    assert found is not None
    return found


@dataclass(frozen=True)
class Expected:
    """A line as expected, but for its line id (the PSP's own)."""

    kind: str
    merchant_reference: str | None
    psp_reference: str
    gross_minor: int
    fee_minor: int
    currency: str = "EUR"

    @classmethod
    def of(cls, line: SettlementLine) -> Expected:
        return cls(line.kind, line.merchant_reference, line.psp_reference, line.gross_minor, line.fee_minor,
                   line.currency)


def capture(payment: PspPayment, gross_minor: int | None = None, fee_extra_minor: int = 0) -> Expected:
    fee_minor = config(payment.psp).fee_minor(payment.amount_minor, payment.currency) + fee_extra_minor
    gross_minor = payment.amount_minor if gross_minor is None else gross_minor
    return Expected(CAPTURE, payment.payment_id, payment.psp_reference, gross_minor, fee_minor, payment.currency)


def expected_of(lines: list[SettlementLine], day: date, psp: str) -> Counter[Expected]:
    assert all(line.booked_on == day and line.psp == psp for line in lines), lines
    assert len({line.line_id for line in lines}) == len(lines), "line ids are unique"
    return Counter(Expected.of(line) for line in lines)


async def refunded(connector: HttpPspConnector, payment: PspPayment, amount_minor: int) -> Expected:
    refund = await connector.create_refund(refund_request(payment, amount_minor))

    async def succeeded() -> bool:
        return (await connector.get_refund(refund.refund_id)).status == "succeeded"

    await eventually(succeeded)
    fee_minor = config(connector.name).refund_fee_minor(amount_minor, payment.currency)
    return Expected(REFUND, refund.refund_id, refund.psp_reference, -amount_minor, fee_minor)


async def paid_out(connector: HttpPspConnector, amount_minor: int) -> Expected:
    payout = await connector.create_payout(payout_request(method=PSP_METHOD[connector.name], amount_minor=amount_minor))

    async def paid() -> bool:
        return (await connector.get_payout(payout.payout_id)).status == "paid"

    await eventually(paid)
    fee_minor = config(connector.name).payout_fee_minor(amount_minor, "EUR")
    return Expected(PAYOUT, payout.payout_id, payout.psp_reference, -amount_minor, fee_minor)


async def disputed(
    http: httpx.AsyncClient, sandbox: RunningSandbox, payment: PspPayment, amount_minor: int, outcome: str
) -> list[Expected]:
    """The lines of a dispute of `amount_minor` on `payment`, opened and then `outcome` (won / lost)."""
    psp, amount = payment.psp, f"{amount_minor // 100}.{amount_minor % 100:02d}"
    opened = await http.post(f"{sandbox.url}/control/{psp}/disputes",
                             json={"payment_id": payment.payment_id, "amount": amount, "reason_code": "10.4"})
    dispute_id = opened.json()["dispute_id"]
    resolved = await http.post(f"{sandbox.url}/control/{psp}/disputes/{dispute_id}/resolve", json={"outcome": outcome})
    assert resolved.status_code == 200
    chargeback = Expected(CHARGEBACK, payment.payment_id, dispute_id, -amount_minor, 0)
    if outcome == "won":
        return [chargeback, Expected(CHARGEBACK_REVERSAL, payment.payment_id, dispute_id, amount_minor, 0)]
    fee_minor = config(psp).chargeback_fee_minor(amount_minor, "EUR")
    return [chargeback, Expected(CHARGEBACK_FEE, payment.payment_id, dispute_id, 0, fee_minor)]


# -- a clean day ----------------------------------------------------------------------------------


@pytest.mark.parametrize("psp", PSPS)
async def test_a_clean_day_parses_into_exactly_what_the_psp_settled(
    psp: str, day: date, psps: dict[str, HttpPspConnector], http: httpx.AsyncClient, own_sandbox: RunningSandbox
) -> None:
    connector = psps[psp]
    first, second, won, lost = await asyncio.gather(
        *(captured_payment(psp, connector, http, amount_minor=amount) for amount in (5000, 12345, 7000, 3000)))
    refund, payout = await asyncio.gather(refunded(connector, first, 2000), paid_out(connector, 4000))
    expected = [capture(first), capture(second), refund, payout]
    if psp in DISPUTING_PSPS:
        expected += [*await disputed(http, own_sandbox, won, 1000, "won"),
                     *await disputed(http, own_sandbox, lost, 3000, "lost")]
    expected += [capture(won), capture(lost)]

    lines = await report(connector, day)

    assert expected_of(lines, day, psp) == Counter(expected)
    assert [line.line_id for line in await report(connector, day)] == [line.line_id for line in lines]
    assert await report(connector, day + timedelta(days=1)) == []


def test_each_psp_says_its_settlement_terms() -> None:
    terms = {p.name: p.connector(Settings(), httpx.AsyncClient()).settlement_terms for p in PROVIDERS}

    assert terms == {"card": SettlementTerms(sla_days=2, fee_tolerance_minor=0),
                     "card_b": SettlementTerms(sla_days=2, fee_tolerance_minor=0),
                     "ewallet": SettlementTerms(sla_days=1, fee_tolerance_minor=0),
                     "ewallet_b": SettlementTerms(sla_days=1, fee_tolerance_minor=0),
                     "paybybank": SettlementTerms(sla_days=1, fee_tolerance_minor=0),
                     "paybybank_b": SettlementTerms(sla_days=1, fee_tolerance_minor=0),
                     "crypto_b": SettlementTerms(sla_days=1, fee_tolerance_minor=0),
                     "crypto": SettlementTerms(sla_days=1, fee_tolerance_minor=0)}


# -- discrepancies -------------------------------------------------------------------------------


@pytest.mark.parametrize("psp", PSPS)
async def test_each_settlement_scenario_changes_the_capture_line_only(
    psp: str, day: date, psps: dict[str, HttpPspConnector], http: httpx.AsyncClient
) -> None:
    connector = psps[psp]
    scenarios = ("approve", *sorted(SETTLEMENT_SCENARIOS))
    captured = await asyncio.gather(*(captured_payment(psp, connector, http, scenario=s) for s in scenarios))
    payments = dict(zip(scenarios, captured, strict=True))

    lines, next_day = await report(connector, day), await report(connector, day + timedelta(days=1))

    # The payment itself behaved as `approve`: captured, of the amount asked, with the PSP's fee where it reports one.
    assert {p.status for p in payments.values()} == {"captured"}
    assert {p.amount_minor for p in payments.values()} == {5000}
    assert len({p.fee_minor for p in payments.values()}) == 1
    assert expected_of(lines, day, psp) == Counter({
        capture(payments["approve"]): 1,
        capture(payments["settle_twice"]): 2,  # two lines, two ids (expected_of checks)
        capture(payments["settle_amount_differs"], gross_minor=4900): 1,
        capture(payments["settle_fee_differs"], fee_extra_minor=10): 1,
    })
    assert expected_of(next_day, day + timedelta(days=1), psp) == Counter({capture(payments["settle_late"]): 1})


# -- controls ------------------------------------------------------------------------------------


@pytest.mark.parametrize("psp", PSPS)
async def test_an_orphan_line_settles_a_payment_never_made(
    psp: str, day: date, psps: dict[str, HttpPspConnector], http: httpx.AsyncClient, own_sandbox: RunningSandbox
) -> None:
    orphan = {"date": day.isoformat(), "psp_reference": f"{psp}_ghost_1", "amount": "25.5", "currency": "EUR"}

    answer = await control(http, own_sandbox, psp, {"orphan": orphan})

    fee_minor = config(psp).fee_minor(2550, "EUR")
    assert answer.status_code == 200
    stored = answer.json()
    assert stored == {"psp": psp, "orphan": {**orphan, "amount": "25.50", "line_id": stored["orphan"]["line_id"],
                                             "fee": f"0.{fee_minor:02d}"}}
    [line] = await report(psps[psp], day)
    assert line == SettlementLine(psp, stored["orphan"]["line_id"], CAPTURE, None, f"{psp}_ghost_1", "EUR", 2550,
                                  fee_minor, day, line.batch)


async def test_book_on_moves_every_line_booked_from_then_on_and_null_returns_to_the_real_day(
    day: date, psps: dict[str, HttpPspConnector], http: httpx.AsyncClient, own_sandbox: RunningSandbox
) -> None:
    card = psps["card"]
    booked = await captured_payment("card", card, http)
    late = await captured_payment("card", card, http, scenario="settle_late")

    assert (await control(http, own_sandbox, "card", {"book_on": None})).json() == {"psp": "card", "book_on": None}
    before = datetime.now(UTC).date()
    real = await captured_payment("card", card, http)
    real_days = {before, datetime.now(UTC).date()}  # the capture may straddle midnight
    later_day = day + timedelta(days=30)
    answer = await control(http, own_sandbox, "card", {"book_on": later_day.isoformat()})
    moved = await captured_payment("card", card, http)

    assert answer.json() == {"psp": "card", "book_on": later_day.isoformat()}
    assert [Expected.of(line) for line in await report(card, day)] == [capture(booked)]
    assert [Expected.of(line) for line in await report(card, day + timedelta(days=1))] == [capture(late)]
    assert [Expected.of(line) for line in await report(card, later_day)] == [capture(moved)]
    real_lines = [line for d in sorted(real_days) for line in await report(card, d)
                  if line.merchant_reference == real.payment_id]
    assert [Expected.of(line) for line in real_lines] == [capture(real)]
    assert real_lines[0].booked_on in real_days
    # Each PSP books on its own day: the e-wallet still on the test's.
    wallet = await captured_payment("ewallet", psps["ewallet"], http)
    assert [Expected.of(line) for line in await report(psps["ewallet"], day)] == [capture(wallet)]


@pytest.mark.parametrize("psp", PSPS)
async def test_synthetic_lines_follow_their_spec_with_ids_of_their_own(
    psp: str, day: date, psps: dict[str, HttpPspConnector], http: httpx.AsyncClient, own_sandbox: RunningSandbox
) -> None:
    spec = {"date": day.isoformat(), "count": 3, "currency": "JPY", "amount": "1000", "fee": "0",
            "merchant_reference_prefix": "bench_", "psp_reference_prefix": "ref_"}
    for prefix in ("a_", "b_"):
        answer = await control(http, own_sandbox, psp, {"synthetic": {**spec, "merchant_reference_prefix": prefix}})
        assert answer.json() == {"psp": psp, "synthetic": {**spec, "merchant_reference_prefix": prefix}}

    lines = await report(psps[psp], day)

    assert expected_of(lines, day, psp) == Counter(
        Expected(CAPTURE, f"{prefix}{i}", f"ref_{i}", 1000, 0, "JPY") for prefix in ("a_", "b_") for i in range(3))
    assert [line.line_id for line in await report(psps[psp], day)] == [line.line_id for line in lines]


# The streaming machinery is the same for every PSP; one CSV and the NDJSON report are enough to watch its memory.
@pytest.mark.parametrize("psp", ["card", "crypto"])
async def test_synthetic_lines_stream_and_parse_in_bounded_memory(
    psp: str, day: date, psps: dict[str, HttpPspConnector], http: httpx.AsyncClient, own_sandbox: RunningSandbox
) -> None:
    count = 10_000
    spec = {"date": day.isoformat(), "count": count, "currency": "EUR", "amount": "10.00", "fee": "0.15",
            "merchant_reference_prefix": "syn_pay_", "psp_reference_prefix": f"{psp}_syn_"}
    answer = await control(http, own_sandbox, psp, {"synthetic": spec})
    assert answer.json() == {"psp": psp, "synthetic": spec}

    parsed, first_id, peaks_bytes = 0, None, []
    tracemalloc.start()  # both sides, the sandbox writing and the connector reading, run in this process
    try:
        async for line in psps[psp].settlement_report(day):  # each line looked at and dropped, as a run does
            assert (line.kind, line.merchant_reference, line.psp_reference, line.gross_minor, line.fee_minor) == (
                CAPTURE, f"syn_pay_{parsed}", f"{psp}_syn_{parsed}", 1000, 15)
            first_id = first_id or line.line_id
            parsed += 1
            if parsed in (count // 2, count):
                peaks_bytes.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()

    assert parsed == count
    # Never read whole: the report as text is over 1 MB, read and decoded twice that.
    assert peaks_bytes[-1] < 1_200_000, peaks_bytes
    # Nothing kept per line: the second half of the report adds nothing to the peak of the first (a tenth of a
    # kilobyte kept per line would add 500 kB).
    assert peaks_bytes[1] - peaks_bytes[0] < 150_000, peaks_bytes
    # Generated again on every fetch, with the same ids; a reader may stop early (and close the stream).
    async with aclosing(cast(AsyncGenerator[SettlementLine, None], psps[psp].settlement_report(day))) as again:
        assert (await anext(again)).line_id == first_id


# -- refusals ------------------------------------------------------------------------------------


async def test_an_unknown_psp_is_404_and_a_bad_date_422_in_the_psps_own_error_shape(
    http: httpx.AsyncClient, own_sandbox: RunningSandbox, psps: dict[str, HttpPspConnector]
) -> None:
    url = own_sandbox.url
    unknown = await http.get(f"{url}/reports/nope/settlement", params={"date": "2031-01-02"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_psp")
    for bad in ("2031-02-30", "20310102", "2031-1-2", "yesterday", ""):
        answer = await http.get(f"{url}/reports/ewallet/settlement", params={"date": bad})
        assert (answer.status_code, answer.json()["errorCode"]) == (422, "invalid_date"), bad
    missing = await http.get(f"{url}/reports/paybybank/settlement")
    assert (missing.status_code, missing.json()["error_code"]) == (422, "invalid_date")

    ghost = SandboxConnector("ghost", frozenset({"card"}), f"{url}/ghost", http)
    with pytest.raises(PspRequestRejected) as rejected:
        await report(ghost, date(2031, 1, 2))
    assert rejected.value.code == "unknown_psp"


async def test_a_psp_down_answers_its_reports_as_a_transient_error(
    http: httpx.AsyncClient, own_sandbox: RunningSandbox, psps: dict[str, HttpPspConnector]
) -> None:
    async with psp_mode(http, own_sandbox, "crypto", "down"):
        with pytest.raises(PspTransientError) as down:
            await report(psps["crypto"], date(2031, 1, 2))
    assert down.value.code == "psp_unavailable"


def _bad_controls() -> Iterator[tuple[str, Any]]:
    orphan = {"date": "2031-01-02", "psp_reference": "ghost_1", "amount": "10.00", "currency": "EUR"}
    synthetic = {"date": "2031-01-02", "count": 10, "currency": "EUR", "amount": "10.00", "fee": "0",
                 "merchant_reference_prefix": "m_", "psp_reference_prefix": "p_"}
    yield "nothing", {}
    yield "two at once", {"book_on": "2031-01-02", "orphan": orphan}
    yield "unknown control", {"close_batch": True}
    yield "null orphan", {"orphan": None}
    yield "book_on not a day", {"book_on": "2031-02-30"}
    yield "book_on a number", {"book_on": 20310102}
    yield "not JSON", "nope"
    for field, value in (("date", "02/01/2031"), ("amount", "10.001"), ("amount", "0"), ("amount", 10),
                         ("currency", "eur"), ("currency", "XXX"), ("psp_reference", "a b"), ("extra", 1)):
        yield f"orphan {field}={value!r}", {"orphan": {**orphan, field: value}}
    for field, value in (("count", 0), ("count", True), ("count", "10"), ("count", 1_000_001), ("fee", "-1"),
                         ("fee", "0.001"), ("merchant_reference_prefix", ""), ("psp_reference_prefix", "x" * 65)):
        yield f"synthetic {field}={value!r}", {"synthetic": {**synthetic, field: value}}
    yield "synthetic without a field", {"synthetic": {k: v for k, v in synthetic.items() if k != "fee"}}


@pytest.mark.parametrize(("case", "body"), list(_bad_controls()), ids=[case for case, _ in _bad_controls()])
async def test_a_settlement_control_is_validated_strictly(
    case: str, body: Any, http: httpx.AsyncClient, own_sandbox: RunningSandbox
) -> None:
    answer = await control(http, own_sandbox, "card", body)

    assert answer.status_code == 422, answer.text
    assert set(answer.json()) == {"error", "message"}


async def test_a_settlement_control_of_an_unknown_psp_is_404(
    http: httpx.AsyncClient, own_sandbox: RunningSandbox
) -> None:
    answer = await control(http, own_sandbox, "nope", {"book_on": None})

    assert (answer.status_code, answer.json()["error"]) == (404, "unknown_psp")
