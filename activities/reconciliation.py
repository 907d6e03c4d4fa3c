"""The reconciliation activity: fetch a PSP's settlement report for a day, streamed, and have the ledger classify it
chunk by chunk (ledger/reconciliation.py), then close the run with the day's movements no line settled.

Idempotent: a run's id follows from its PSP, day and as-of, and classifying a line again writes and posts nothing new,
so a retry (or a re-run of the same day) reads the whole report again and ends where the first try would have.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from datetime import date, datetime, timezone
from typing import cast

from temporalio import activity
from temporalio.exceptions import ApplicationError

from ledger import Ledger
from ledger import reconciliation as recon
from payloop.settlement import MalformedReport, SettlementLine, SettlementTerms
from psp.base import PspConnector
from workflows.types import ActivityName, ErrorType, ReconInput, ReconRunSummary

# Lines classified per database transaction: large enough for set-based queries to pay, small enough that a chunk's
# lines, items and rows stay a few MB.
CHUNK_LINES = 1000


class ReconciliationActivities:
    def __init__(self, ledger: Ledger, connectors: Mapping[str, PspConnector],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.ledger = ledger
        self.connectors = connectors
        self.clock = clock

    def all(self) -> list[Callable]:
        return [self.reconcile_day]

    @activity.defn(name=ActivityName.RECONCILE_DAY)
    async def reconcile_day(self, input: ReconInput) -> ReconRunSummary:
        assert input.day is not None, "the workflow names the day"
        connector = self.connectors[input.psp]
        terms = connector.settlement_terms
        as_of = datetime.fromisoformat(input.as_of) if input.as_of else None
        run = await recon.open_run(self.ledger.engine, psp=input.psp, day=date.fromisoformat(input.day),
                                   as_of=as_of, now=self.clock())
        if run.state == recon.COMPLETED:  # this very run, done before (by ops, or an earlier schedule): as it was
            return _summary(run, terms)
        lines_read = 0
        chunk: list[SettlementLine] = []
        report = cast(AsyncGenerator[SettlementLine, None], connector.settlement_report(run.day))
        try:
            async with aclosing(report):
                async for line in report:
                    chunk.append(line)
                    if len(chunk) == CHUNK_LINES:
                        lines_read += await self._classify(run.run_id, chunk, terms)
                        chunk = []
            lines_read += await self._classify(run.run_id, chunk, terms)
        except MalformedReport as err:
            # The lines before the unreadable one are good: classified, as a re-run would.
            lines_read += await self._classify(run.run_id, chunk, terms)
            await recon.fail_run(self.ledger.engine, run.run_id, f"unreadable report: {err}", now=self.clock())
            raise ApplicationError(str(err), type=ErrorType.REPORT_UNREADABLE, non_retryable=True) from err
        except Exception as err:
            # The PSP or the database failed us: the run says so until a retry (which re-opens it) gets through.
            await recon.fail_run(self.ledger.engine, run.run_id, f"{type(err).__name__}: {err}"[:500],
                                 now=self.clock())
            raise
        run = await recon.close_run(self.ledger, run.run_id, terms=terms, now=self.clock())
        summary = _summary(run, terms)
        activity.logger.info("reconciled %s %s: %d lines, %s", run.psp, run.day, lines_read, summary.counts)
        return summary

    async def _classify(self, run_id: str, chunk: list[SettlementLine], terms: SettlementTerms) -> int:
        if chunk:
            await recon.classify_lines(self.ledger, run_id, chunk, terms=terms, now=self.clock())
        activity.heartbeat(len(chunk))
        return len(chunk)


def _summary(run: recon.ReconRun, terms: SettlementTerms) -> ReconRunSummary:
    counts = {name: total["count"] for name, total in (run.counts or {}).items() if total["count"]}
    return ReconRunSummary(run_id=run.run_id, psp=run.psp, day=run.day.isoformat(), state=run.state,
                           sla_days=terms.sla_days, counts=counts)
