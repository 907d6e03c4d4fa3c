"""Payload encryption: every payload the API, the workers and the CLI hand to Temporal (workflow and activity
inputs and results, signals, updates, queries, memos, and failures' messages) is sealed with AES-256-GCM before it
leaves the process, so Temporal's database, its backups and anyone reading histories without a key see ciphertext
only. Search attributes are not payloads: Temporal indexes them in clear text, so they carry nothing personal
(workflows/search_attributes.py).

Keys form a ring, `PAYLOOP_CODEC_KEYS="id:base64key,id2:base64key2"`: the first key encrypts, every key decrypts,
and each sealed payload names its key in its metadata. Rotation: put the new key first and keep the old ones for as
long as histories sealed under them must be read (replays, the UI, finished payments' results).

A payload without the encrypted marker passes through decode unchanged — histories recorded before the codec
(tests/histories) still replay. A payload sealed under a key id the ring does not hold, or that fails
authentication, fails loudly, naming the key id; it is never handed on as if it were readable.

Foundation: imports nothing of the project.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from payloop.settings import DEV_CODEC_KEY

ENCODING = b"binary/encrypted"
ENCODING_KEY = "encoding"
KEY_ID_KEY = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per payload (2^32 payloads per key keep collisions negligible)
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

class CodecKeyError(ValueError):
    """PAYLOOP_CODEC_KEYS cannot be used. The message never contains key material."""


class CodecDecodeError(ValueError):
    """A sealed payload that cannot be opened: unknown key id, or it fails authentication."""

    def __init__(self, message: str, *, key_id: str, code: str) -> None:
        super().__init__(message)
        self.key_id = key_id
        self.code = code


@dataclass(frozen=True)
class KeyRing:
    """The ring's keys by id, in order: the first encrypts."""

    ids: tuple[str, ...]
    _ciphers: dict[str, AESGCM]

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        if not entries:
            raise CodecKeyError("PAYLOOP_CODEC_KEYS is empty: give at least one key as id:base64key "
                                "(32 random bytes, base64), e.g. 2025-01:$(openssl rand -base64 32)")
        ciphers: dict[str, AESGCM] = {}
        for position, entry in enumerate(entries, start=1):
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID_RE.fullmatch(key_id):
                raise CodecKeyError(f"PAYLOOP_CODEC_KEYS entry {position}: expected id:base64key, the id 1-64 of "
                                    "A-Z a-z 0-9 _ . -")
            if key_id in ciphers:
                raise CodecKeyError(f"PAYLOOP_CODEC_KEYS: key id {key_id!r} appears twice")
            ciphers[key_id] = AESGCM(_decode_key(key_id, encoded.strip()))
        return cls(tuple(ciphers), ciphers)

    @property
    def current(self) -> str:
        return self.ids[0]

    def cipher(self, key_id: str) -> AESGCM | None:
        return self._ciphers.get(key_id)


def _decode_key(key_id: str, encoded: str) -> bytes:
    try:
        # Standard or URL-safe alphabet: `openssl rand -base64 32` and Python's urlsafe_b64encode both work.
        key = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise CodecKeyError(f"PAYLOOP_CODEC_KEYS: key {key_id!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise CodecKeyError(f"PAYLOOP_CODEC_KEYS: key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return key


def uses_builtin_keys(spec: str) -> bool:
    """True when the ring is missing (empty) or holds the built-in dev key under any id: what a production start
    must refuse. (A ring that cannot be parsed is refused anyway, by KeyRing.parse, on every start.)"""
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if not entries:
        return True
    return any(entry.partition(":")[2].strip() == DEV_CODEC_KEY for entry in entries)


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (its metadata too: the encoding and the type it had). The key id
    is bound to the ciphertext as associated data, so a payload relabelled with another key id fails to open."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.ring.current
        cipher = self.ring.cipher(key_id)
        assert cipher is not None
        nonce = os.urandom(NONCE_BYTES)
        sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(metadata={ENCODING_KEY: ENCODING, KEY_ID_KEY: key_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get(ENCODING_KEY) != ENCODING:
            return payload  # not ours: written before the codec (or by a plain client); left as it is
        key_id = payload.metadata.get(KEY_ID_KEY, b"").decode(errors="replace")
        cipher = self.ring.cipher(key_id)
        if cipher is None:
            raise CodecDecodeError(
                f"payload encrypted under codec key id {key_id!r}, which PAYLOOP_CODEC_KEYS does not hold "
                f"(it holds {', '.join(self.ring.ids)}); add that key to the ring to read it",
                key_id=key_id, code="unknown_codec_key")
        try:
            opened = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
            raise CodecDecodeError(
                f"payload under codec key id {key_id!r} failed authentication: altered, or sealed with another key "
                "of the same id", key_id=key_id, code="codec_authentication_failed") from None
        return Payload.FromString(opened)


def data_converter(keys: str) -> DataConverter:
    """The data converter every client and worker of ours uses: the default JSON conversion, then encryption.

    Failures' messages and stack traces are moved into an encoded (so encrypted) attribute too: they are not
    payloads, yet an exception's text can hold values (a ledger error names the account and its balance, a database
    error its parameters). The history shows "Encoded failure"; the UI and our clients decode it."""
    return DataConverter(payload_codec=EncryptionCodec(KeyRing.parse(keys)),
                         failure_converter_class=DefaultFailureConverterWithEncodedAttributes)
