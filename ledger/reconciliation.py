"""Reconciliation: a PSP's settlement report (payloop/settlement.py), line by line, against the ledger's movements
at that PSP (the README's "Reconciliation" says it for operators).

A run is one PSP and one UTC day, evaluated at one frozen moment (`evaluated_at`). The caller opens it, feeds the
report in chunks (`classify_lines`, one transaction per chunk), then closes it (`close_run`):

- Each line finds its ledger item (a capture, refund, payout, or a dispute's chargeback, reversal or fee) by our id,
  else by the PSP's reference, with a handful of set-based queries per chunk, and gets exactly one class:
  missing_in_ledger (no item), status_mismatch (the item never moved money), duplicate (another line settled it),
  currency_mismatch, amount_mismatch (gross), fee_variance (beyond the PSP's tolerance) or matched.
- A matched line settles its item: a `recon_settlements` row (its primary key (psp, kind, item_key) is what makes a
  second line a duplicate, even under concurrent runs) and, in the same transaction, the settlement transfers:
  its net between the PSP clearing and `house:bank` (positive: the PSP paid us), a fee difference within tolerance
  between the PSP's fee account and its clearing, and for a payout `house:payouts → clearing` (the PSP paid our
  player from what it held for us). The item's clearing then nets to zero.
- A line settles at most once (a unique (psp, line_id) on recon_settlements): a line that settled something
  before — matched in another run, or settled by a case's resolution — posts nothing again; it is matched if it
  settled the item it names, else a duplicate at best. A line that settles an item closes the open cases of that
  line and that item (auto_matched), so no one resolves them into a second posting.
- Closing the run classifies the items of its day no line settled: `expected` until the end of day + sla_days,
  then `missing_at_psp`; an item some other run's line settled counts as matched for this day; an item a line's
  open case is about is left to that case.
- Every class but matched and expected opens a case, one per (PSP, line key), so a re-run of the day with another
  as-of updates the same case. A person resolves it (`resolve_case`): accept, adjust, write_off or rematch; money
  moves only as transfers `recon:<case_id>:<step>` referencing the case, and never for a line or an item settled
  already (AlreadySettled).

Everything is deterministic given the report and the database: re-running a run skips what it classified, and
every transfer id is derived from what it settles, so nothing is posted twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Integer,
    String,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Select

from ledger import transfer_ids
from ledger.accounts import (
    bank_account,
    fee_account,
    is_valid_owner,
    payouts_account,
    psp_clearing_account,
    recon_adjustments_account,
    recon_write_offs_account,
)
from ledger.errors import AlreadyFinal, LedgerError, RecordNotFound
from ledger.models import (
    disputes,
    payments,
    payouts,
    psp_fees,
    recon_cases,
    recon_lines,
    recon_runs,
    recon_settlements,
    refunds,
)
from ledger.service import Ledger, TransferRequest, check_minor_units
from payloop.db import insert_if_missing
from payloop.settlement import (
    CAPTURE,
    CHARGEBACK,
    CHARGEBACK_FEE,
    CHARGEBACK_REVERSAL,
    LINE_KINDS,
    PAYOUT,
    REFUND,
    SettlementLine,
    SettlementTerms,
)

MATCHED, EXPECTED = "matched", "expected"
MISSING_IN_LEDGER, MISSING_AT_PSP = "missing_in_ledger", "missing_at_psp"
AMOUNT_MISMATCH, CURRENCY_MISMATCH, FEE_VARIANCE = "amount_mismatch", "currency_mismatch", "fee_variance"
DUPLICATE, STATUS_MISMATCH = "duplicate", "status_mismatch"
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
OPEN, RESOLVED = "open", "resolved"
ACCEPT, ADJUST, WRITE_OFF, REMATCH = "accept", "adjust", "write_off", "rematch"
ACTIONS = (ACCEPT, ADJUST, WRITE_OFF, REMATCH)
MONEY_ACTIONS = (ADJUST, WRITE_OFF, REMATCH)
# A case reconciliation closed itself: a line settled what it was about (the case's line, or its item).
AUTO_MATCHED, AUTO_RESOLVER = "auto_matched", "reconciliation"
# A line whose item was found, can settle and was not settled yet, but differs: settling it settles the item.
_ITEM_CLASSES = (AMOUNT_MISMATCH, CURRENCY_MISMATCH, FEE_VARIANCE)
DISPUTE_KINDS = (CHARGEBACK, CHARGEBACK_REVERSAL, CHARGEBACK_FEE)
# Transfer kinds (at most 32 characters).
SETTLEMENT, FEE_DIFFERENCE, PAID_OUT = "settlement", "settlement_fee_difference", "settlement_paid_out"
ADJUSTMENT, WRITE_OFF_KIND = "recon_adjustment", "recon_write_off"
LIST_LIMIT_MAX = 500
_CASES_BATCH = 1_000
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ReconRun:
    run_id: str
    psp: str
    day: date
    as_of: datetime | None
    evaluated_at: datetime  # the SLAs are judged at this moment, the same every time the run is re-run
    state: str  # running | completed | failed
    failure_reason: str | None
    # Once completed: per class, {"count": n, "sums_minor": {currency: sum of |gross|}} of its lines and items.
    counts: dict[str, Any] | None
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReconCase:
    case_id: str
    psp: str
    line_key: str  # `line:<line_id>` or `ledger:<kind>:<item_key>`
    class_: str
    state: str  # open | resolved
    day: date  # the day of the run that opened it
    kind: str
    item_key: str | None
    method: str | None
    payment_id: str | None  # the deposit it is about (a capture's, a refund's or a dispute's payment)
    line_id: str | None
    psp_reference: str | None
    booked_on: date | None
    currency: str | None  # as the PSP reported the line
    gross_minor: int | None
    fee_minor: int | None
    ledger_currency: str | None  # as the ledger booked the item
    ledger_gross_minor: int | None
    ledger_fee_minor: int | None
    first_run_id: str
    last_run_id: str
    created_at: datetime
    updated_at: datetime
    resolution_action: str | None
    resolution_amount_minor: int | None  # adjust: the amount asked; write_off: the residual written off
    resolution_rematch_with: str | None
    resolution_note: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_transfer_ids: list[str] | None


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One booked day, PSP, method and currency of the settlement report; amounts signed as the lines' gross."""

    day: date
    psp: str
    method: str | None
    currency: str
    captures: int
    captures_gross_minor: int
    fees_minor: int
    refunds_minor: int
    payouts_minor: int
    chargebacks_minor: int  # net of reversals
    net_settled_minor: int
    open_cases: int
    open_differences_minor: int  # sum of |gross| of the open cases


@dataclass(frozen=True, slots=True)
class Item:
    """A ledger movement a PSP settles, as the ledger booked it (gross signed like a line's)."""

    kind: str
    item_key: str
    currency: str
    gross_minor: int
    fee_minor: int
    method: str | None
    payment_id: str | None
    psp_reference: str | None
    status_ok: bool  # it moved money (captured, succeeded, paid, the dispute in the kind's state)

    @property
    def net_minor(self) -> int:
        return self.gross_minor - self.fee_minor

    @property
    def paid_out_minor(self) -> int:
        """What settling a payout moves from house:payouts to the clearing (the PSP paid it from our balance)."""
        return -self.gross_minor if self.kind == PAYOUT else 0


class RematchFailed(LedgerError):
    """A case's line does not match the item named for it: it would be `would_be_class`; nothing was written."""

    code = "recon_rematch_failed"

    def __init__(self, case_id: str, would_be_class: str) -> None:
        super().__init__(f"case {case_id}: the line would be {would_be_class}, not matched")
        self.case_id = case_id
        self.would_be_class = would_be_class


class AlreadySettled(LedgerError):
    """A case's line, or the item it is about, is settled already (by a match, or another case's resolution):
    moving its money again would post it twice; nothing was written. The API answers 409."""

    code = "recon_already_settled"

    def __init__(self, case_id: str) -> None:
        super().__init__(f"case {case_id}: its line or its item is settled already")
        self.case_id = case_id


# ---- runs ---------------------------------------------------------------------------------------------------


def run_id_for(psp: str, day: date, as_of: datetime | None) -> str:
    if as_of is None:
        return f"{psp}-{day.isoformat()}"
    return f"{psp}-{day.isoformat()}-asof-{_utc(as_of):%Y%m%dT%H%M%SZ}"


async def open_run(engine: AsyncEngine, *, psp: str, day: date, as_of: datetime | None, now: datetime) -> ReconRun:
    """The run of (psp, day, as_of), created running if new; an existing one as it is (its evaluated_at kept),
    except that a failed run is running again."""
    if not is_valid_owner(psp):
        raise ValueError(f"invalid PSP name {psp!r}")
    run_id = run_id_for(psp, day, as_of)
    async with engine.begin() as conn:
        await insert_if_missing(conn, recon_runs, {
            "run_id": run_id, "psp": psp, "day": day, "as_of": as_of, "state": RUNNING, "started_at": now,
            "evaluated_at": _utc(as_of) if as_of is not None else now,
        })
        await conn.execute(update(recon_runs).where(recon_runs.c.run_id == run_id, recon_runs.c.state == FAILED)
                           .values(state=RUNNING, failure_reason=None, finished_at=None))
        return await _run(conn, run_id)


async def fail_run(engine: AsyncEngine, run_id: str, reason: str, now: datetime) -> ReconRun:
    """The run stops (a report that cannot be read, a PSP that does not answer): what it classified stays; opening
    it again re-runs it. A completed run cannot fail (AlreadyFinal)."""
    async with engine.begin() as conn:
        await conn.execute(update(recon_runs).where(recon_runs.c.run_id == run_id, recon_runs.c.state != COMPLETED)
                           .values(state=FAILED, failure_reason=reason[:500], finished_at=now))
        run = await _run(conn, run_id)
    if run.state != FAILED:
        raise AlreadyFinal("recon_run", run_id, run.state)
    return run


async def get_run(engine: AsyncEngine, run_id: str) -> ReconRun | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(recon_runs).where(recon_runs.c.run_id == run_id))).one_or_none()
    return _from_row(ReconRun, row) if row else None


async def list_runs(engine: AsyncEngine, *, psp: str | None = None, day: date | None = None, limit: int = 50,
                    before: str | None = None) -> list[ReconRun]:
    """Runs newest first (started_at, then run id, descending); `before` is the last run id of the previous page
    (RecordNotFound if unknown)."""
    rows = await _newest_first(engine, recon_runs, "started_at", {"psp": psp, "day": day}, limit, before)
    return [_from_row(ReconRun, row) for row in rows]


# ---- a chunk of lines -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Verdict:
    line: SettlementLine
    item: Item | None
    class_: str
    settled_before: bool = False  # the line settled something already (a match, a resolution): it posts nothing


async def classify_lines(ledger: Ledger, run_id: str, lines: Sequence[SettlementLine], *, terms: SettlementTerms,
                         now: datetime) -> dict[str, int]:
    """Classify one chunk of the run's report and settle its matched lines: one transaction. A line this run
    classified before is skipped (counted as `already_classified`). The classes of the chunk's new lines, counted.

    A failed run is re-opened first (open_run); a completed one only re-reads what it classified: a line it has
    not seen means its report changed, which is another run (another as_of), so AlreadyFinal.
    """

    async def tx(conn: AsyncConnection) -> dict[str, int]:
        await _plan_each_statement(conn)
        run = await _run(conn, run_id)
        for line in lines:
            if line.psp != run.psp or line.kind not in LINE_KINDS:
                raise ValueError(f"line {line.line_id}: a {line.kind!r} line of {line.psp}, in a run of {run.psp}")
        todo = await _not_classified(conn, run_id, lines)
        if run.state != RUNNING and (todo or run.state == FAILED):
            raise AlreadyFinal("recon_run", run_id, run.state)
        verdicts = await _classify(conn, run.psp, todo, terms)
        verdicts, settled = await _claim_settlements(conn, run, verdicts, now)
        await _write_lines_and_cases(conn, run, verdicts, now)
        await _auto_close(conn, run.psp, {
            key: f"settled by line {v.line.line_id} (run {run.run_id})"
            for v in verdicts if v.class_ == MATCHED and v.item is not None
            for key in (line_key(v.line), item_case_key(v.item.kind, v.item.item_key))}, now)
        # Last: the accounts (a PSP's clearing is busy) stay locked only for the rest of the transaction.
        await ledger.post_transfers_in(conn, [req for s in settled for req in _settlement_requests(run.psp, s)])
        counts: dict[str, int] = {"already_classified": len(lines) - len(todo)}
        for v in verdicts:
            counts[v.class_] = counts.get(v.class_, 0) + 1
        return counts

    return await ledger.transaction(tx)


def line_key(line: SettlementLine) -> str:
    return f"line:{line.line_id}"


def item_case_key(kind: str, item_key: str) -> str:
    return f"ledger:{kind}:{item_key}"


async def _not_classified(conn: AsyncConnection, run_id: str, lines: Sequence[SettlementLine]
                          ) -> list[SettlementLine]:
    """The lines of the chunk this run has not classified yet (each line once)."""
    keys = sorted({line_key(line) for line in lines})
    done = set((await conn.execute(select(recon_lines.c.line_key).where(
        recon_lines.c.run_id == run_id, recon_lines.c.line_key.in_(keys)))).scalars())
    todo = []
    for line in lines:
        if (key := line_key(line)) not in done:
            todo.append(line)
            done.add(key)
    return todo


async def _classify(conn: AsyncConnection, psp: str, lines: list[SettlementLine], terms: SettlementTerms
                    ) -> list[_Verdict]:
    """Each line's item and class, in the chunk's order: the first line to settle an item wins it.

    A line that settled something before (in another run, or by a case's resolution) posts nothing again: it is
    matched if it settled the item it names, else classified as before, except that it cannot be matched (it
    did not settle that item, and settling it would post the line's net a second time): then it is a duplicate.
    """
    found = await _find_items(conn, psp, lines)
    items = [found.get(_lookup(psp, line)) for line in lines]
    settled_by = await _settled_by(conn, psp, [item for item in items if item is not None])
    line_settled = await _lines_settled(conn, psp, [line.line_id for line in lines])
    verdicts = []
    for line, item in zip(lines, items, strict=True):
        class_ = _class_of(line, item, settled_by, terms)
        if (before := line_settled.get(line.line_id)) is not None:
            class_ = MATCHED if item is not None and before == (item.kind, item.item_key) else (
                DUPLICATE if class_ == MATCHED else class_)
            verdicts.append(_Verdict(line, item, class_, settled_before=True))
            continue
        if class_ == MATCHED and item is not None:
            settled_by.setdefault((item.kind, item.item_key), line.line_id)
        verdicts.append(_Verdict(line, item, class_))
    return verdicts


def _class_of(line: SettlementLine, item: Item | None, settled_by: dict[tuple[str, str], str | None],
              terms: SettlementTerms) -> str:
    """The spec's precedence: no item, an item that moved no money, settled by another line, currency, gross,
    fee beyond tolerance; else matched."""
    if item is None:
        return MISSING_IN_LEDGER
    if not item.status_ok:
        return STATUS_MISMATCH
    key = (item.kind, item.item_key)
    if key in settled_by and settled_by[key] != line.line_id:
        return DUPLICATE
    if line.currency != item.currency:
        return CURRENCY_MISMATCH
    if line.gross_minor != item.gross_minor:
        return AMOUNT_MISMATCH
    if abs(line.fee_minor - item.fee_minor) > terms.fee_tolerance_minor:
        return FEE_VARIANCE
    return MATCHED


def _lookup(psp: str, line: SettlementLine) -> tuple[str, str, str]:
    """How a line finds its item: (kind, 'id', our key) or (kind, 'ref', the PSP's reference)."""
    if line.kind in DISPUTE_KINDS:
        return line.kind, "id", transfer_ids.dispute_key(psp, line.psp_reference)
    if line.merchant_reference is not None:
        return line.kind, "id", line.merchant_reference
    return line.kind, "ref", line.psp_reference


async def _find_items(conn: AsyncConnection, psp: str, lines: Iterable[SettlementLine]
                      ) -> dict[tuple[str, str, str], Item]:
    """The items the lines name, one query per kind present: by (kind, 'id', key) and (kind, 'ref', reference)."""
    wanted: dict[str, tuple[set[str], set[str]]] = {}
    for line in lines:
        kind, how, value = _lookup(psp, line)
        ids, refs = wanted.setdefault(kind, (set(), set()))
        (ids if how == "id" else refs).add(value)
    found: dict[tuple[str, str, str], Item] = {}
    for kind, (ids, refs) in sorted(wanted.items()):
        query = _items_of(kind, psp).where(_item_wanted(kind, psp, ids, refs))
        # Ordered, so that of two items with one PSP reference the same one is found every time.
        for row in await conn.execute(query.order_by(query.selected_columns.item_key)):
            item = replace(_from_row(Item, row), status_ok=bool(row.status_ok))
            found.setdefault((kind, "id", item.item_key), item)
            if item.psp_reference is not None:
                found.setdefault((kind, "ref", item.psp_reference), item)
    return found


async def _settled_by(conn: AsyncConnection, psp: str, items: list[Item]) -> dict[tuple[str, str], str | None]:
    """(kind, item_key) → the line id that settled it (None: a case's resolution), for the items settled."""
    if not items:
        return {}
    s = recon_settlements.c
    # All three columns of the primary key: an index look-up per item, whatever the PSP's settlements so far.
    rows = await conn.execute(select(s.kind, s.item_key, s.line_id).where(
        s.psp == psp, s.kind.in_(sorted({item.kind for item in items})),
        s.item_key.in_(sorted({item.item_key for item in items}))))
    return {(kind, item_key): line_id for kind, item_key, line_id in rows}


async def _lines_settled(conn: AsyncConnection, psp: str, line_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """line id → (kind, item_key) of what it settled, for the lines that settled something (the unique index on
    (psp, line_id) makes it one look-up per line)."""
    if not line_ids:
        return {}
    s = recon_settlements.c
    rows = await conn.execute(select(s.line_id, s.kind, s.item_key).where(
        s.psp == psp, s.line_id.in_(sorted(set(line_ids)))))
    return {line_id: (kind, item_key) for line_id, kind, item_key in rows}


async def _claim_settlements(conn: AsyncConnection, run: ReconRun, verdicts: list[_Verdict], now: datetime
                             ) -> tuple[list[_Verdict], list[_Settlement]]:
    """Insert the settlement rows of the matched lines: the verdicts, and the settlements this call inserted (whose
    transfers are to post). An item the same line settled before (a re-run with another as-of) stays matched and
    posts nothing again; one another line settled in the meantime (a concurrent run committed first), or a line
    settled meanwhile under another key (the unique (psp, line_id)), makes the line a duplicate."""
    claims = {(v.item.kind, v.item.item_key): _matched(run, v, now)
              for v in verdicts if v.class_ == MATCHED and v.item is not None and not v.settled_before}
    # In key order: two runs claiming the same items wait on each other in one order, never in a cycle.
    won = await _insert_returning(conn, recon_settlements,
                                  [_settlement_row(run.psp, claims[key]) for key in sorted(claims)],
                                  ("kind", "item_key"))
    lost = set(claims) - won
    stored = await _settled_by(conn, run.psp, [v.item for v in verdicts
                                               if v.item is not None and (v.item.kind, v.item.item_key) in lost])
    verdicts = [replace(v, class_=DUPLICATE) if v.class_ == MATCHED and v.item is not None and not v.settled_before
                and (v.item.kind, v.item.item_key) in lost and stored.get((v.item.kind, v.item.item_key))
                != v.line.line_id else v for v in verdicts]
    return verdicts, [claims[key] for key in claims if key in won]


async def _write_lines_and_cases(conn: AsyncConnection, run: ReconRun, verdicts: list[_Verdict], now: datetime
                                 ) -> None:
    lines, cases = [], []
    for v in verdicts:
        row = _line_row(run, v)
        if v.class_ != MATCHED:
            row["case_id"] = case_id_for(run.psp, row["line_key"])
            cases.append(_case_row(run, row, now))
        lines.append(row)
    await _insert_returning(conn, recon_lines, lines, None)
    await _upsert_cases(conn, sorted(cases, key=lambda case_row: case_row["case_id"]))


def _line_row(run: ReconRun, v: _Verdict) -> dict[str, Any]:
    line, item = v.line, v.item
    payment_id = item.payment_id if item else (
        line.merchant_reference if line.kind in (CAPTURE, *DISPUTE_KINDS) else None)
    return {
        "run_id": run.run_id, "line_key": line_key(line), "class": v.class_, "kind": line.kind,
        "item_key": item.item_key if item else None, "method": item.method if item else None,
        "payment_id": payment_id, "psp_reference": line.psp_reference, "line_id": line.line_id,
        "booked_on": line.booked_on, "currency": line.currency, "gross_minor": line.gross_minor,
        "fee_minor": line.fee_minor, "ledger_currency": item.currency if item else None,
        "ledger_gross_minor": item.gross_minor if item else None, "ledger_fee_minor": item.fee_minor if item else None,
        "case_id": None,
    }


# ---- settling -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settlement:
    """A recon_settlements row: what settled one item (or one case's line) and what its transfers move."""

    kind: str
    item_key: str
    currency: str
    gross_minor: int
    fee_minor: int
    fee_difference_minor: int  # the reported fee less the booked one, booked as the PSP's fee
    paid_out_minor: int
    method: str | None
    booked_on: date
    line_id: str | None
    run_id: str | None
    case_id: str | None
    transfer_id: str
    reference: str  # the transfers' reference: the item's key, or the case's id
    settled_at: datetime

    @property
    def net_minor(self) -> int:
        return self.gross_minor - self.fee_minor


def _matched(run: ReconRun, v: _Verdict, now: datetime) -> _Settlement:
    assert v.item is not None
    return _settling(v.line, v.item, run_id=run.run_id, case_id=None, now=now,
                     transfer_id=transfer_ids.settlement(v.item.kind, v.item.item_key), reference=v.item.item_key)


def _settling(line: SettlementLine, item: Item, *, run_id: str, case_id: str | None, transfer_id: str,
              reference: str, now: datetime) -> _Settlement:
    """A line matched with its item: the line's amounts, the fee it differs by, a payout's paid-out."""
    return _Settlement(
        kind=item.kind, item_key=item.item_key, currency=line.currency, gross_minor=line.gross_minor,
        fee_minor=line.fee_minor, fee_difference_minor=line.fee_minor - item.fee_minor,
        paid_out_minor=item.paid_out_minor, method=item.method, booked_on=line.booked_on, line_id=line.line_id,
        run_id=run_id, case_id=case_id, transfer_id=transfer_id, reference=reference, settled_at=now)


def _settlement_row(psp: str, s: _Settlement) -> dict[str, Any]:
    row = {f.name: getattr(s, f.name) for f in fields(s) if f.name != "reference"}
    return row | {"psp": psp, "net_minor": s.net_minor}


def _settlement_requests(psp: str, s: _Settlement) -> list[TransferRequest]:
    """The settlement's transfers: its net (positive: bank → clearing, the PSP paid us), the fee difference
    (positive: fees → clearing, the PSP kept more) and a payout's paid-out (house:payouts → clearing)."""
    clearing = psp_clearing_account(psp, s.currency)
    moves = (
        (s.transfer_id, SETTLEMENT, bank_account(s.currency), s.net_minor),
        (transfer_ids.settlement_step(s.transfer_id, "fee_difference"), FEE_DIFFERENCE, fee_account(psp, s.currency),
         s.fee_difference_minor),
        (transfer_ids.settlement_step(s.transfer_id, "paid_out"), PAID_OUT, payouts_account(s.currency),
         s.paid_out_minor),
    )
    return [_towards_clearing(transfer_id, kind, other, clearing, amount, s.currency, s.reference)
            for transfer_id, kind, other, amount in moves if amount]


def _towards_clearing(transfer_id: str, kind: str, other: str, clearing: str, amount: int, currency: str,
                      reference: str) -> TransferRequest:
    """`amount` from `other` into the PSP clearing (credit: the PSP owes us less), or back when negative."""
    debit, credit = (other, clearing) if amount > 0 else (clearing, other)
    return TransferRequest(transfer_id, debit, credit, abs(amount), currency, kind, reference)


# ---- closing a run --------------------------------------------------------------------------------------------


async def close_run(ledger: Ledger, run_id: str, *, terms: SettlementTerms, now: datetime) -> ReconRun:
    """Classify the items of the run's day at its PSP that no line of the run named, open the missing_at_psp
    cases, store the counts and sums per class, complete the run. A completed run is returned as it is."""
    await _refresh_statistics(ledger.engine)

    async def tx(conn: AsyncConnection) -> ReconRun:
        await _plan_each_statement(conn)
        run = await _run(conn, run_id)
        if run.state != RUNNING:
            if run.state == COMPLETED:
                return run
            raise AlreadyFinal("recon_run", run_id, run.state)
        deadline = datetime.combine(run.day + timedelta(days=terms.sla_days + 1), time(), UTC)
        await _classify_items_of_the_day(conn, run, EXPECTED if run.evaluated_at < deadline else MISSING_AT_PSP)
        await _open_item_cases(conn, run, now)
        counts = await _counts(conn, run_id)
        await conn.execute(update(recon_runs).where(recon_runs.c.run_id == run_id)
                           .values(state=COMPLETED, counts=counts, finished_at=now))
        return await _run(conn, run_id)

    return await ledger.transaction(tx)


async def _classify_items_of_the_day(conn: AsyncConnection, run: ReconRun, unsettled_class: str) -> None:
    """One INSERT … SELECT: the items of the day, each as a recon_lines row of its own — matched when settled (by
    another run's line, or a case) unless a line of this run named it (that line's row is its class), else
    `unsettled_class` unless a line's case is open about it (the item is that case's, not a second one). A line
    rematched elsewhere, its case accepted or settled under the line's own key leaves its item to be found here."""
    lo = datetime.combine(run.day, time(), UTC)
    items = union_all(*(_items_of(kind, run.psp).where(_item_of_the_day(kind, lo, lo + timedelta(days=1)))
                        for kind in sorted(LINE_KINDS))).subquery("items")
    s, named, c = recon_settlements.c, recon_lines.alias("named"), recon_cases.c
    other = recon_settlements.alias("other").c
    settled = exists().where(s.psp == run.psp, s.kind == items.c.kind, s.item_key == items.c.item_key)
    # Two anti-joins (not an OR of NOT EXISTS, which PostgreSQL runs as a subplan per item): settled and named by
    # a line of this run; unsettled and a line's case open about it.
    settled_and_named_here = exists().where(
        named.c.run_id == run.run_id, named.c.kind == items.c.kind, named.c.item_key == items.c.item_key,
        named.c.line_id.is_not(None), s.psp == run.psp, s.kind == items.c.kind, s.item_key == items.c.item_key)
    left_to_a_line_case = exists().where(
        c.kind == items.c.kind, c.item_key == items.c.item_key, c.state == OPEN, c.psp == run.psp,
        c.line_id.is_not(None),
        ~exists().where(other.psp == run.psp, other.kind == c.kind, other.item_key == c.item_key))
    rows = select(
        literal(run.run_id, String).label("run_id"),
        (literal("ledger:", String) + items.c.kind + literal(":", String) + items.c.item_key).label("line_key"),
        case((settled, MATCHED), else_=literal(unsettled_class, String)).label("class"),
        items.c.kind, items.c.item_key, items.c.method, items.c.payment_id, items.c.psp_reference,
        items.c.currency.label("ledger_currency"), items.c.gross_minor.label("ledger_gross_minor"),
        items.c.fee_minor.label("ledger_fee_minor"),
    ).where(
        ~settled_and_named_here,
        ~left_to_a_line_case,
    )
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    await conn.execute(insert_(recon_lines).from_select(list(rows.selected_columns.keys()), rows)
                       .on_conflict_do_nothing())


async def _open_item_cases(conn: AsyncConnection, run: ReconRun, now: datetime) -> None:
    """A case for each missing_at_psp item of the run, in batches (the case id is a hash Python computes)."""
    line = recon_lines.c
    after = ""
    while True:
        rows = (await conn.execute(
            select(recon_lines).where(line.run_id == run.run_id, line["class"] == MISSING_AT_PSP,
                                      line.line_id.is_(None), line.line_key > after)
            .order_by(line.line_key).limit(_CASES_BATCH))).all()
        if not rows:
            return
        cases, keys = [], []
        for row in rows:
            values = dict(row._mapping) | {"case_id": case_id_for(run.psp, row.line_key)}
            cases.append(_case_row(run, values, now))
            keys.append({"b_line_key": row.line_key, "b_case_id": values["case_id"]})
        await _upsert_cases(conn, cases)
        await conn.execute(update(recon_lines).where(line.run_id == run.run_id,
                                                     line.line_key == bindparam("b_line_key"))
                           .values(case_id=bindparam("b_case_id")), keys)
        after = rows[-1].line_key


async def _counts(conn: AsyncConnection, run_id: str) -> dict[str, Any]:
    line = recon_lines.c
    currency = func.coalesce(line.currency, line.ledger_currency)
    gross = func.abs(func.coalesce(line.gross_minor, line.ledger_gross_minor))
    rows = await conn.execute(select(line["class"], currency, func.count(), func.sum(gross))
                              .where(line.run_id == run_id).group_by(line["class"], currency))
    counts: dict[str, Any] = {}
    for class_, cur, count, total in rows:
        entry = counts.setdefault(class_, {"count": 0, "sums_minor": {}})
        entry["count"] += int(count)
        entry["sums_minor"][cur] = int(total or 0)
    return counts


# ---- cases ----------------------------------------------------------------------------------------------------


def case_id_for(psp: str, key: str) -> str:
    return "rc_" + hashlib.sha256((psp + key).encode()).hexdigest()[:16]


def _case_row(run: ReconRun, line: dict[str, Any], now: datetime) -> dict[str, Any]:
    copied = ("line_key", "class", "kind", "item_key", "method", "payment_id", "line_id", "psp_reference",
              "booked_on", "currency", "gross_minor", "fee_minor", "ledger_currency", "ledger_gross_minor",
              "ledger_fee_minor", "case_id")
    return {name: line[name] for name in copied} | {
        "psp": run.psp, "state": OPEN, "day": run.day, "first_run_id": run.run_id, "last_run_id": run.run_id,
        "created_at": now, "updated_at": now,
    }


_CASE_FACTS = ("class", "kind", "item_key", "method", "payment_id", "psp_reference", "booked_on", "currency",
               "gross_minor", "fee_minor", "ledger_currency", "ledger_gross_minor", "ledger_fee_minor")


async def _upsert_cases(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Open each case, or note the run on the existing one: an open case takes the run's facts, a resolved one
    keeps those it was resolved on."""
    if not rows:
        return
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert_(recon_cases)
    is_open = recon_cases.c.state == OPEN
    updates = {name: case((is_open, stmt.excluded[name]), else_=recon_cases.c[name]) for name in _CASE_FACTS}
    await conn.execute(stmt.on_conflict_do_update(index_elements=["case_id"], set_=updates | {
        "last_run_id": stmt.excluded.last_run_id, "updated_at": stmt.excluded.updated_at}), rows)


async def _auto_close(conn: AsyncConnection, psp: str, notes: dict[str, str], now: datetime) -> None:
    """Resolve the open cases of these line keys (a line's `line:<id>`, an item's `ledger:<kind>:<key>`) as
    auto_matched, each with its note: a line settled what they were about, so no one may move its money again.
    One look-up by the unique (psp, line_key); an update only for the few found open."""
    if not notes:
        return
    c = recon_cases.c
    found = (await conn.execute(select(c.case_id, c.line_key).where(
        c.psp == psp, c.line_key.in_(sorted(notes)), c.state == OPEN).order_by(c.case_id))).all()
    if not found:
        return
    await conn.execute(
        update(recon_cases).where(c.case_id == bindparam("b_case_id"), c.state == OPEN).values(
            state=RESOLVED, resolution_action=AUTO_MATCHED, resolution_note=bindparam("b_note"),
            resolved_by=AUTO_RESOLVER, resolved_at=now, updated_at=now, resolution_transfer_ids=[]),
        [{"b_case_id": case_id, "b_note": notes[key][:1000]} for case_id, key in found])


async def get_case(engine: AsyncEngine, case_id: str) -> ReconCase | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(recon_cases).where(recon_cases.c.case_id == case_id))).one_or_none()
    return _case(row) if row else None


async def list_cases(engine: AsyncEngine, *, state: str | None = None, psp: str | None = None,
                     class_: str | None = None, limit: int = 50, before: str | None = None) -> list[ReconCase]:
    """Cases newest first (created_at, then case id, descending); `before` is the last case id of the previous
    page (RecordNotFound if unknown)."""
    rows = await _newest_first(engine, recon_cases, "created_at",
                               {"state": state, "psp": psp, "class": class_}, limit, before)
    return [_case(row) for row in rows]


# ---- resolving a case -----------------------------------------------------------------------------------------


async def resolve_case(
    ledger: Ledger, case_id: str, *, action: str, amount_minor: int | None = None, rematch_with: str | None = None,
    note: str, resolved_by: str, now: datetime, terms: SettlementTerms | None = None,
    on_resolved: Callable[[AsyncConnection, ReconCase], Awaitable[None]] | None = None,
) -> ReconCase:
    """Resolve an open case (the README's case actions): one transaction.

    `adjust` needs a signed amount_minor ≠ 0 (positive: the PSP owes us more), `rematch` an item key of the case's
    kind at its PSP (`terms` give the fee tolerance, default SettlementTerms()). The same resolution again returns
    the case; another one of a resolved case is AlreadyFinal; an unknown case RecordNotFound; a rematch that does
    not match RematchFailed; adjust, write_off or rematch of a case whose line, or the item it is about, is settled
    already AlreadySettled. A line settling an item closes that item's open case (auto_matched).

    `on_resolved(conn, case)` runs inside the resolving transaction, only when this call resolved the case (not
    on a replay): what it writes (an audit entry) commits or rolls back with the resolution (a transaction retried
    after a deadlock calls it again, in the new attempt).
    """
    _check_resolution(action, amount_minor, rematch_with)

    async def tx(conn: AsyncConnection) -> ReconCase:
        stored = (await conn.execute(select(recon_cases).where(recon_cases.c.case_id == case_id)
                                     .with_for_update())).one_or_none()
        if stored is None:
            raise RecordNotFound("recon_case", case_id)
        rc = _case(stored)
        if rc.state == RESOLVED:
            return _replay(rc, action, amount_minor, rematch_with)
        if action in MONEY_ACTIONS and await _case_settled(conn, rc):
            raise AlreadySettled(case_id)
        moves: list[TransferRequest] = []
        amount: int | None = None
        if action == REMATCH:
            settlements = [await _rematch(conn, rc, rematch_with or "", terms or SettlementTerms(), now)]
        else:
            settlements, moves, amount = _resolution(rc, action, amount_minor, now)
        for s in settlements:
            if not await insert_if_missing(conn, recon_settlements, _settlement_row(rc.psp, s)):
                raise AlreadySettled(case_id)  # settled meanwhile, by a run or another case (the unique keys)
        requests = [req for s in settlements for req in _settlement_requests(rc.psp, s)] + moves
        await ledger.post_transfers_in(conn, requests)
        await conn.execute(update(recon_cases).where(recon_cases.c.case_id == case_id).values(
            state=RESOLVED, resolution_action=action, resolution_amount_minor=amount,
            resolution_rematch_with=rematch_with, resolution_note=note[:1000], resolved_by=resolved_by,
            resolved_at=now, updated_at=now, resolution_transfer_ids=[req.id for req in requests]))
        await _auto_close(conn, rc.psp, {
            item_case_key(s.kind, s.item_key): f"settled by line {s.line_id} (case {case_id}, {action})"
            for s in settlements if s.line_id is not None and s.item_key != rc.line_key}, now)
        resolved = _case((await conn.execute(select(recon_cases).where(recon_cases.c.case_id == case_id))).one())
        if on_resolved is not None:
            await on_resolved(conn, resolved)
        return resolved

    return await ledger.transaction(tx)


async def _case_settled(conn: AsyncConnection, rc: ReconCase) -> bool:
    """Whether the case's line settled something already (under any key), or the item it is about is settled —
    except a duplicate's, which another line settled by definition (the case is about its line's money)."""
    s = recon_settlements.c
    conditions = []
    if rc.line_id is not None:
        conditions.append(s.line_id == rc.line_id)
    if rc.item_key is not None and rc.class_ != DUPLICATE:
        conditions.append(and_(s.kind == rc.kind, s.item_key == rc.item_key))
    if not conditions:
        return False
    query = select(literal(1)).where(s.psp == rc.psp, or_(*conditions)).limit(1)
    return (await conn.execute(query)).first() is not None


def _check_resolution(action: str, amount_minor: int | None, rematch_with: str | None) -> None:
    if action not in ACTIONS:
        raise ValueError(f"a case is resolved by {', '.join(ACTIONS)}, not {action!r}")
    if action == ADJUST:
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor == 0:
            raise ValueError("an adjustment needs a signed amount_minor other than 0")
        check_minor_units("an adjustment", abs(amount_minor))
    elif amount_minor is not None:
        raise ValueError(f"{action} takes no amount")
    if (action == REMATCH) != (rematch_with is not None):
        raise ValueError("rematch_with names the item of a rematch, and only of a rematch")


def _replay(rc: ReconCase, action: str, amount_minor: int | None, rematch_with: str | None) -> ReconCase:
    same = rc.resolution_action == action and (action != ADJUST or rc.resolution_amount_minor == amount_minor) and (
        action != REMATCH or rc.resolution_rematch_with == rematch_with)
    if not same:
        raise AlreadyFinal("recon_case", rc.case_id, f"{RESOLVED} ({rc.resolution_action})")
    return rc


def _resolution(rc: ReconCase, action: str, amount_minor: int | None, now: datetime
                ) -> tuple[list[_Settlement], list[TransferRequest], int | None]:
    """accept moves nothing. adjust and write_off settle the case's line (its net to the bank) and the item it
    was about, then move `amount_minor`, or the residual that brings the clearing of both back to zero, between
    the clearing and house:recon_adjustments / house:recon_write_offs (positive: the PSP owes us more)."""
    if action == ACCEPT:
        return [], [], None
    settlements = _settle_case(rc, now, settle_item=action == WRITE_OFF or rc.class_ != CURRENCY_MISMATCH)
    item = _case_item(rc)
    reported_net = (rc.gross_minor or 0) - (rc.fee_minor or 0) if rc.line_id is not None else 0
    booked_net = item.net_minor if item is not None and any(s.item_key == item.item_key for s in settlements) else 0
    counter = recon_adjustments_account if action == ADJUST else recon_write_offs_account
    kind = ADJUSTMENT if action == ADJUST else WRITE_OFF_KIND
    step = "adjustment" if action == ADJUST else "write_off"
    currency = rc.currency or rc.ledger_currency or ""
    moves = []
    if rc.class_ == CURRENCY_MISMATCH and action == WRITE_OFF and item is not None:
        # Two currencies: the line's net written off in its own, the booked item's in the ledger's.
        moves.append(_move(rc, "write_off_ledger", kind, counter, item.currency, -booked_net))
        booked_net = 0
    amount = amount_minor if action == ADJUST else reported_net - booked_net
    assert amount is not None
    moves.append(_move(rc, step, kind, counter, currency, amount))
    return settlements, [move for move in moves if move.amount], amount


def _move(rc: ReconCase, step: str, kind: str, counter: Callable[[str], str], currency: str, amount: int
          ) -> TransferRequest:
    """`amount` between the case's PSP clearing and `counter(currency)`: positive debits the clearing. A zero
    amount gives a request of amount 0, which the caller drops."""
    debit, credit = psp_clearing_account(rc.psp, currency), counter(currency)
    if amount < 0:
        debit, credit = credit, debit
    return TransferRequest(transfer_ids.recon(rc.case_id, step), debit, credit, abs(amount), currency, kind,
                           rc.case_id)


def _settle_case(rc: ReconCase, now: datetime, *, settle_item: bool) -> list[_Settlement]:
    """The settlement rows a resolution writes: the case's line (keyed by its item when the line was about an
    item it may settle, else by its own key), and the item when it is not the line's."""
    item = _case_item(rc)
    base = _Settlement(
        kind=rc.kind, item_key=rc.line_key, currency=rc.currency or "", gross_minor=rc.gross_minor or 0,
        fee_minor=rc.fee_minor or 0, fee_difference_minor=0, paid_out_minor=0, method=rc.method,
        booked_on=rc.booked_on or rc.day, line_id=rc.line_id, run_id=rc.last_run_id, case_id=rc.case_id,
        transfer_id=transfer_ids.recon(rc.case_id, "settlement"), reference=rc.case_id, settled_at=now)
    if rc.line_id is None:  # a ledger item no line settled: settled with nothing reported
        assert item is not None
        return [replace(base, item_key=item.item_key, currency=item.currency, paid_out_minor=item.paid_out_minor)]
    if item is None or not settle_item:
        return [base]
    if rc.class_ != CURRENCY_MISMATCH:
        return [replace(base, item_key=item.item_key, paid_out_minor=item.paid_out_minor)]
    return [base, replace(base, item_key=item.item_key, currency=item.currency, gross_minor=0, fee_minor=0,
                          line_id=None, paid_out_minor=item.paid_out_minor,
                          transfer_id=transfer_ids.recon(rc.case_id, "item_settlement"))]


def _case_item(rc: ReconCase) -> Item | None:
    """The item the case is about, as booked, when settling the case may settle it: a missing_at_psp item, or
    the item of a line that differs from it (amount, currency, fee)."""
    if rc.item_key is None or rc.class_ not in (MISSING_AT_PSP, *_ITEM_CLASSES) or rc.ledger_currency is None:
        return None
    return Item(kind=rc.kind, item_key=rc.item_key, currency=rc.ledger_currency,
                gross_minor=rc.ledger_gross_minor or 0, fee_minor=rc.ledger_fee_minor or 0, method=rc.method,
                payment_id=rc.payment_id, psp_reference=None, status_ok=True)


async def _rematch(conn: AsyncConnection, rc: ReconCase, item_key: str, terms: SettlementTerms, now: datetime
                   ) -> _Settlement:
    """Classify the case's line against the item named; settle it as a matched line if it matches."""
    if rc.line_id is None or rc.currency is None or rc.gross_minor is None or rc.fee_minor is None:
        raise ValueError(f"case {rc.case_id} is about a ledger item, not a line: there is nothing to rematch")
    line = SettlementLine(psp=rc.psp, line_id=rc.line_id, kind=rc.kind, merchant_reference=item_key,
                          psp_reference=rc.psp_reference or "", currency=rc.currency, gross_minor=rc.gross_minor,
                          fee_minor=rc.fee_minor, booked_on=rc.booked_on or rc.day)
    if rc.kind in DISPUTE_KINDS:  # a dispute item is named by its key `<psp>:<dispute_id>`
        psp, _, dispute_id = item_key.partition(":")
        line = replace(line, psp_reference=dispute_id if psp == rc.psp else "")
    found = await _find_items(conn, rc.psp, [line])
    item = found.get(_lookup(rc.psp, line))
    class_ = _class_of(line, item, await _settled_by(conn, rc.psp, [item] if item else []), terms)
    if class_ != MATCHED or item is None:
        raise RematchFailed(rc.case_id, class_)
    return _settling(line, item, run_id=rc.last_run_id, case_id=rc.case_id,
                     transfer_id=transfer_ids.recon(rc.case_id, "settlement"), reference=rc.case_id, now=now)


# ---- the settlement report ------------------------------------------------------------------------------------


async def settlement_report(engine: AsyncEngine, *, from_day: date, to_day: date) -> list[ReportRow]:
    """Per booked day (from_day .. to_day, inclusive), PSP, method and currency: what the PSPs settled (from
    recon_settlements) and the open cases' differences. Aggregated in the database: a row per group."""
    s, c = recon_settlements.c, recon_cases.c

    def of(kinds: tuple[str, ...], column: Any) -> Any:
        return func.sum(case((s.kind.in_(kinds), column), else_=0))

    settled = select(
        s.booked_on, s.psp, s.method, s.currency,
        func.sum(case((s.kind == CAPTURE, 1), else_=0)), of((CAPTURE,), s.gross_minor), func.sum(s.fee_minor),
        of((REFUND,), s.gross_minor), of((PAYOUT,), s.gross_minor),
        of((CHARGEBACK, CHARGEBACK_REVERSAL), s.gross_minor), func.sum(s.net_minor),
    ).where(
        # What a report line settled: the rows a resolution wrote without a line (an item written off, the ledger
        # side of a currency mismatch) settle nothing the PSP reported, and would count as captures of 0.
        s.line_id.is_not(None), s.booked_on.between(from_day, to_day),
    ).group_by(s.booked_on, s.psp, s.method, s.currency)
    currency = func.coalesce(c.currency, c.ledger_currency)
    open_cases = select(
        c.day, c.psp, c.method, currency, func.count(),
        func.sum(func.abs(func.coalesce(c.gross_minor, c.ledger_gross_minor))),
    ).where(c.state == OPEN, c.day.between(from_day, to_day)).group_by(c.day, c.psp, c.method, currency)
    rows: dict[tuple[Any, ...], list[int]] = {}
    async with engine.connect() as conn:
        for day, psp, method, cur, *sums in await conn.execute(settled):
            rows[(day, psp, method, cur)] = [int(value or 0) for value in sums] + [0, 0]
        for day, psp, method, cur, count, total in await conn.execute(open_cases):
            entry = rows.setdefault((day, psp, method, cur), [0] * 9)
            entry[7:9] = [int(count), int(total or 0)]
    return [ReportRow(day, psp, method, cur, *values)
            for (day, psp, method, cur), values in sorted(rows.items(), key=lambda kv: tuple(map(str, kv[0])))]


# ---- the ledger items, as SQL ---------------------------------------------------------------------------------


def _items_of(kind: str, psp: str) -> Select[Any]:
    """The items of one kind at `psp`, as rows of Item's columns (filter them with _item_wanted or
    _item_of_the_day)."""
    zero = literal(0, Integer)
    if kind == CAPTURE:
        p, f = payments.c, psp_fees.c
        fee_id = literal(transfer_ids.fee(CAPTURE, ""), String) + p.payment_id
        return _item_columns(kind, p.payment_id, p.currency, p.captured_minor, func.coalesce(f.fee_minor, 0),
                             p.method, p.payment_id, p.psp_reference, p.captured_minor > 0) \
            .select_from(payments.outerjoin(psp_fees, f.transfer_id == fee_id)).where(p.psp == psp)
    if kind == REFUND:
        r, p = refunds.c, payments.c
        return _item_columns(kind, r.refund_id, r.currency, -r.amount_minor, func.coalesce(r.fee_minor, 0),
                             p.method, r.payment_id, r.psp_refund_reference, r.status == "succeeded") \
            .select_from(refunds.outerjoin(payments, p.payment_id == r.payment_id)).where(r.psp == psp)
    if kind == PAYOUT:
        o = payouts.c
        return _item_columns(kind, o.payout_id, o.currency, -o.amount_minor, func.coalesce(o.fee_minor, 0),
                             o.method, literal(None, String), literal(None, String), o.status == "paid") \
            .where(o.psp == psp)
    d, p = disputes.c, payments.c
    gross, fee, status_ok = {
        CHARGEBACK: (-d.amount_minor, zero, true()),
        CHARGEBACK_REVERSAL: (d.amount_minor, zero, d.state == "won"),
        CHARGEBACK_FEE: (zero, func.coalesce(d.fee_minor, 0), and_(d.state == "lost", d.fee_minor > 0)),
    }[kind]
    key = literal(transfer_ids.dispute_key(psp, ""), String) + d.dispute_id
    return _item_columns(kind, key, d.currency, gross, fee, p.method, d.payment_id, d.dispute_id, status_ok) \
        .select_from(disputes.outerjoin(payments, p.payment_id == d.payment_id)).where(d.psp == psp)


def _item_columns(kind: str, item_key: Any, currency: Any, gross: Any, fee: Any, method: Any, payment_id: Any,
                  psp_reference: Any, status_ok: Any) -> Select[Any]:
    return select(literal(kind, String).label("kind"), item_key.label("item_key"), currency.label("currency"),
                  gross.label("gross_minor"), fee.label("fee_minor"), method.label("method"),
                  payment_id.label("payment_id"), psp_reference.label("psp_reference"),
                  case((status_ok, 1), else_=0).label("status_ok"))


def _item_wanted(kind: str, psp: str, ids: set[str], refs: set[str]) -> Any:
    """The items of `kind` named by our key (ids) or the PSP's reference (refs): only the conditions with keys,
    so that each is an index look-up (an empty IN beside the other would make the planner scan the PSP's rows)."""
    by: list[tuple[Any, set[str]]]
    if kind == CAPTURE:
        by = [(payments.c.payment_id, ids), (payments.c.psp_reference, refs)]
    elif kind == REFUND:
        by = [(refunds.c.refund_id, ids), (refunds.c.psp_refund_reference, refs)]
    elif kind == PAYOUT:
        by = [(payouts.c.payout_id, ids)]
    else:
        prefix = transfer_ids.dispute_key(psp, "")
        by = [(disputes.c.dispute_id, {key[len(prefix):] for key in ids if key.startswith(prefix)})]
    conditions = [column.in_(sorted(keys)) for column, keys in by if keys]
    return or_(*conditions) if conditions else false()


def _item_of_the_day(kind: str, lo: datetime, hi: datetime) -> Any:
    """The items of `kind` whose ledger day is [lo, hi) and that moved money: a capture by when it was captured, a
    succeeded refund and a paid payout by when they ended, a dispute's chargeback by when it opened, its reversal (won)
    and its fee (lost with a fee) by when it was resolved."""
    if kind == CAPTURE:
        p = payments.c
        # A capture recorded before captured_at existed is dated by its payment's creation.
        return and_(p.captured_minor > 0, or_(and_(p.captured_at >= lo, p.captured_at < hi),
                                              and_(p.captured_at.is_(None), p.created_at >= lo, p.created_at < hi)))
    if kind == REFUND:
        r = refunds.c
        return and_(r.status == "succeeded", r.updated_at >= lo, r.updated_at < hi)
    if kind == PAYOUT:
        o = payouts.c
        return and_(o.status == "paid", o.updated_at >= lo, o.updated_at < hi)
    d = disputes.c
    if kind == CHARGEBACK:
        return and_(d.opened_at >= lo, d.opened_at < hi)
    resolved = and_(d.resolved_at >= lo, d.resolved_at < hi)
    if kind == CHARGEBACK_REVERSAL:
        return and_(d.state == "won", resolved)
    return and_(d.state == "lost", d.fee_minor > 0, resolved)


# ---- helpers --------------------------------------------------------------------------------------------------


async def _insert_returning(conn: AsyncConnection, table: Any, rows: list[dict[str, Any]],
                            key: tuple[str, ...] | None) -> set[tuple[Any, ...]]:
    """INSERT … ON CONFLICT DO NOTHING of every row (SQLAlchemy's insertmanyvalues: few statements); the `key`
    columns of the rows this call inserted."""
    if not rows:
        return set()
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert_(table).on_conflict_do_nothing()
    if key is None:
        await conn.execute(stmt, rows)
        return set()
    result = await conn.execute(stmt.returning(*(table.c[name] for name in key)), rows)
    return {tuple(row) for row in result}


async def _plan_each_statement(conn: AsyncConnection) -> None:
    """PostgreSQL: plan each statement with its parameters. A prepared statement's cached generic plan, chosen while
    the reconciliation tables were small, would go on scanning them whole as a run fills them (each chunk slower
    than the one before); a plan made for the chunk's own keys looks them up by index."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def _refresh_statistics(engine: AsyncEngine) -> None:
    """PostgreSQL: the statistics of the tables a run just filled, before the one statement that joins them with
    the day's items. Autovacuum analyzes them a minute or more later; planned on the statistics of an empty table,
    that join would compare every item with every line (quadratic). Outside the run's transaction: ANALYZE takes
    a lock that would serialize concurrent closes until commit."""
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE recon_lines, recon_settlements, recon_cases"))


async def _run(conn: AsyncConnection, run_id: str) -> ReconRun:
    row = (await conn.execute(select(recon_runs).where(recon_runs.c.run_id == run_id))).one_or_none()
    if row is None:
        raise RecordNotFound("recon_run", run_id)
    return _from_row(ReconRun, row)


def _case(row: Any) -> ReconCase:
    values = dict(row._mapping)
    values["class_"] = values.pop("class")
    return ReconCase(**values)


def _from_row(cls: type[R], row: Any) -> R:
    mapping = row._mapping
    return cls(**{f.name: mapping[f.name] for f in fields(cls)})  # type: ignore[arg-type]


async def _newest_first(engine: AsyncEngine, table: Any, clock: str, filters: dict[str, Any], limit: int,
                        before: str | None) -> list[Any]:
    """A keyset page of `table` (runs or cases) by (clock, primary key) descending, with the filters given (None:
    any); `before` is the key of the previous page's last row (RecordNotFound if unknown)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be within 1..{LIST_LIMIT_MAX}")
    [key] = table.primary_key.columns
    query = select(table).order_by(table.c[clock].desc(), key.desc()).limit(limit)
    query = query.where(*(table.c[name] == value for name, value in filters.items() if value is not None))
    async with engine.connect() as conn:
        if before is not None:
            cursor = (await conn.execute(select(table.c[clock]).where(key == before))).scalar_one_or_none()
            if cursor is None:
                raise RecordNotFound(table.name.removesuffix("s"), before)
            query = query.where(tuple_(table.c[clock], key) < tuple_(cursor, before))
        return list(await conn.execute(query))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: reconciliation works in UTC")
    return moment.astimezone(UTC)
