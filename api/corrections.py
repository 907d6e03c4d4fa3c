"""What every ops correction (README: Corrections) shares: its audit entry, which names the incident the action
was taken for when the request gives one, so the incident's report lists the corrections taken."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.auth import Principal
from api.problems import Problem
from api.schemas import OpsActionRequest
from incidents.models import incidents
from players import audit


async def record(conn: AsyncConnection, principal: Principal, action: str, subject: str, details: dict[str, Any],
                 body: OpsActionRequest | None, now: datetime) -> None:
    """The action's audit entry, in the transaction of the change it made: 422 unknown_incident (and nothing
    changed) when the incident it names does not exist, else the correction would be listed on no incident."""
    await _check_incident(conn, body.incident_id if body else None)
    await audit.record(conn, actor=principal.client_id, action=action, subject=subject, details=details, now=now,
                       incident_id=body.incident_id if body else None)


async def check_incident(engine: AsyncEngine, incident_id: str | None) -> None:
    """Before a correction whose change is not ours to write (a signal, a review decision the workflow audits):
    422 unknown_incident, nothing sent."""
    if incident_id is not None:
        async with engine.connect() as conn:
            await _check_incident(conn, incident_id)


async def _check_incident(conn: AsyncConnection, incident_id: str | None) -> None:
    if incident_id is None:
        return
    found = await conn.execute(sa.select(incidents.c.incident_id).where(incidents.c.incident_id == incident_id))
    if found.one_or_none() is None:
        raise Problem(422, "unknown_incident", "Unknown incident", "no incident has this id",
                      errors=[{"field": "incident_id", "code": "unknown", "message": "no incident has this id"}])


async def record_alone(engine: AsyncEngine, principal: Principal, action: str, subject: str,
                       details: dict[str, Any], body: OpsActionRequest | None, now: datetime) -> None:
    """The audit entry of an action whose change is not ours to write (a signal to a workflow): written once
    the workflow has taken it."""
    async with engine.begin() as conn:
        await record(conn, principal, action, subject, details, body, now)


def already_final(noun: str, status: str) -> Problem:
    """A re-sync of a payment or payout that has nothing left to learn from its PSP."""
    return Problem(409, "already_final", f"The {noun} is final", f"the {noun} is {status}", current_status=status)


def not_at_psp(noun: str, status: str) -> Problem:
    """A re-sync of a payment or payout that waits for nothing from its PSP now (for the player's KYC, for a
    review, before or after its PSP's part): the workflow would take the nudge and do nothing with it."""
    return Problem(409, "not_at_psp", f"The {noun} is not waiting on its PSP",
                   f"the {noun} is {status}; a re-sync helps only while it waits for its PSP's answer",
                   current_status=status)
