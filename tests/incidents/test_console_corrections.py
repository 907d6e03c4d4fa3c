"""The corrections an incident's console page offers (api/console/pages/incidents.py corrections_for): per class,
one entry per target named by the incident, as README "Operations" says what to do; none once it is resolved."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from api.console.pages.incidents import CircuitNow, corrections_for, duration_text
from api.schemas import AffectedView, IncidentDetailView

OPENED = "2026-12-08T12:00:00+00:00"


def incident(incident_class: str, scope: str, affected: list[tuple[str, str, str, bool]],
             figures_now: dict[str, Any] | None = None,
             deferred: frozenset[str] = frozenset()) -> IncidentDetailView:
    return IncidentDetailView(
        incident_id="inc_" + "1" * 32, incident_class=incident_class, scope=scope, state="open", diagnosis="d",
        opened_at=OPENED, updated_at=OPENED, resolved_at=None, resolved_by=None, first_seen_at=None,
        figures_at_open={}, figures_now=figures_now or {}, timeline=[], corrections=[],
        affected=[AffectedView(kind=kind, id=object_id, status=status, final=final, temporal_ui_url="u",
                               deferred_until="2026-12-08T12:05:00+00:00" if object_id in deferred else None)
                  for kind, object_id, status, final in affected])


def switch_off(label: str) -> tuple[Any, ...]:
    return ("method.switch", label, "card", "POST /v1/ops/methods/card {enabled: false}", {"enabled": "false"})


FORCE_OPEN = ("psp.circuit.force", "Force its circuit open (back to auto once it recovers)", "card",
              "POST /v1/ops/psps/card/circuit {state: open}", {"state": "open"})


@pytest.mark.parametrize(("incident_class", "scope", "affected", "expected"), [
    ("failed_deposits", "psp=none,method=card", [("payment", "pay_f", "failed", True)],
     [switch_off("Switch the method off while it lasts")]),
    # A payout processing at its PSP is re-synced; only a deferred one is sent now; KYC and review wait for people.
    ("delayed_withdrawals", "psp=card", [("payout", "po_a", "processing", False), ("payout", "po_d", "processing",
                                                                                   False),
                                         ("payout", "po_k", "kyc_required", False), ("payout", "po_b", "paid", True)],
     [("payout.resync", "Re-sync with its PSP", "po_a", "POST /v1/ops/payouts/po_a/resync", {}),
      ("payout.send_now", "Send the deferred payout now", "po_d", "POST /v1/ops/payouts/po_d/send-now", {})]),
    ("callback_errors", "psp=ewallet", [("payment", "pay_d", "credited", True)],
     [("webhook.replay", "Replay the PSP's dead letters", "ewallet", "POST /v1/ops/webhooks/replay {psp}",
       {"psp": "ewallet"})]),
    # In review: decided on its page, never re-synced (it is final to its workflow: 409 already_final).
    ("currency_mismatch", "psp=card", [("payment", "pay_r", "in_review", False),
                                       ("payment", "pay_c", "captured", False),
                                       ("payment", "pay_p", "authorized", False), ("payout", "po_m", "paid", True)],
     [("payment.review", "Decide the deposit's review", "pay_r", "POST /v1/ops/payments/pay_r/review", {}),
      ("payment.resync", "Re-sync with its PSP", "pay_p", "POST /v1/ops/payments/pay_p/resync", {})]),
    ("transaction_timeout", "psp=card", [("payment", "pay_p", "pending", False),
                                         ("payment", "pay_k", "captured", False),
                                         ("payment", "pay_x", "expired", True)],
     [("payment.resync", "Re-sync with its PSP", "pay_p", "POST /v1/ops/payments/pay_p/resync", {})]),
])
def test_each_class_offers_the_corrections_that_can_help_on_what_it_names(
    incident_class: str, scope: str, affected: list[tuple[str, str, str, bool]], expected: list[tuple[Any, ...]]
) -> None:
    found = corrections_for(incident(incident_class, scope, affected, deferred=frozenset({"po_d"})))
    assert [(c.action, c.label, c.target, c.api_call, c.fields) for c in found] == expected


@pytest.mark.parametrize(("circuit", "expected"), [
    # The usual trigger: its breaker opened it. Forcing would pin it (no half-open probes): nothing to offer.
    (CircuitNow("open", None), []),
    (CircuitNow("closed", None), [FORCE_OPEN]),  # erroring, not yet open
    (CircuitNow("half_open", None), [FORCE_OPEN]),
    (CircuitNow("open", "open"), [("psp.circuit.force", "Hand its circuit back to its breaker (held open now)",
                                   "card", "POST /v1/ops/psps/card/circuit {state: auto}", {"state": "auto"})]),
])
def test_gateway_downtime_forces_the_circuit_open_only_while_its_breaker_has_not(
    circuit: CircuitNow, expected: list[tuple[Any, ...]]
) -> None:
    down = incident("gateway_downtime", "psp=card", [], figures_now={"circuit": circuit.state})
    assert [(c.action, c.label, c.target, c.api_call, c.fields) for c in corrections_for(down, circuit)] == expected
    if circuit.forced is None:  # without PSP health at hand, the incident's own figures say the circuit's state
        assert [(c.action, c.fields) for c in corrections_for(down)] == [(e[0], e[4]) for e in expected]


def test_failed_deposits_at_a_psp_fail_over_first_and_switch_the_method_off_only_as_a_second_choice() -> None:
    failing = incident("failed_deposits", "psp=card,method=card", [("payment", "pay_f", "failed", True)])
    second_choice = switch_off("Switch the method off at every PSP (if its other PSPs fail too)")
    assert [(c.action, c.label, c.target, c.api_call, c.fields)
            for c in corrections_for(failing, CircuitNow("closed", None))] == [FORCE_OPEN, second_choice]
    assert [(c.action, c.fields) for c in corrections_for(failing, CircuitNow("open", None))] == [
        ("method.switch", {"enabled": "false"})]


def test_a_review_is_taken_on_the_payments_console_page_and_nothing_is_offered_once_resolved() -> None:
    held = incident("currency_mismatch", "psp=card", [("payment", "pay_r", "in_review", False)])
    assert [c.console_path for c in corrections_for(held)] == ["/ops/payments/pay_r"]
    assert corrections_for(held.model_copy(update={"state": "resolved"})) == []


def test_duration_to_the_minute() -> None:
    opened = datetime.fromisoformat(OPENED)
    open_one = incident("gateway_downtime", "psp=card", [])
    assert duration_text(open_one, opened + timedelta(seconds=59)) == "under a minute"
    assert duration_text(open_one, opened + timedelta(minutes=4, seconds=30)) == "4 min"
    resolved = open_one.model_copy(update={"resolved_at": (opened + timedelta(hours=2, minutes=5)).isoformat()})
    assert duration_text(resolved, opened + timedelta(days=1)) == "2 h 05 min"
