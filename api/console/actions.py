"""The ops corrections (README: Corrections) as the console takes them: each through the same function as its JSON
route, as the console's principal ("<client> (console)"), with the incident it was taken for when there is one;
then back to the page it was taken from, with what was done, or the refusal, as that page's message."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from api.auth import Principal
from api.console import flash
from api.console.sessions import ConsoleSession
from api.problems import Problem
from api.routes import payments, payouts, routing, webhooks
from api.schemas import CircuitForceRequest, MethodSwitchRequest, OpsActionRequest, WebhookBulkReplayRequest

async def take(request: Request, principal: Principal, action: str, target: str, fields: dict[str, Any],
               incident_id: str | None) -> str:
    """Takes one correction on `target` with the body `fields` (as the JSON route takes it); what was done, in a
    sentence. Refusals are the routes' own Problems (404 unknown_psp, 409 not_deferred, 409 already_final …)."""
    match action:
        case "psp.circuit.force":
            health = await routing.force(request, principal, target, CircuitForceRequest(
                state=fields["state"], incident_id=incident_id))
            held = f"held {health['forced']}" if health["forced"] else "back to its circuit breaker"
            return f"Circuit of {target} {held}: it is {health['circuit']} now."
        case "method.switch":
            switched = await routing.switch(request, principal, target, MethodSwitchRequest(
                enabled=fields["enabled"], incident_id=incident_id))
            return f"Method {target} switched {'on' if switched.enabled else 'off'}."
        case "payment.resync":
            payment = await payments.resync(request, principal, target, OpsActionRequest(incident_id=incident_id))
            return f"Payment {target} ({payment.status}) asked to re-sync with {payment.psp}; read it again for " \
                "the outcome."
        case "payout.resync":
            payout = await payouts.resync(request, principal, target, OpsActionRequest(incident_id=incident_id))
            return f"Payout {target} ({payout.status}) asked to re-sync with {payout.psp}."
        case "payout.send_now":
            payout = await payouts.send_now(request, principal, target, OpsActionRequest(incident_id=incident_id))
            return f"Payout {target} sent to {payout.psp} now (it was deferred until {payout.deferred_until})."
        case "webhook.replay":
            result = await webhooks.replay_in_bulk(request, principal, WebhookBulkReplayRequest(
                incident_id=incident_id, **fields))
            return replay_summary(len(result.replayed), [failure.code for failure in result.failed])
    raise Problem(422, "unknown_action", "Unknown correction", "the console takes no correction of that name")


def replay_summary(replayed: int, failure_codes: list[str]) -> str:
    failed = f"; {len(failure_codes)} stay dead letters ({', '.join(sorted(set(failure_codes)))})" \
        if failure_codes else ""
    return f"Replayed {replayed} dead letter{'' if replayed == 1 else 's'}{failed}."


async def then_back(request: Request, session: ConsoleSession, back_to: str, correction: Awaitable[str]) -> Response:
    """Back to `back_to` (POST, redirect, GET), with what the correction did, or why it was refused, as its
    message: a refusal is an answer to show on the page the operator acted from, not a page of its own."""
    try:
        done = flash.Flash("done", await correction)
    except Problem as problem:
        detail = f": {problem.detail}" if problem.detail and problem.detail != problem.title else ""
        done = flash.Flash("refused", f"Refused — {problem.title}{detail}. Nothing was changed.")
    return flash.leave(RedirectResponse(back_to, status_code=303), request, session, done)
