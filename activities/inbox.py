"""Reads a workflow's evidence: a verified PSP event from the webhook inbox (psp/inbox.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from psp.inbox import read_event
from workflows.types import ActivityName, PspEvent, ReadPspEventInput


class InboxActivities:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @activity.defn(name=ActivityName.READ_PSP_EVENT)
    async def read_psp_event(self, ref: ReadPspEventInput) -> PspEvent | None:
        """The stored event; None when no verified delivery carried it, or when it is about another payment,
        payout, refund or disputed payment, or of another kind (a real event of someone else's — or a dispute
        about this very payment — is no evidence for this one)."""
        row = await read_event(self.engine, ref.psp, ref.event_id)
        if row is None or row.payment_id != ref.merchant_reference or (ref.kind and row.kind != ref.kind):
            return None
        return PspEvent(event_id=row.event_id, psp=row.psp, psp_reference=row.psp_reference, status=row.status,
                        amount_minor=row.amount_minor, currency=row.currency, failure_code=row.failure_code,
                        kind=row.kind, fee_minor=row.fee_minor, dispute_id=row.dispute_id,
                        reason_code=row.reason_code)
