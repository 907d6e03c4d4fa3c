"""The alert activity: workflows raise alerts (for people, not for code) through it."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from payloop.alerts import raise_alert
from workflows.types import ActivityName, Alert


class AlertActivities:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @activity.defn(name=ActivityName.RAISE_ALERT)
    async def raise_alert(self, alert: Alert) -> None:
        await raise_alert(self.engine, kind=alert.kind, reference=alert.reference, details=alert.details,
                          now=datetime.now(timezone.utc))
