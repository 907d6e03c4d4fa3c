"""The signature scheme and the webhook verifier: signature on the raw body first, then freshness, then parsing."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Mapping

import pytest

from payloop.money import MAX_MINOR_UNITS
from psp import signatures
from psp.base import InvalidWebhook, WebhookEvent
from psp.sandbox_connector import SandboxWebhookVerifier

SECRET = "whsec_unit"
NOW = 1_700_000_000
EVENT = {
    "event_id": "evt_1",
    "type": "payment.failed",
    "merchant_reference": "pay_1",
    "reference": "card_abc",
    "status": "failed",
    "amount": "50.00",
    "currency": "EUR",
    "failure_code": "3ds_failed",
    "occurred_at": "2023-11-14T22:13:20.000Z",
}
verify_card = SandboxWebhookVerifier("card", SECRET)


def signed(body: bytes, timestamp: int = NOW, secret: str = SECRET) -> dict[str, str]:
    return signatures.signed_headers(secret, timestamp, body)


def body_of(event: Mapping[str, object]) -> bytes:
    return json.dumps(event).encode()


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"k", b"123.{}", hashlib.sha256).hexdigest()
    assert signatures.sign("k", 123, b"{}") == f"sha256={expected}"


def test_a_valid_webhook_parses_into_an_event() -> None:
    body = body_of(EVENT)

    event = verify_card(signed(body), body, NOW)

    assert event == WebhookEvent(
        psp="card", event_id="evt_1", payment_id="pay_1", psp_reference="card_abc", status="failed",
        amount_minor=5000, currency="EUR", occurred_at="2023-11-14T22:13:20.000Z", failure_code="3ds_failed",
    )


def test_header_names_are_case_insensitive() -> None:
    body = body_of(EVENT)
    headers = {name.upper(): value for name, value in signed(body).items()}
    assert verify_card(headers, body, NOW).event_id == "evt_1"


@pytest.mark.parametrize("skew", [-300, 300])
def test_timestamps_within_tolerance_are_accepted(skew: int) -> None:
    body = body_of(EVENT)
    assert verify_card(signed(body, NOW + skew), body, NOW).event_id == "evt_1"


def _refusal(headers: dict[str, str], body: bytes, verifier: SandboxWebhookVerifier = verify_card) -> str:
    with pytest.raises(InvalidWebhook) as refused:
        verifier(headers, body, NOW)
    return refused.value.code


def test_tampered_body_is_a_bad_signature() -> None:
    body = body_of(EVENT)
    tampered = body.replace(b'"50.00"', b'"5000.00"')
    assert _refusal(signed(body), tampered) == "bad_signature"


def test_wrong_secret_is_a_bad_signature() -> None:
    body = body_of(EVENT)
    assert _refusal(signed(body, secret="whsec_other"), body) == "bad_signature"


@pytest.mark.parametrize("bad", ["sha256=deadbeef", "md5=00", "", "sha256=ü", "garbage"])
def test_malformed_signature_values_are_refused(bad: str) -> None:
    body = body_of(EVENT)
    headers = signed(body) | {"X-Signature": bad}
    assert _refusal(headers, body) in {"bad_signature", "missing_signature"}


def test_timestamp_that_is_not_unix_seconds_is_refused() -> None:
    body = body_of(EVENT)
    headers = signed(body) | {"X-Timestamp": "1.7e9"}
    assert _refusal(headers, body) == "bad_signature"


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_stale_or_future_timestamp_is_refused(skew: int) -> None:
    body = body_of(EVENT)
    assert _refusal(signed(body, NOW + skew), body) == "stale_timestamp"


@pytest.mark.parametrize("missing", ["X-Signature", "X-Timestamp"])
def test_missing_header_is_refused(missing: str) -> None:
    body = body_of(EVENT)
    headers = {k: v for k, v in signed(body).items() if k != missing}
    assert _refusal(headers, body) == "missing_signature"


def test_signature_is_checked_before_the_body_is_parsed() -> None:
    assert _refusal(signed(b"{}", secret="whsec_other"), b"not json") == "bad_signature"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"\xff\xfe",
        body_of({k: v for k, v in EVENT.items() if k != "event_id"}),
        body_of(EVENT | {"amount": 50}),
        body_of(EVENT | {"amount": "50.001"}),
        body_of(EVENT | {"currency": "XXX"}),
        body_of(EVENT | {"status": "teleported"}),
        body_of(EVENT | {"merchant_reference": ""}),
    ],
)
def test_correctly_signed_but_malformed_payload_is_refused(body: bytes) -> None:
    assert _refusal(signed(body), body) == "malformed_payload"


def test_tolerance_is_configurable() -> None:
    body = body_of(EVENT)
    strict = SandboxWebhookVerifier("card", SECRET, tolerance_seconds=10)
    assert _refusal(signed(body, NOW - 11), body, strict) == "stale_timestamp"


def test_the_secret_is_not_in_the_verifier_repr() -> None:
    assert SECRET not in repr(verify_card)


PAYOUT_EVENT = EVENT | {
    "type": "payout.failed",
    "merchant_reference": "po_1",
    "failure_code": "beneficiary_rejected",
}


@pytest.mark.parametrize("status", ["paid", "failed", "pending"])
def test_payout_events_parse_with_the_payout_id_as_payment_id(status: str) -> None:
    body = body_of(PAYOUT_EVENT | {"type": f"payout.{status}", "status": status})

    event = verify_card(signed(body), body, NOW)

    assert (event.payment_id, event.status, event.amount_minor) == ("po_1", status, 5000)


@pytest.mark.parametrize(
    "overrides",
    [
        {"type": "payout.captured", "status": "captured"},  # a payment status in a payout event
        {"type": "payment.paid", "status": "paid"},  # a payout status in a payment event
        {"type": "refund.paid", "status": "paid"},  # a payout status in a refund event
        {"type": "chargeback.lost", "status": "lost"},  # an event kind we do not know
        {"type": ""},
        {"type": None},
    ],
)
def test_status_must_belong_to_the_event_family(overrides: dict[str, object]) -> None:
    body = body_of(PAYOUT_EVENT | overrides)
    assert _refusal(signed(body), body) == "malformed_payload"


def test_an_event_without_type_is_refused() -> None:
    body = body_of({k: v for k, v in EVENT.items() if k != "type"})
    assert _refusal(signed(body), body) == "malformed_payload"


def test_a_5000_digit_timestamp_is_a_bad_signature_not_a_crash() -> None:
    body = body_of(EVENT)
    huge = "1" * 5000  # past Python's 4300-digit int-string limit: int() would raise ValueError
    headers = signed(body) | {"X-Timestamp": huge}
    with pytest.raises(InvalidWebhook) as refused:
        signatures.verify(SECRET, headers, body, NOW, 300)
    assert refused.value.code == "bad_signature"
    assert _refusal(headers, body) == "bad_signature"


@pytest.mark.parametrize("timestamp", ["1" * 13, "0" * 13 + "1700000000", "٣" * 10, "1700000000\n", "-1700000000"])
def test_timestamps_that_cannot_be_unix_seconds_are_refused_before_conversion(timestamp: str) -> None:
    body = body_of(EVENT)
    assert _refusal(signed(body) | {"X-Timestamp": timestamp}, body) == "bad_signature"


@pytest.mark.parametrize(
    "bad",
    [
        "sha256=" + "é" * 64,
        "sha256=\ud800" + "0" * 63,  # a lone surrogate: not even encodable as UTF-8
        "\x00" * 71,
        "sha256=" + "0" * 1_000_000,
        "ü" * 1_000_000,
        "😀" * 10_000,
    ],
)
def test_non_ascii_or_huge_signatures_are_only_ever_a_bad_signature(bad: str) -> None:
    body = body_of(EVENT)
    headers = signed(body) | {"X-Signature": bad}
    assert _refusal(headers, body) == "bad_signature"


def _fuzz_bodies(rng: random.Random) -> list[bytes]:
    """Bodies that a correctly signed webhook might carry, malformed in every way we thought of."""
    wrong_values: list[object] = [
        None, True, 0, -1, 10**400, 1e308, -0.0, [], {}, [1], {"a": 1}, "", " ", "\x00", "é", "\ud800", "1" * 5000,
        "1e999", "NaN", "50.001", "50.100", "-50.00", "99999999999.999999999999999999", "1.000000000000000000000000000001",
    ]
    bodies: list[bytes] = [
        b"[" * 100_000,
        b"{\"a\":" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        (b'{"x":' * 50_000) + b"1" + (b"}" * 50_000),
        b"1" * 5000,
        b'{"amount": ' + b"9" * 5000 + b"}",
        b"-" + b"9" * 10_000,
        b"1e999999",
        b"NaN",
        b"",
        b"\xff\xfe\xfd",
        b"\xef\xbb\xbf" + body_of(EVENT),  # a UTF-8 byte-order mark
        body_of(EVENT).decode().encode("utf-16"),
        body_of(EVENT).decode().encode("utf-32"),
        body_of(EVENT).replace(b'"EUR"', b'"\xc3\x28"'),  # invalid UTF-8 inside a string
        body_of(EVENT).replace(b'"50.00"', b'"\\ud800"'),  # a lone surrogate escape
        body_of(EVENT).replace(b'"50.00"', b"1" * 5000),  # an amount past the int-string limit
        body_of(EVENT).replace(b'"50.00"', b'"' + b"1" * 5000 + b'"'),
        body_of(EVENT).replace(b'"50.00"', b"1e400"),
        body_of(EVENT)[:-1],
    ]
    for _ in range(500 - len(bodies)):
        kind = rng.randrange(5)
        if kind == 0:  # random bytes
            bodies.append(rng.randbytes(rng.randrange(0, 200)))
        elif kind == 1:  # a valid event with one field wrong or missing
            event: dict[str, object] = dict(rng.choice([EVENT, PAYOUT_EVENT]))
            field = rng.choice(sorted(event))
            if rng.random() < 0.2:
                del event[field]
            else:
                event[field] = rng.choice(wrong_values)
            bodies.append(json.dumps(event).encode())
        elif kind == 2:  # a valid event with a few bytes flipped
            raw = bytearray(body_of(EVENT))
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            bodies.append(bytes(raw))
        elif kind == 3:  # deep nesting at a random depth and shape
            depth = rng.choice([10, 500, 999, 1000, 5000, 100_000])
            opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            bodies.append(opener * depth + (b"1" + closer * depth if rng.random() < 0.5 else b""))
        else:  # other JSON values at the top level
            value = rng.choice(wrong_values + [[EVENT], "payment.failed", 10**4000 if rng.random() < 0.5 else 1])
            try:
                bodies.append(json.dumps(value).encode())
            except (ValueError, UnicodeEncodeError):
                bodies.append(repr(value).encode("utf-8", "surrogatepass"))
    return bodies


def test_fuzzed_signed_bodies_are_only_ever_refused_as_invalid_webhooks() -> None:
    """Correctly signed, so the payload parser is what gets exercised: nothing but InvalidWebhook may escape."""
    rng = random.Random(1_700_000_000)
    bodies = _fuzz_bodies(rng)
    assert len(bodies) == 500
    refused = 0
    for body in bodies:
        try:
            event = verify_card(signed(body), body, NOW)
        except InvalidWebhook as err:  # anything else escaping fails the test
            assert err.code == "malformed_payload", (err.code, body[:80])
            refused += 1
        else:  # a wrong value that happens to be acceptable (e.g. failure_code None) must still parse soundly
            assert isinstance(event.amount_minor, int) and 0 < event.amount_minor <= MAX_MINOR_UNITS
    assert refused > 450
