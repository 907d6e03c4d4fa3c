"""Every provider's webhook verifier: its signature scheme (good, tampered, stale, missing, rotated, unknown
secret), then its own body format. Bodies are made by the sandbox's wire formats, headers by the schemes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from typing import Any

import jwt
import pytest

from payloop.money import MAX_MINOR_UNITS
from psp import signature_schemes, signatures
from psp.base import InvalidWebhook, WebhookEvent
from psp.http_connector import SignedWebhookVerifier
from psp.sandbox.formats import FORMATS, Snapshot
from tests.psp.psp_testkit import VERIFIER_CLASSES

NOW = 1_700_000_000
OCCURRED_AT = "2023-11-14T22:13:20.000Z"
NEW, OLD, OTHER = "whsec_new", "whsec_old", "whsec_other"
PSPS = ["card", "ewallet", "ewallet_b", "paybybank", "paybybank_b", "crypto"]
HEADERS = {  # the headers each scheme needs, all of them
    "card": ["X-Signature", "X-Timestamp"],
    "ewallet": ["X-Wallet-Signature", "X-Wallet-Timestamp"],
    "ewallet_b": ["Signature", "Digest", "X-EWB-Event-Id", "X-EWB-Timestamp"],
    "paybybank": ["webhook-id", "webhook-timestamp", "webhook-signature"],
    "paybybank_b": ["X-JWS-Signature"],
    "crypto": ["X-Crypto-Signature"],
}
SNAPSHOT = Snapshot(
    kind="payment", reference="ref_abc", merchant_reference="pay_1", status="captured", amount_minor=5000,
    requested_minor=5000, currency="EUR", confirmations=3,
)


def body_for(psp: str, snap: Snapshot = SNAPSHOT, event_id: str = "evt_1") -> bytes:
    return json.dumps(FORMATS[psp].event(event_id, snap, OCCURRED_AT)).encode()


def signed(psp: str, body: bytes, timestamp: int = NOW, secret: str = NEW, message_id: str = "evt_1") -> dict[str, str]:
    return FORMATS[psp].scheme.headers(secret, timestamp, body, message_id)


def verifier(psp: str, secrets: str | list[str] = NEW, tolerance: float = 300) -> SignedWebhookVerifier:
    return VERIFIER_CLASSES[psp](psp, secrets, tolerance)


def refusal(psp: str, headers: dict[str, str], body: bytes, secrets: str | list[str] = NEW) -> str:
    with pytest.raises(InvalidWebhook) as refused:
        verifier(psp, secrets)(headers, body, NOW)
    return refused.value.code


# -- the scheme -----------------------------------------------------------------------------------


@pytest.mark.parametrize("psp", PSPS)
def test_a_signed_event_parses(psp: str) -> None:
    body = body_for(psp)

    event = verifier(psp)(signed(psp, body), body, NOW)

    assert event == WebhookEvent(
        psp=psp, event_id="evt_1", payment_id="pay_1", psp_reference="ref_abc", status="captured",
        amount_minor=5000, currency="EUR", occurred_at=OCCURRED_AT,
    )


@pytest.mark.parametrize("psp", PSPS)
def test_header_names_are_case_insensitive(psp: str) -> None:
    body = body_for(psp)
    upper = {k.upper(): v for k, v in signed(psp, body).items()}
    assert verifier(psp)(upper, body, NOW).payment_id == "pay_1"


@pytest.mark.parametrize("psp", PSPS)
def test_tampered_body_is_a_bad_signature(psp: str) -> None:
    body = body_for(psp)
    tampered = body.replace(b"5000", b"9000").replace(b"50.00", b"90.00")
    assert tampered != body
    assert refusal(psp, signed(psp, body), tampered) == "bad_signature"


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("skew", [-300, 300])
def test_timestamps_within_tolerance_are_accepted(psp: str, skew: int) -> None:
    body = body_for(psp)
    assert verifier(psp)(signed(psp, body, NOW + skew), body, NOW).event_id == "evt_1"


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_stale_or_future_timestamps_are_refused(psp: str, skew: int) -> None:
    body = body_for(psp)
    assert refusal(psp, signed(psp, body, NOW + skew), body) == "stale_timestamp"


@pytest.mark.parametrize(("psp", "missing"), [(psp, h) for psp in PSPS for h in HEADERS[psp]])
def test_missing_headers_are_refused(psp: str, missing: str) -> None:
    body = body_for(psp)
    headers = {k: v for k, v in signed(psp, body).items() if k != missing}
    assert refusal(psp, headers, body) == "missing_signature"


@pytest.mark.parametrize("psp", PSPS)
def test_no_headers_at_all_are_refused(psp: str) -> None:
    assert refusal(psp, {}, body_for(psp)) == "missing_signature"


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("secrets", ["whsec_new,whsec_old", " whsec_new , whsec_old ,", ["whsec_new", "whsec_old"]])
def test_during_rotation_both_secrets_verify(psp: str, secrets: str | list[str]) -> None:
    body = body_for(psp)
    rotating = verifier(psp, secrets)
    for secret in (NEW, OLD):
        assert rotating(signed(psp, body, secret=secret), body, NOW).event_id == "evt_1"
    assert verifier(psp, secrets).secrets == (NEW, OLD)


@pytest.mark.parametrize("psp", PSPS)
def test_a_retired_or_unknown_secret_is_refused(psp: str) -> None:
    body = body_for(psp)
    assert refusal(psp, signed(psp, body, secret=OTHER), body, "whsec_new,whsec_old") == "bad_signature"
    assert refusal(psp, signed(psp, body, secret=OLD), body, NEW) == "bad_signature"  # rotation finished


@pytest.mark.parametrize("psp", PSPS)
def test_the_signature_is_checked_before_the_body_is_parsed(psp: str) -> None:
    assert refusal(psp, signed(psp, b"{}", secret=OTHER), b"not json") == "bad_signature"


@pytest.mark.parametrize("psp", PSPS)
def test_secrets_are_not_in_the_repr_and_at_least_one_is_required(psp: str) -> None:
    assert NEW not in repr(verifier(psp)) and OLD not in repr(verifier(psp, [NEW, OLD]))
    with pytest.raises(ValueError):
        verifier(psp, " , ")


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("timestamp", ["1" * 5000, "1.7e9", "-1700000000", "٣" * 10, "1700000000\n", ""])
def test_timestamps_that_are_not_unix_time_are_refused(psp: str, timestamp: str) -> None:
    body = body_for(psp)
    headers = signed(psp, body)
    if psp == "crypto":
        headers["X-Crypto-Signature"] = headers["X-Crypto-Signature"].replace(f"t={NOW}", f"t={timestamp}")
    elif psp == "paybybank_b":  # the time is the JWS header's `iat`: signed, but not unix seconds
        headers["X-JWS-Signature"] = jwt.api_jws.encode(
            body, signature_schemes.jws_key(NEW), algorithm="HS256", is_payload_detached=True,
            headers={"kid": signature_schemes.key_id(NEW), "iat": timestamp})
    else:
        name = next(h for h in HEADERS[psp] if "imestamp" in h)
        headers[name] = timestamp
    assert refusal(psp, headers, body) in {"bad_signature", "missing_signature"}


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize("bad", ["", "garbage", "ü" * 100_000, "\ud800" + "0" * 63, "v1," + "0" * 1_000_000, "😀" * 500])
def test_garbage_signatures_are_only_ever_refused(psp: str, bad: str) -> None:
    body = body_for(psp)
    headers = signed(psp, body)
    name = next(h for h in HEADERS[psp] if "ignature" in h)
    headers[name] = bad
    assert refusal(psp, headers, body) in {"bad_signature", "missing_signature"}


# -- Standard Webhooks (paybybank) ----------------------------------------------------------------


def test_standard_webhooks_known_answer() -> None:
    """The example from the Standard Webhooks specification."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert signatures.standard_webhooks_sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_standard_webhooks_key_is_the_base64_after_whsec_else_the_raw_secret() -> None:
    key = b"\x00\x01secret-bytes"
    assert signatures.standard_webhooks_key("whsec_" + base64.b64encode(key).decode()) == key
    assert signatures.standard_webhooks_key("whsec_not base64!") == b"whsec_not base64!"
    assert signatures.standard_webhooks_key("plain") == b"plain"


def test_standard_webhooks_accepts_any_of_several_signatures() -> None:
    body = body_for("paybybank")
    headers = signed("paybybank", body)
    valid = headers["webhook-signature"]
    other = signatures.standard_webhooks_sign(OTHER, "evt_1", NOW, body)
    headers["webhook-signature"] = f"v2,abc {other} {valid}"
    assert verifier("paybybank")(headers, body, NOW).event_id == "evt_1"
    headers["webhook-signature"] = f"{other} v1a,{valid[3:]} {valid[3:]}"  # no valid v1 entry
    assert refusal("paybybank", headers, body) == "bad_signature"


def test_standard_webhooks_event_id_is_the_signed_webhook_id() -> None:
    body = body_for("paybybank")
    headers = signed("paybybank", body, message_id="msg_42")
    assert verifier("paybybank")(headers, body, NOW).event_id == "msg_42"
    assert refusal("paybybank", headers | {"webhook-id": "msg_43"}, body) == "bad_signature"
    assert refusal("paybybank", headers | {"webhook-id": "m" * 256}, body) == "bad_signature"


def test_standard_webhooks_signature_format() -> None:
    body = body_for("paybybank")
    headers = signed("paybybank", body, message_id="msg_1")
    digest = hmac.new(b"whsec_new", f"msg_1.{NOW}.".encode() + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
    assert headers["webhook-timestamp"] == str(NOW)


# -- Stripe-like (crypto) and the e-wallet's own -----------------------------------------------------


def test_crypto_signature_format_and_several_v1_entries() -> None:
    body = body_for("crypto")
    expected = hmac.new(NEW.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    assert signed("crypto", body)["X-Crypto-Signature"] == f"t={NOW},v1={expected}"
    other = signatures.crypto_sign(OTHER, NOW, body)
    header = f"t={NOW},v1={other},v0=abc,v1={expected}"
    assert verifier("crypto")({"X-Crypto-Signature": header}, body, NOW).payment_id == "pay_1"


@pytest.mark.parametrize("header", ["v1=00", f"t={NOW}", f"t={NOW},t={NOW},v1=00", "t=,v1=", ","])
def test_crypto_signature_header_must_have_one_t_and_a_v1(header: str) -> None:
    assert refusal("crypto", {"X-Crypto-Signature": header}, body_for("crypto")) == "bad_signature"


def test_ewallet_signature_is_base64_hmac_sha512_over_millisecond_timestamp() -> None:
    body = body_for("ewallet")
    headers = signed("ewallet", body)
    assert headers["X-Wallet-Timestamp"] == str(NOW * 1000)
    digest = hmac.new(NEW.encode(), f"{NOW * 1000}\n".encode() + body, hashlib.sha512).digest()
    assert headers["X-Wallet-Signature"] == base64.b64encode(digest).decode()
    # Milliseconds count toward the tolerance: 300.5 s late is stale.
    late = {"X-Wallet-Timestamp": str(NOW * 1000 - 300_500),
            "X-Wallet-Signature": signatures.wallet_sign(NEW, NOW * 1000 - 300_500, body)}
    assert refusal("ewallet", late, body) == "stale_timestamp"


def test_the_six_schemes_are_different() -> None:
    body = b"{}"
    made = {psp: FORMATS[psp].scheme.headers(NEW, NOW, body, "evt_1") for psp in PSPS}
    assert len({frozenset(h) for h in made.values()}) == len(PSPS)
    assert len({FORMATS[psp].scheme.name for psp in PSPS}) == len(PSPS)
    for psp in PSPS:  # a webhook signed in one PSP's scheme is refused by every other PSP's verifier
        for other in PSPS:
            if other != psp:
                with pytest.raises(InvalidWebhook):
                    verifier(other)(made[psp], body, NOW)


# -- each verifier's body format ------------------------------------------------------------------


@pytest.mark.parametrize("psp", PSPS)
@pytest.mark.parametrize(
    ("snapshot", "status"),
    [
        (Snapshot("payout", "ref_p", "po_1", "paid", 5000, 5000, "EUR"), "paid"),
        (Snapshot("payout", "ref_p", "po_1", "pending", 5000, 5000, "EUR"), "pending"),
        (Snapshot("payout", "ref_p", "po_1", "failed", 5000, 5000, "EUR", failure_code="beneficiary_rejected"),
         "failed"),
        (Snapshot("payment", "ref_p", "pay_1", "authorized", 5000, 5000, "EUR", confirmations=1), "authorized"),
        (Snapshot("payment", "ref_p", "pay_1", "failed", 5000, 5000, "EUR", failure_code="x_failed"), "failed"),
    ],
)
def test_every_status_round_trips(psp: str, snapshot: Snapshot, status: str) -> None:
    body = body_for(psp, snapshot)
    event = verifier(psp)(signed(psp, body), body, NOW)
    assert (event.payment_id, event.status, event.amount_minor) == (snapshot.merchant_reference, status, 5000)
    assert event.failure_code == snapshot.failure_code


def _mutations(psp: str) -> list[bytes]:
    """Correctly shaped events with one thing wrong."""
    event: dict[str, Any] = json.loads(body_for(psp))
    nested = {"card": None, "ewallet": "resource", "ewallet_b": "txn", "paybybank": "data", "paybybank_b": "Data",
              "crypto": "invoice"}[psp]
    inner = event[nested] if nested else event
    bad: list[dict[str, Any]] = []
    for key in list(inner):
        for value in (None, "", 0, [], {"x": 1}, "1e999", "teleported"):
            changed = json.loads(json.dumps(event))
            target = changed[nested] if nested else changed
            target[key] = value
            bad.append(changed)
        removed = json.loads(json.dumps(event))
        del (removed[nested] if nested else removed)[key]
        bad.append(removed)
    return [json.dumps(b).encode() for b in bad] + [b"[]", b"not json", b"\xff", b"[" * 100_000, b"1" * 5000]


@pytest.mark.parametrize("psp", PSPS)
def test_correctly_signed_malformed_bodies_are_only_ever_malformed_payload(psp: str) -> None:
    rng = random.Random(psp)
    bodies = _mutations(psp)
    original = body_for(psp)
    for _ in range(200):
        raw = bytearray(original)
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        bodies.append(bytes(raw))
    refused = 0
    for body in bodies:
        try:
            event = verifier(psp)(signed(psp, body), body, NOW)
        except InvalidWebhook as err:  # anything else escaping fails the test
            assert err.code == "malformed_payload", (err.code, body[:80])
            refused += 1
        else:  # a change that happens to be acceptable must still parse soundly
            assert isinstance(event.amount_minor, int) and 0 < event.amount_minor <= MAX_MINOR_UNITS
            assert event.payment_id and event.psp_reference and event.currency
    assert refused > len(bodies) // 2


@pytest.mark.parametrize(
    ("psp", "change"),
    [
        ("ewallet", lambda e: e["resource"].update(kind="PAYMENT", status="PAID_OUT")),
        ("ewallet", lambda e: e.update(eventType="PAYOUT_STATUS")),  # a payment resource in a payout event
        ("ewallet", lambda e: e["resource"].update(status="succeeded")),  # their statuses are upper case
        ("paybybank", lambda e: e["data"].update(amount={"value": "5000", "currency": "EUR"})),  # an integer
        ("paybybank", lambda e: e["data"].update(amount={"value": 50.0, "currency": "EUR"})),
        ("paybybank", lambda e: e["data"].update(amount={"value": True, "currency": "EUR"})),
        ("paybybank", lambda e: e.update(type="refund.settled")),
        ("paybybank", lambda e: e["data"].update(status="captured")),  # our word, not theirs
        ("crypto", lambda e: e["invoice"].update(received_amount="45.00")),  # minor units, not decimals
        ("crypto", lambda e: e["invoice"].update(price_amount="05000")),
        ("crypto", lambda e: e["invoice"].update(price_amount=5000)),
        ("crypto", lambda e: e.update(event="invoice.created")),
        ("crypto", lambda e: e["invoice"].update(type="refund")),
        ("card", lambda e: e.update(amount={"value": "50.00", "currency": "EUR"})),
        ("ewallet_b", lambda e: e["txn"].update(state="SUCCEEDED")),  # ewallet's word, not theirs
        ("ewallet_b", lambda e: e["notification"].update(topic="credit.completed")),  # a debit in a credit's topic
        ("ewallet_b", lambda e: e["notification"].update(id="evt_2")),  # not the signed X-EWB-Event-Id
        ("ewallet_b", lambda e: e["txn"].update(value=5000)),
        ("paybybank_b", lambda e: e["Data"]["Resource"].update(Type="payment")),
        ("paybybank_b", lambda e: e["Data"]["Resource"].update(Status="settled")),  # paybybank's word
        ("paybybank_b", lambda e: e["Data"]["Resource"].update(InstructedAmount={"value": 5000, "currency": "EUR"})),
    ],
)
def test_a_field_in_another_providers_shape_is_malformed(psp: str, change: Any) -> None:
    event = json.loads(body_for(psp))
    change(event)
    body = json.dumps(event).encode()
    assert refusal(psp, signed(psp, body), body) == "malformed_payload"


def test_paybybank_needs_a_webhook_id() -> None:
    body = body_for("paybybank")
    with pytest.raises(InvalidWebhook):
        verifier("paybybank")(signed("paybybank", body, message_id=""), body, NOW)


# -- HTTP Signatures (ewallet_b) and the detached JWS (paybybank_b) ---------------------------------


def test_http_signature_covers_the_event_id_timestamp_and_digest() -> None:
    body = body_for("ewallet_b")
    headers = signed("ewallet_b", body)
    assert headers["Digest"] == "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    signing_string = f"x-ewb-event-id: evt_1\nx-ewb-timestamp: {NOW}\ndigest: {headers['Digest']}".encode()
    expected = base64.b64encode(hmac.new(NEW.encode(), signing_string, hashlib.sha256).digest()).decode()
    assert headers["Signature"] == (f'keyId="{signature_schemes.key_id(NEW)}",algorithm="hmac-sha256",'
                                    f'headers="x-ewb-event-id x-ewb-timestamp digest",signature="{expected}"')
    # Another event id, time or digest under the same signature: refused.
    for name, value in (("X-EWB-Event-Id", "evt_2"), ("X-EWB-Timestamp", str(NOW + 1)), ("Digest", "SHA-256=AA==")):
        assert refusal("ewallet_b", headers | {name: value}, body) == "bad_signature"


@pytest.mark.parametrize("change", [
    lambda h: h.replace('headers="x-ewb-event-id x-ewb-timestamp digest"', 'headers="digest"'),
    lambda h: h.replace('headers="x-ewb-event-id x-ewb-timestamp digest"',
                        'headers="digest digest x-ewb-event-id x-ewb-timestamp"'),
    lambda h: h.replace("hmac-sha256", "hs2019"),
    lambda h: h.replace(f'keyId="{signature_schemes.key_id(NEW)}"', 'keyId="someone-else"'),
    lambda h: h + ',keyId="twice"',
    lambda h: h.replace('"', ""),
])
def test_http_signature_parameters_must_be_the_schemes(change: Any) -> None:
    body = body_for("ewallet_b")
    headers = signed("ewallet_b", body)
    headers["Signature"] = change(headers["Signature"])
    assert refusal("ewallet_b", headers, body) == "bad_signature"


def test_detached_jws_is_an_unencoded_hs256_jws_over_the_body() -> None:
    body = body_for("paybybank_b")
    token = signed("paybybank_b", body)["X-JWS-Signature"]
    header_part, payload_part, _ = token.split(".")
    assert payload_part == ""  # detached: the body is the payload
    header = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
    assert header | {"typ": None} == {"alg": "HS256", "b64": False, "crit": ["b64"],
                                      "kid": signature_schemes.key_id(NEW), "iat": NOW, "typ": None}
    jwt.api_jws.decode_complete(token, signature_schemes.jws_key(NEW), algorithms=["HS256"], detached_payload=body)


@pytest.mark.parametrize("algorithm", ["none", "HS512"])
def test_detached_jws_accepts_hs256_only(algorithm: str) -> None:
    body = body_for("paybybank_b")
    key = signature_schemes.jws_key(NEW) * 2 if algorithm != "none" else None  # 64 bytes, as HS512 wants
    token = jwt.api_jws.encode(body, key, algorithm=algorithm, is_payload_detached=True,
                               headers={"kid": signature_schemes.key_id(NEW), "iat": NOW})
    assert refusal("paybybank_b", {"X-JWS-Signature": token}, body) == "bad_signature"


def test_a_jws_with_a_payload_of_its_own_or_base64url_payload_is_refused() -> None:
    """Genuinely signed by the secret, but not over this body: an attached payload, or b64 left true (the signature
    then covers the body's base64url, a different input)."""
    body = body_for("paybybank_b")
    key, headers = signature_schemes.jws_key(NEW), {"kid": signature_schemes.key_id(NEW), "iat": NOW}
    attached = jwt.api_jws.encode(body, key, algorithm="HS256", headers=headers)
    b64_true = jwt.api_jws.encode(body, key, algorithm="HS256", headers=headers | {"b64": True})
    b64_true_detached = ".".join((b64_true.split(".")[0], "", b64_true.split(".")[2]))
    for token in (attached, b64_true_detached):
        assert refusal("paybybank_b", {"X-JWS-Signature": token}, body) == "bad_signature"
