"""Writes the audit entry of an ops decision that reached a workflow (a review, later refunds): the workflow's
own activity does it, so a decision sent from the Temporal UI or CLI is audited like one sent through the API."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from players import audit
from workflows.types import ActivityName, AuditEntry


class AuditActivities:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @activity.defn(name=ActivityName.RECORD_AUDIT)
    async def record_audit(self, entry: AuditEntry) -> None:
        await audit.record_once(self.engine, idempotency_key=entry.idempotency_key, actor=entry.actor,
                                action=entry.action, subject=entry.subject, details=entry.details,
                                now=datetime.now(timezone.utc), incident_id=entry.incident_id)
