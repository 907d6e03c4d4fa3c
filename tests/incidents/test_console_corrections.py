"""The corrections an incident's console page offers (api/console/pages/incidents.py corrections_for): per class,
one entry per target named by the incident, as README "Operations" says what to do; none once it is resolved."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from api.console.pages.incidents import corrections_for, duration_text
from api.routes.incidents import AffectedView, IncidentDetailView

OPENED = "2026-12-08T12:00:00+00:00"


def incident(incident_class: str, scope: str, affected: list[tuple[str, str, str, bool]]) -> IncidentDetailView:
    return IncidentDetailView(
        incident_id="inc_" + "1" * 32, incident_class=incident_class, scope=scope, state="open", diagnosis="d",
        opened_at=OPENED, updated_at=OPENED, resolved_at=None, resolved_by=None, first_seen_at=None,
        figures_at_open={}, figures_now={}, timeline=[], corrections=[],
        affected=[AffectedView(kind=kind, id=object_id, status=status, final=final, temporal_ui_url="u")
                  for kind, object_id, status, final in affected])


@pytest.mark.parametrize(("incident_class", "scope", "affected", "expected"), [
    ("failed_deposits", "psp=card,method=card", [("payment", "pay_f", "failed", True)],
     [("psp.circuit.force", "card", "POST /v1/ops/psps/card/circuit {state: open}", {"state": "open"}),
      ("method.switch", "card", "POST /v1/ops/methods/card {enabled: false}", {"enabled": "false"})]),
    ("failed_deposits", "psp=none,method=card", [("payment", "pay_n", "failed", True)],
     [("method.switch", "card", "POST /v1/ops/methods/card {enabled: false}", {"enabled": "false"})]),
    ("delayed_withdrawals", "psp=card", [("payout", "po_a", "running", False), ("payout", "po_b", "paid", True)],
     [("payout.send_now", "po_a", "POST /v1/ops/payouts/po_a/send-now", {})]),
    ("callback_errors", "psp=ewallet", [("payment", "pay_d", "credited", True)],
     [("webhook.replay", "ewallet", "POST /v1/ops/webhooks/replay {psp}", {"psp": "ewallet"})]),
    ("currency_mismatch", "psp=card", [("payment", "pay_r", "in_review", True), ("payment", "pay_c", "captured", False),
                                       ("payout", "po_m", "paid", True)],
     [("payment.review", "pay_r", "POST /v1/ops/payments/pay_r/review", {}),
      ("payment.resync", "pay_r", "POST /v1/ops/payments/pay_r/resync", {}),
      ("payment.resync", "pay_c", "POST /v1/ops/payments/pay_c/resync", {})]),
    ("transaction_timeout", "psp=card", [("payment", "pay_p", "pending", False), ("payment", "pay_x", "expired", True)],
     [("payment.resync", "pay_p", "POST /v1/ops/payments/pay_p/resync", {})]),
    ("gateway_downtime", "psp=card_b", [],
     [("psp.circuit.force", "card_b", "POST /v1/ops/psps/card_b/circuit {state: open}", {"state": "open"})]),
])
def test_each_class_offers_its_corrections_on_what_it_names(
    incident_class: str, scope: str, affected: list[tuple[str, str, str, bool]], expected: list[tuple[Any, ...]]
) -> None:
    found = corrections_for(incident(incident_class, scope, affected))
    assert [(c.action, c.target, c.api_call, c.fields) for c in found] == expected


def test_a_review_is_taken_on_the_payments_console_page_and_nothing_is_offered_once_resolved() -> None:
    held = incident("currency_mismatch", "psp=card", [("payment", "pay_r", "in_review", True)])
    assert [c.console_path for c in corrections_for(held)] == ["/ops/payments/pay_r", None]
    assert corrections_for(held.model_copy(update={"state": "resolved"})) == []


def test_duration_to_the_minute() -> None:
    opened = datetime.fromisoformat(OPENED)
    open_one = incident("gateway_downtime", "psp=card", [])
    assert duration_text(open_one, opened + timedelta(seconds=59)) == "under a minute"
    assert duration_text(open_one, opened + timedelta(minutes=4, seconds=30)) == "4 min"
    resolved = open_one.model_copy(update={"resolved_at": (opened + timedelta(hours=2, minutes=5)).isoformat()})
    assert duration_text(resolved, opened + timedelta(days=1)) == "2 h 05 min"
