"""Every verifier tells what an event is about (`kind`: payment, payout, refund, dispute), with the status in that
kind's vocabulary, the PSP's fee, and a dispute's id and reason code; a refund or dispute event with anything
missing or malformed is refused as malformed_payload. Bodies are made by the sandbox's wire formats (written apart
from the verifiers), headers by each PSP's signature scheme."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from psp.base import DISPUTE_STATUSES, REFUND_STATUSES, InvalidWebhook, WebhookEvent
from psp.sandbox.formats import FORMATS, Snapshot
from tests.psp.psp_testkit import VERIFIER_CLASSES

NOW = 1_700_000_000
OCCURRED_AT = "2023-11-14T22:13:20.000Z"
SECRET = "whsec_kinds"
PSPS = ["card", "card_b", "ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto", "crypto_b"]
DISPUTING_PSPS = ["card", "card_b", "ewallet", "ewallet_b"]
FEE_REPORTING = {"card", "card_b", "ewallet"}  # the others' wire formats have no fee field at all


def refund(status: str, fee_minor: int | None = None, failure_code: str | None = None) -> Snapshot:
    return Snapshot("refund", "ref_rf", "rf_1", status, 2000, 2000, "EUR", failure_code=failure_code,
                    payment_reference="ref_pay", fee_minor=fee_minor)


def dispute(status: str, fee_minor: int | None = None) -> Snapshot:
    return Snapshot("dispute", "ref_dp", "pay_1", status, 3000, 3000, "EUR", payment_reference="ref_pay",
                    fee_minor=fee_minor, reason_code="10.4")


def event_body(psp: str, snap: Snapshot) -> dict[str, Any]:
    body: dict[str, Any] = FORMATS[psp].event("evt_1", snap, OCCURRED_AT)
    return body


def verify(psp: str, body: dict[str, Any] | bytes) -> WebhookEvent:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = FORMATS[psp].scheme.headers(SECRET, NOW, raw, "evt_1")
    return VERIFIER_CLASSES[psp](psp, SECRET)(headers, raw, NOW)


def refused(psp: str, body: dict[str, Any] | bytes) -> str:
    with pytest.raises(InvalidWebhook) as refusal:
        verify(psp, body)
    return refusal.value.code


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("status", sorted(REFUND_STATUSES))
def test_refund_events_round_trip(psp: str, status: str) -> None:
    fee_minor = 15 if status == "succeeded" and psp in FEE_REPORTING else None
    failure_code = "refund_declined" if status == "failed" else None

    event = verify(psp, event_body(psp, refund(status, fee_minor, failure_code)))

    assert event == WebhookEvent(
        psp=psp, event_id="evt_1", payment_id="rf_1", psp_reference="ref_rf", status=status, amount_minor=2000,
        currency="EUR", occurred_at=OCCURRED_AT, failure_code=failure_code, kind="refund", fee_minor=fee_minor,
    )


@pytest.mark.parametrize("psp", DISPUTING_PSPS)
@pytest.mark.parametrize("status", sorted(DISPUTE_STATUSES))
def test_dispute_events_round_trip(psp: str, status: str) -> None:
    fee_minor = 1500 if status == "lost" else None

    event = verify(psp, event_body(psp, dispute(status, fee_minor)))

    assert event == WebhookEvent(
        psp=psp, event_id="evt_1", payment_id="pay_1", psp_reference="ref_pay", status=status, amount_minor=3000,
        currency="EUR", occurred_at=OCCURRED_AT, kind="dispute", fee_minor=fee_minor, dispute_id="ref_dp",
        reason_code="10.4",
    )


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("kind", ["payment", "payout"])
def test_payment_and_payout_events_say_their_kind_and_fee(psp: str, kind: str) -> None:
    status = "captured" if kind == "payment" else "paid"
    fee_minor = 95 if psp in FEE_REPORTING else None
    snap = Snapshot(kind, "ref_1", "pay_1", status, 5000, 5000, "EUR", confirmations=3, fee_minor=fee_minor)

    event = verify(psp, event_body(psp, snap))

    assert (event.kind, event.status, event.fee_minor, event.dispute_id, event.reason_code) == (
        kind, status, fee_minor, None, None,
    )


Change = Callable[[dict[str, Any]], Any]


def _inner(body: dict[str, Any]) -> dict[str, Any]:
    """The refund or dispute itself inside a PSP's event body."""
    for key in ("resource", "data", "refund"):
        if isinstance(body.get(key), dict):
            inner: dict[str, Any] = body[key]
            return inner
    return body


def _drop(name: str) -> Change:
    return lambda body: _inner(body).pop(name)


def _set(name: str, value: Any) -> Change:
    return lambda body: _inner(body).update({name: value})


def _top(name: str, value: Any) -> Change:
    return lambda body: body.update({name: value})


@pytest.mark.parametrize(
    ("psp", "snap", "change"),
    [
        # card: the type says the kind and status, and they must agree with the body
        ("card", refund("succeeded"), _top("type", "refund.failed")),
        ("card", refund("succeeded"), _top("type", "refund.paid")),
        ("card", refund("succeeded"), _set("status", "captured")),
        ("card", refund("succeeded"), _drop("payment_reference")),
        ("card", refund("succeeded", 10), _set("fee", "-0.10")),
        ("card", refund("succeeded", 10), _set("fee", "0.101")),
        ("card", refund("succeeded", 10), _set("fee", 10)),
        ("card", dispute("opened"), _drop("reason_code")),
        ("card", dispute("opened"), _set("reason_code", "")),
        ("card", dispute("opened"), _set("reason_code", "1" * 51)),  # longer than the inbox keeps
        ("card", dispute("opened"), _set("reference", "d" * 201)),
        ("card", dispute("opened"), _drop("payment_reference")),
        ("card", dispute("opened"), _top("type", "dispute.closed")),
        ("card", dispute("lost", 1500), _set("amount", "30.001")),
        # ewallet: Adyen-named fields and chargeback codes
        ("ewallet", refund("succeeded"), _top("eventType", "REFUND")),
        ("ewallet", refund("succeeded"), _set("status", "REFUNDED")),
        ("ewallet", refund("succeeded"), _set("kind", "PAYMENT")),
        ("ewallet", refund("succeeded"), _drop("originalReference")),
        ("ewallet", refund("succeeded", 20), _set("fee", {"value": "0.20", "currency": "USD"})),  # not the refund's
        ("ewallet", refund("succeeded", 20), _set("fee", {"value": "-0.20", "currency": "EUR"})),
        ("ewallet", refund("succeeded", 20), _set("fee", "0.20")),
        ("ewallet", dispute("opened"), _top("eventType", "CHARGEBACK")),
        ("ewallet", dispute("opened"), _top("eventType", "REFUND_STATUS")),  # a dispute resource in a refund event
        ("ewallet", dispute("opened"), _set("kind", "REFUND")),
        ("ewallet", dispute("opened"), _drop("reasonCode")),
        ("ewallet", dispute("opened"), _drop("originalReference")),
        ("ewallet", dispute("lost", 1500), _top("eventType", ["SECOND_CHARGEBACK"])),
        # paybybank: the type's status word is the body's
        ("paybybank", refund("succeeded"), _top("type", "refund.settled")),
        ("paybybank", refund("succeeded"), _top("type", "refund.pending")),
        ("paybybank", refund("succeeded"), _set("object", "payment")),
        ("paybybank", refund("succeeded"), _drop("payment_id")),
        ("paybybank", refund("succeeded"), _set("status", "succeeded")),  # our word, not theirs
        # crypto: a refund travels only in a refund event
        ("crypto", refund("succeeded"), _top("event", "invoice.updated")),
        ("crypto", refund("succeeded"), _set("type", "deposit")),
        ("crypto", refund("succeeded"), _drop("invoice_id")),
        ("crypto", refund("succeeded"), _drop("refund_id")),
        ("crypto", refund("succeeded"), _set("price_amount", "20.00")),
        ("crypto", refund("succeeded"), _set("state", "succeeded")),
    ],
)
def test_a_malformed_refund_or_dispute_event_is_refused(psp: str, snap: Snapshot, change: Change) -> None:
    body = event_body(psp, snap)
    verify(psp, body)  # as made, it passes
    change(body)

    assert refused(psp, body) == "malformed_payload"


@pytest.mark.parametrize("psp", ["card", "ewallet"])
def test_only_dispute_events_carry_a_dispute_id_and_reason(psp: str) -> None:
    """A refund made to look like it carries a dispute's fields is still a refund, without them."""
    body = event_body(psp, refund("succeeded"))
    _inner(body).update({"reason_code": "10.4", "reasonCode": "10.4"})

    event = verify(psp, body)

    assert (event.kind, event.dispute_id, event.reason_code) == ("refund", None, None)


@pytest.mark.parametrize(
    ("psp", "snap"), [(psp, snap) for psp in PSPS for snap in (refund("failed", failure_code="x"),)]
    + [(psp, dispute("lost", 1500)) for psp in DISPUTING_PSPS],
)
def test_fuzzed_refund_and_dispute_events_are_only_ever_malformed_payload(psp: str, snap: Snapshot) -> None:
    rng = random.Random(f"{psp}-{snap.kind}")
    original = json.dumps(event_body(psp, snap)).encode()
    bodies = []
    for _ in range(150):
        raw = bytearray(original)
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        bodies.append(bytes(raw))
    for key in list(_inner(json.loads(original))):
        for value in (None, "", 0, -1, [], {"x": 1}, "1e999", "teleported"):
            body = json.loads(original)
            _inner(body)[key] = value
            bodies.append(json.dumps(body).encode())
    refusals = 0
    for body in bodies:
        try:
            event = verify(psp, body)
        except InvalidWebhook as err:  # nothing else may escape
            assert err.code == "malformed_payload", (err.code, body[:80])
            refusals += 1
        else:  # a change that happens to be acceptable must still make a sound event
            assert event.kind == snap.kind and event.status in (REFUND_STATUSES | DISPUTE_STATUSES)
            assert isinstance(event.amount_minor, int) and event.amount_minor > 0
            assert event.fee_minor is None or (isinstance(event.fee_minor, int) and event.fee_minor >= 0)
            assert (event.dispute_id is not None) == (snap.kind == "dispute")
    assert refusals > len(bodies) // 2
