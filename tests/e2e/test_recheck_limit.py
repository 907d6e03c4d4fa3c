"""Unverified webhooks that name a payment nudge its workflow to ask the PSP (signal `status_recheck`) — at most once
per `PAYLOOP_STATUS_RECHECK_INTERVAL_SECONDS` per payment, however many arrive, whatever else is nudged meanwhile
(the old per-process dict forgot everything after 10,000 ids), and across API instances sharing a Redis.
Counted where it matters: the WorkflowExecutionSignaled events in the payment's history, through the Temporal
client. The interval is longer than the test, so "within the interval" is the whole test."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from tests.conftest import redis_url
from tests.e2e.conftest import Stack, free_port, metric_value, new_player, running_stack
from tests.e2e.test_rate_limits import serving
from tests.e2e.test_webhooks import captured_event, signed_headers

INTERVAL_SECONDS = 3600
SENDERS = 16  # requests in flight at once


def limit_overrides(**more: Any) -> dict[str, Any]:
    return {
        "status_recheck_interval_seconds": INTERVAL_SECONDS,
        "rate_limit_webhooks": "",  # unlimited here: every nudge must reach the re-check limit
        "deposit_webhook_timeout_seconds": 600.0,  # the payment keeps waiting (and can be signalled) meanwhile
        "redis_key_prefix": f"t-{uuid.uuid4().hex[:12]}",
    } | more


async def challenged_deposit(stack: Stack) -> dict[str, Any]:
    """A card deposit waiting on its 3DS challenge: running, until the test completes the challenge."""
    init = await stack.deposit(method="card", scenario="challenge", player_id=new_player())
    reference = (await stack.sandbox.get(f"/card/v1/payments/{init['payment_id']}")).json()["reference"]
    return init | {"reference": reference}


def psp_side(api_url: str) -> httpx.AsyncClient:
    """A client without the stack's API key (a PSP, or someone posing as one, has none)."""
    return httpx.AsyncClient(base_url=api_url, timeout=30)


async def nudge_all(apis: list[httpx.AsyncClient], bodies: list[bytes]) -> None:
    """Sends every body unsigned (a forged webhook), spread over `apis`, SENDERS at a time; each must be a 401."""
    pending = iter(zip(itertools.cycle(apis), bodies))

    async def sender() -> None:
        for api, body in pending:
            response = await api.post("/v1/webhooks/card", content=body,
                                      headers=signed_headers("whsec_attacker", 0, body))
            assert response.status_code == 401, response.text

    await asyncio.gather(*(sender() for _ in range(SENDERS)))


async def rechecks_signalled(stack: Stack, payment_id: str) -> int:
    history = await stack.client.get_workflow_handle(f"deposit-{payment_id}").fetch_history()
    return sum(1 for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
               and e.workflow_execution_signaled_event_attributes.signal_name == "status_recheck")


async def finish(stack: Stack, init: dict[str, Any]) -> None:
    completed = await stack.sandbox.post(init["redirect_url"], data={"outcome": "success"})
    assert completed.status_code < 400, completed.text
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    await stack.check_invariants()


async def test_ten_thousand_nudges_and_ten_thousand_and_one_other_ids_signal_one_recheck(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with running_stack("sqlite", temporal_env.client, tmp_path, "payloop-recheck-memory",
                             **limit_overrides()) as stack:
        init = await challenged_deposit(stack)
        target = captured_event(init["payment_id"], init["reference"])
        async with psp_side(stack.settings.api_url) as api:
            await nudge_all([api], [target])
            others = [captured_event(f"pay_{uuid.uuid4().hex[:24]}", "ref") for _ in range(10_001)]
            # The rest of the 10,000 nudges mixed into the 10,001 others that used to flush the per-process dict.
            mixed = [body for pair in itertools.zip_longest(others, [target] * 9_999) for body in pair if body]
            await nudge_all([api], mixed)
            await nudge_all([api], [target])  # and one after the flood
        metrics = (await stack.api.get("/metrics")).text
        assert await rechecks_signalled(stack, init["payment_id"]) == 1
        assert metric_value(metrics, "payloop_status_rechecks_total", outcome="suppressed") == 10_000
        await finish(stack, init)
        assert await rechecks_signalled(stack, init["payment_id"]) == 1


async def test_two_api_instances_sharing_redis_signal_one_recheck_between_them(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with running_stack("sqlite", temporal_env.client, tmp_path, "payloop-recheck-redis",
                             **limit_overrides(redis_url=redis_url())) as stack:
        second = stack.settings.model_copy(update={"api_port": free_port()})
        async with (
            serving(create_app(second, engine=stack.engine, temporal=stack.client), second) as other_api,
            psp_side(stack.settings.api_url) as api,
        ):
            init = await challenged_deposit(stack)
            target = captured_event(init["payment_id"], init["reference"])
            await nudge_all([api], [target])
            await nudge_all([other_api, api], [target] * 400)
            assert await rechecks_signalled(stack, init["payment_id"]) == 1
            await finish(stack, init)
        assert await rechecks_signalled(stack, init["payment_id"]) == 1
