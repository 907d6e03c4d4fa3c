"""Trust boundaries on the real stack: whose signature a webhook carries, what a key's scopes let it learn."""

from __future__ import annotations

import sqlalchemy as sa

from api.models import webhook_deliveries, webhook_events
from payloop.alerts import alerts
from tests.e2e.conftest import Stack, new_player


async def _wrong_psp_rejections(stack: Stack, psp: str) -> int:
    async with stack.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(webhook_deliveries).where(
            webhook_deliveries.c.psp == psp, webhook_deliveries.c.outcome == "rejected",
            webhook_deliveries.c.detail == "wrong_psp")
        return (await conn.execute(query)).scalar_one()


async def test_a_genuine_card_delivery_reposted_to_card_b_is_refused_as_wrong_psp(stack: Stack) -> None:
    """Taken as card_b's, card's capture of a credited payment would say money moved at a PSP the payment never
    used: a false alert (psp_settled_after_close), or, while the payment runs, a review (captured_at_left_psp)."""
    player = new_player()
    init = await stack.deposit(method="card", player_id=player)
    assert init["psp"] == "card"
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    [genuine] = [w for w in stack.webhooks_received
                 if w.path == "/v1/webhooks/card" and init["payment_id"].encode() in w.body]
    signed = {name: value for name, value in genuine.headers.items()
              if name in ("content-type", "x-signature", "x-timestamp")}
    rejections_before = await _wrong_psp_rejections(stack, "card_b")

    reposted = await stack.api.post("/v1/webhooks/card_b", content=genuine.body, headers=signed)

    assert reposted.status_code == 401, reposted.text
    assert reposted.headers["content-type"].startswith("application/problem+json")
    assert reposted.json()["code"] == "wrong_psp"
    assert await _wrong_psp_rejections(stack, "card_b") == rejections_before + 1
    # The very same bytes at card's own URL are card's, and a copy: genuine, fresh, and already taken.
    again = await stack.api.post("/v1/webhooks/card", content=genuine.body, headers=signed)
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
    async with stack.engine.connect() as conn:
        stored = (await conn.execute(sa.select(webhook_events.c.psp).where(
            webhook_events.c.payment_id == init["payment_id"]))).scalars().all()
        raised = (await conn.execute(sa.select(alerts.c.kind).where(
            alerts.c.reference == init["payment_id"]))).scalars().all()
    assert stored == ["card"] and raised == []
    assert await stack.balance(player) == "50.00"
    await stack.check_invariants()
