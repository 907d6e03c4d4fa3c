"""The sandbox webhook signature scheme, shared by the signer (sandbox PSP) and the verifier (API).

X-Timestamp: unix seconds
X-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Timestamp>.<raw body>")>
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from psp.base import InvalidWebhook

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"
_SCHEME = "sha256="
# Unix seconds have 10 digits until 2286; anything longer is refused before int() (which raises ValueError past
# Python's int-string limit of 4300 digits, and costs quadratic time well before it).
_MAX_TIMESTAMP_CHARS = 12


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Signature header value for `body` sent at `timestamp`."""
    signed = f"{timestamp}.".encode() + body
    return _SCHEME + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance: float) -> None:
    """Raise InvalidWebhook unless `body` carries a valid, fresh signature. Header names are case-insensitive."""
    lowered = {name.lower(): value for name, value in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower())
    timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    if not signature or not timestamp:
        raise InvalidWebhook("missing_signature", "X-Signature and X-Timestamp headers are required")
    if len(timestamp) > _MAX_TIMESTAMP_CHARS or not (timestamp.isascii() and timestamp.isdigit()):
        raise InvalidWebhook("bad_signature", "X-Timestamp must be unix seconds")
    sent_at = int(timestamp)
    expected = sign(secret, sent_at, body)
    # Constant-time, on bytes: a non-ASCII header must not raise (compare_digest refuses non-ASCII str).
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise InvalidWebhook("bad_signature", "signature does not match the body")
    # Checked after the signature, so stale_timestamp means "authentic but replayed or clock-skewed".
    if abs(now - sent_at) > tolerance:
        raise InvalidWebhook("stale_timestamp", f"timestamp is more than {tolerance:g} s from now")
