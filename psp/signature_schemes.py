"""The webhook signature schemes of `ewallet_b` and `paybybank_b` (the other four are in psp/signatures.py, whose
helpers and `SignatureScheme` protocol these share).

- ewallet_b, HTTP Signatures (draft-cavage-http-signatures, the form several wallets and acquirers sign with):
  `X-EWB-Event-Id`, `X-EWB-Timestamp: <unix s>`, `Digest: SHA-256=<base64 SHA-256(raw body)>` and
  `Signature: keyId="<key id>",algorithm="hmac-sha256",headers="x-ewb-event-id x-ewb-timestamp digest",
  signature="<base64 HMAC-SHA256(secret, signing string)>"`, the signing string being the covered headers as
  `name: value` lines joined by "\\n", in the order `headers` lists them (all three must be covered). The key id is
  the secret's fingerprint (`key_id`), so during a rotation the verifier knows which of its secrets signed.
- paybybank_b, a detached JWS with an unencoded payload (RFC 7515 appendix F + RFC 7797, as UK Open Banking's
  `x-jws-signature`): `X-JWS-Signature: <base64url protected header>..<base64url HMAC-SHA256>`, the protected header
  `{"alg": "HS256", "kid": <key id>, "iat": <unix s>, "b64": false, "crit": ["b64"]}` and the raw body as the
  payload. Made and checked with PyJWT; only HS256 is accepted (never "none" or another algorithm). Its HMAC key
  is SHA-256("jws-key:" + secret), 32 bytes whatever the secret's length (RFC 7518 §3.2's minimum for HS256).

Both check the signature before the timestamp's freshness and raise InvalidWebhook (missing_signature,
bad_signature, stale_timestamp) and nothing else, whatever the headers hold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

import jwt

from psp.base import InvalidWebhook
from psp.signatures import lowered_headers, parse_secrets, require_fresh, same_signature, unix_seconds

_MAX_HEADER_CHARS = 2048
_MAX_EVENT_ID_CHARS = 255


def key_id(secret: str) -> str:
    """A secret's public fingerprint: the first 16 hex digits of its SHA-256 (nothing of the secret itself)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def _secret_for(secrets: Sequence[str], kid: object) -> str:
    for secret in parse_secrets(secrets):
        if isinstance(kid, str) and same_signature(key_id(secret), kid):
            return secret
    raise InvalidWebhook("bad_signature", "signed with a key this PSP's secrets do not hold")


# -- ewallet_b: HTTP Signatures over a canonical header set ----------------------------------------

EWB_EVENT_ID_HEADER = "X-EWB-Event-Id"
EWB_TIMESTAMP_HEADER = "X-EWB-Timestamp"
DIGEST_HEADER = "Digest"
HTTP_SIGNATURE_HEADER = "Signature"
_COVERED = ("x-ewb-event-id", "x-ewb-timestamp", "digest")
_HTTP_SIGNATURE_ALGORITHM = "hmac-sha256"
_PARAM = re.compile(r'\s*([a-zA-Z]+)="([^"]*)"\s*')


def body_digest(body: bytes) -> str:
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def _signing_string(names: Sequence[str], values: Mapping[str, str]) -> bytes:
    return "\n".join(f"{name}: {values[name]}" for name in names).encode()


def _http_signature(secret: str, signing_string: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), signing_string, hashlib.sha256).digest()).decode()


def _signature_params(header: str) -> dict[str, str]:
    """`keyId="…",algorithm="…",headers="…",signature="…"`; bad_signature for anything else."""
    params: dict[str, str] = {}
    for item in header.split(","):
        match = _PARAM.fullmatch(item)
        if match is None or match.group(1) in params:
            raise InvalidWebhook("bad_signature", "the Signature header is not a list of key=\"value\" pairs")
        params[match.group(1)] = match.group(2)
    return params


class HttpSignatureScheme:
    name = "http-signature-hmac-sha256"

    def headers(self, secret: str, timestamp: int, body: bytes, message_id: str) -> dict[str, str]:
        values = {"x-ewb-event-id": message_id, "x-ewb-timestamp": str(timestamp), "digest": body_digest(body)}
        signature = _http_signature(secret, _signing_string(_COVERED, values))
        return {
            "Content-Type": "application/json",
            EWB_EVENT_ID_HEADER: message_id,
            EWB_TIMESTAMP_HEADER: str(timestamp),
            DIGEST_HEADER: values["digest"],
            HTTP_SIGNATURE_HEADER: f'keyId="{key_id(secret)}",algorithm="{_HTTP_SIGNATURE_ALGORITHM}",'
                                   f'headers="{" ".join(_COVERED)}",signature="{signature}"',
        }

    def verify(
        self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float
    ) -> str | None:
        lowered = lowered_headers(headers)
        header = lowered.get(HTTP_SIGNATURE_HEADER.lower())
        if not header or any(not lowered.get(name) for name in _COVERED):
            raise InvalidWebhook("missing_signature", "Signature, Digest, X-EWB-Event-Id and X-EWB-Timestamp "
                                                      "headers are required")
        if len(header) > _MAX_HEADER_CHARS or len(lowered["x-ewb-event-id"]) > _MAX_EVENT_ID_CHARS:
            raise InvalidWebhook("bad_signature", "Signature or X-EWB-Event-Id is too long")
        params = _signature_params(header)
        covered = params.get("headers", "").split(" ")
        if params.get("algorithm") != _HTTP_SIGNATURE_ALGORITHM or sorted(covered) != sorted(_COVERED):
            raise InvalidWebhook("bad_signature", f"expected {_HTTP_SIGNATURE_ALGORITHM} over {' '.join(_COVERED)}")
        secret = _secret_for(secrets, params.get("keyId"))
        expected = _http_signature(secret, _signing_string(covered, lowered))
        if not (same_signature(expected, params.get("signature", ""))
                and same_signature(body_digest(body), lowered["digest"])):
            raise InvalidWebhook("bad_signature", "the signature or the digest does not match the body")
        require_fresh(unix_seconds(lowered["x-ewb-timestamp"]), now, tolerance)
        return lowered["x-ewb-event-id"]


# -- paybybank_b: detached JWS, unencoded payload ---------------------------------------------------

JWS_SIGNATURE_HEADER = "X-JWS-Signature"
_JWS_ALGORITHM = "HS256"


def jws_key(secret: str) -> bytes:
    return hashlib.sha256(b"jws-key:" + secret.encode()).digest()


class DetachedJwsScheme:
    name = "detached-jws-hs256"

    def headers(self, secret: str, timestamp: int, body: bytes, message_id: str) -> dict[str, str]:
        token = jwt.api_jws.encode(body, jws_key(secret), algorithm=_JWS_ALGORITHM, is_payload_detached=True,
                                   headers={"kid": key_id(secret), "iat": timestamp})
        return {"Content-Type": "application/json", JWS_SIGNATURE_HEADER: token}

    def verify(
        self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float
    ) -> str | None:
        token = lowered_headers(headers).get(JWS_SIGNATURE_HEADER.lower())
        if not token:
            raise InvalidWebhook("missing_signature", f"the {JWS_SIGNATURE_HEADER} header is required")
        if len(token) > _MAX_HEADER_CHARS or not token.isascii():
            raise InvalidWebhook("bad_signature", f"{JWS_SIGNATURE_HEADER} is too long or not ASCII")
        if token.count(".") != 2 or token.split(".")[1]:
            raise InvalidWebhook("bad_signature", "the JWS must be detached: <header>..<signature>")
        try:
            header = jwt.get_unverified_header(token)
            # Unencoded and detached (RFC 7797), said and made critical: never a payload of its own verified in
            # place of the body.
            if header.get("b64") is not False or "b64" not in (header.get("crit") or ()):
                raise InvalidWebhook("bad_signature", "the JWS header must say b64: false, and crit b64")
            secret = _secret_for(secrets, header.get("kid"))
            verified = jwt.api_jws.decode_complete(token, jws_key(secret), algorithms=[_JWS_ALGORITHM],
                                                   detached_payload=body)
        except jwt.PyJWTError:
            raise InvalidWebhook("bad_signature", "the JWS does not verify over the body") from None
        issued_at = verified["header"].get("iat")
        if type(issued_at) is not int:
            raise InvalidWebhook("bad_signature", "the protected header needs iat, unix seconds")
        require_fresh(issued_at, now, tolerance)
        return None


HTTP_SIGNATURE = HttpSignatureScheme()
DETACHED_JWS = DetachedJwsScheme()
