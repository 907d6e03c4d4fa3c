"""Webhook signature schemes, shared by the signers (the sandbox PSPs) and the verifiers (the API).

Four schemes, one per sandbox provider family (ewallet_b's and paybybank_b's own are in psp/signature_schemes.py):

- card (DESIGN.md): `X-Timestamp: <unix s>`, `X-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>.<raw body>")>`;
  the module-level `sign` / `signed_headers` / `verify` are this scheme.
- paybybank, Standard Webhooks (standardwebhooks.com, signed with the `standardwebhooks` library): `webhook-id`,
  `webhook-timestamp: <unix s>`, `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<raw body>")>`, several
  space-separated signatures allowed. The secret is `whsec_<base64 key>`; a secret not in that form is used as its
  UTF-8 bytes.
- crypto, Stripe-like: `X-Crypto-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<ts>.<raw body>")>`,
  several `v1=` entries allowed.
- ewallet, its own: `X-Wallet-Timestamp: <unix ms>`,
  `X-Wallet-Signature: <base64 HMAC-SHA512(secret, "<ts ms>\\n<raw body>")>`.

Secrets: each PSP has its own (`secret_setting`; psp/registry.py resolves them per PSP), so one PSP's signature
never verifies as another's. Rotation: every verifier takes a list of secrets and accepts a signature made with
any of them; a comma-separated string ("new,old") is such a list. Signers sign with the first.

Every verifier checks the signature before the timestamp's freshness, so `stale_timestamp` means "authentic
but replayed or clock-skewed", and raises InvalidWebhook (missing_signature, bad_signature, stale_timestamp)
and nothing else, whatever the headers hold.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from standardwebhooks import Webhook

from psp.base import InvalidWebhook

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"
_SCHEME = "sha256="
# Unix seconds have 10 digits until 2286; anything longer is refused before int() (which raises ValueError past
# Python's int-string limit of 4300 digits, and costs quadratic time well before it).
_MAX_TIMESTAMP_CHARS = 12
# A signature header longer than this cannot hold a handful of signatures: refused before any parsing.
_MAX_SIGNATURE_HEADER_CHARS = 2048


def parse_secrets(secrets: str | Sequence[str]) -> tuple[str, ...]:
    """The valid secrets, newest first: "new,old" or ["new", "old"]. At least one is required."""
    parts = secrets.split(",") if isinstance(secrets, str) else list(secrets)
    parsed = tuple(part.strip() for part in parts if part and part.strip())
    if not parsed:
        raise ValueError("at least one webhook secret is required")
    return parsed


SHARED_SECRET_SETTING = "PAYLOOP_SANDBOX_WEBHOOK_SECRET"


def own_secret_setting(psp: str) -> str:
    """The name of the setting that holds `psp`'s own webhook secret(s) unless the routing file names another:
    `PAYLOOP_WEBHOOK_SECRET_<PSP>`."""
    return f"PAYLOOP_WEBHOOK_SECRET_{psp.upper()}"


def setting_value(settings: object, name: str) -> str:
    """The value of the setting `name` (`PAYLOOP_*`, read from the settings object, which read the environment)
    or, for any other name, of that environment variable; "" when unset."""
    if name.startswith("PAYLOOP_"):
        value = getattr(settings, name.removeprefix("PAYLOOP_").lower(), None)
        return value if isinstance(value, str) else ""
    return os.environ.get(name, "")


def secret_setting(settings: object, psp: str, name: str | None = None) -> str:
    """The webhook secret(s) of `psp` ("new,old" during a rotation): the setting `name` (the routing file's
    `webhook_secret`; by default PAYLOOP_WEBHOOK_SECRET_<PSP>) when it is set, else the shared fallback
    PAYLOOP_SANDBOX_WEBHOOK_SECRET."""
    own = setting_value(settings, name or own_secret_setting(psp))
    if own.strip(" ,"):
        return own
    return setting_value(settings, SHARED_SECRET_SETTING)


def signing_secret(secrets: str | Sequence[str]) -> str:
    """The secret a signer uses: the first (newest) one."""
    return parse_secrets(secrets)[0]


def lowered_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def unix_seconds(value: str, max_chars: int = _MAX_TIMESTAMP_CHARS) -> int:
    """ASCII digits only, bounded length; anything else is a bad_signature (the header is part of what is signed)."""
    if len(value) > max_chars or not (value.isascii() and value.isdigit()):
        raise InvalidWebhook("bad_signature", "the timestamp must be unix time in ASCII digits")
    return int(value)


def same_signature(expected: str, given: str) -> bool:
    # Constant-time, on bytes: a non-ASCII header must not raise (compare_digest refuses non-ASCII str).
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def require_fresh(sent_at: float, now: float, tolerance: float) -> None:
    if abs(now - sent_at) > tolerance:
        raise InvalidWebhook("stale_timestamp", f"timestamp is more than {tolerance:g} s from now")


class SignatureScheme(Protocol):
    name: str

    def headers(self, secret: str, timestamp: int, body: bytes, message_id: str) -> dict[str, str]:
        """The headers a signer sends with `body` at `timestamp` (unix seconds)."""
        ...

    def verify(
        self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float
    ) -> str | None:
        """Raise InvalidWebhook unless `body` is signed with one of `secrets` and fresh; return the message id
        the headers carry, if the scheme has one."""
        ...


# -- card: the DESIGN.md scheme -------------------------------------------------------------------


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


def verify(
    secret: str | Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float
) -> None:
    """Raise InvalidWebhook unless `body` carries a valid, fresh signature made with one of the secrets.
    Header names are case-insensitive."""
    lowered = lowered_headers(headers)
    signature = lowered.get(SIGNATURE_HEADER.lower())
    timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    if not signature or not timestamp:
        raise InvalidWebhook("missing_signature", "X-Signature and X-Timestamp headers are required")
    sent_at = unix_seconds(timestamp)
    if not any(same_signature(sign(s, sent_at, body), signature) for s in parse_secrets(secret)):
        raise InvalidWebhook("bad_signature", "signature does not match the body")
    require_fresh(sent_at, now, tolerance)


class DesignHmacScheme:
    name = "hmac-sha256"

    def headers(self, secret: str, timestamp: int, body: bytes, message_id: str) -> dict[str, str]:
        return signed_headers(secret, timestamp, body)

    def verify(
        self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float
    ) -> str | None:
        verify(secrets, headers, body, now, tolerance)
        return None


# -- paybybank: Standard Webhooks -----------------------------------------------------------------

WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
_WHSEC_PREFIX = "whsec_"
_MAX_WEBHOOK_ID_CHARS = 255


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; any other secret is used as its UTF-8 bytes (the library would
    base64-decode it, so the key is handed to it as bytes)."""
    if secret.startswith(_WHSEC_PREFIX):
        try:
            return base64.b64decode(secret[len(_WHSEC_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def standard_webhooks_sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature, made by the `standardwebhooks` library."""
    return Webhook(standard_webhooks_key(secret)).sign(message_id, datetime.fromtimestamp(timestamp, UTC), body)


class StandardWebhooksScheme:
    name = "standard-webhooks"

    def headers(self, secret: str, timestamp: int, body: bytes, message_id: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            WEBHOOK_ID_HEADER: message_id,
            WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
            WEBHOOK_SIGNATURE_HEADER: standard_webhooks_sign(secret, message_id, timestamp, body),
        }

    def verify(
        self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float
    ) -> str | None:
        lowered = lowered_headers(headers)
        message_id = lowered.get(WEBHOOK_ID_HEADER)
        timestamp = lowered.get(WEBHOOK_TIMESTAMP_HEADER)
        signature_header = lowered.get(WEBHOOK_SIGNATURE_HEADER)
        if not message_id or not timestamp or not signature_header:
            raise InvalidWebhook(
                "missing_signature", "webhook-id, webhook-timestamp and webhook-signature headers are required"
            )
        if len(message_id) > _MAX_WEBHOOK_ID_CHARS or len(signature_header) > _MAX_SIGNATURE_HEADER_CHARS:
            raise InvalidWebhook("bad_signature", "webhook-id or webhook-signature is too long")
        sent_at = unix_seconds(timestamp)
        # The library's own verify() checks the timestamp first and has one error for everything; signing with it
        # and comparing here keeps this module's order (signature, then freshness) and its three refusals.
        given = [sig for sig in signature_header.split(" ") if sig.startswith("v1,")]
        expected = [standard_webhooks_sign(s, message_id, sent_at, body) for s in parse_secrets(secrets)]
        if not any(same_signature(e, g) for e in expected for g in given):
            raise InvalidWebhook("bad_signature", "no webhook-signature matches the body")
        require_fresh(sent_at, now, tolerance)
        return message_id


# -- crypto: Stripe-like ---------------------------------------------------------------------------

CRYPTO_SIGNATURE_HEADER = "X-Crypto-Signature"


def crypto_sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of "<ts>.<body>" (one `v1=` value)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


class StripeLikeScheme:
    name = "stripe-like"

    def headers(self, secret: str, timestamp: int, body: bytes, message_id: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            CRYPTO_SIGNATURE_HEADER: f"t={timestamp},v1={crypto_sign(secret, timestamp, body)}",
        }

    def verify(
        self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float
    ) -> str | None:
        header = lowered_headers(headers).get(CRYPTO_SIGNATURE_HEADER.lower())
        if not header:
            raise InvalidWebhook("missing_signature", f"the {CRYPTO_SIGNATURE_HEADER} header is required")
        if len(header) > _MAX_SIGNATURE_HEADER_CHARS:
            raise InvalidWebhook("bad_signature", f"{CRYPTO_SIGNATURE_HEADER} is too long")
        timestamps: list[str] = []
        given: list[str] = []
        for item in header.split(","):
            key, _, value = item.partition("=")
            if key == "t":
                timestamps.append(value)
            elif key == "v1":
                given.append(value)
        if len(timestamps) != 1 or not given:
            raise InvalidWebhook("bad_signature", "expected one t= and at least one v1= entry")
        sent_at = unix_seconds(timestamps[0])
        expected = [crypto_sign(s, sent_at, body) for s in parse_secrets(secrets)]
        if not any(same_signature(e, g) for e in expected for g in given):
            raise InvalidWebhook("bad_signature", "no v1 signature matches the body")
        require_fresh(sent_at, now, tolerance)
        return None


# -- ewallet: its own (HMAC-SHA512, millisecond timestamps) ---------------------------------------

WALLET_SIGNATURE_HEADER = "X-Wallet-Signature"
WALLET_TIMESTAMP_HEADER = "X-Wallet-Timestamp"


def wallet_sign(secret: str, timestamp_ms: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n".encode() + body, hashlib.sha512).digest()
    return base64.b64encode(digest).decode()


class WalletScheme:
    name = "hmac-sha512-ms"

    def headers(self, secret: str, timestamp: int, body: bytes, message_id: str) -> dict[str, str]:
        timestamp_ms = timestamp * 1000
        return {
            "Content-Type": "application/json",
            WALLET_TIMESTAMP_HEADER: str(timestamp_ms),
            WALLET_SIGNATURE_HEADER: wallet_sign(secret, timestamp_ms, body),
        }

    def verify(
        self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float
    ) -> str | None:
        lowered = lowered_headers(headers)
        signature = lowered.get(WALLET_SIGNATURE_HEADER.lower())
        timestamp = lowered.get(WALLET_TIMESTAMP_HEADER.lower())
        if not signature or not timestamp:
            raise InvalidWebhook(
                "missing_signature", f"{WALLET_SIGNATURE_HEADER} and {WALLET_TIMESTAMP_HEADER} headers are required"
            )
        sent_at_ms = unix_seconds(timestamp, _MAX_TIMESTAMP_CHARS + 3)
        if not any(same_signature(wallet_sign(s, sent_at_ms, body), signature) for s in parse_secrets(secrets)):
            raise InvalidWebhook("bad_signature", "signature does not match the body")
        require_fresh(sent_at_ms / 1000, now, tolerance)
        return None


DESIGN_HMAC = DesignHmacScheme()
STANDARD_WEBHOOKS = StandardWebhooksScheme()
STRIPE_LIKE = StripeLikeScheme()
WALLET_HMAC = WalletScheme()
