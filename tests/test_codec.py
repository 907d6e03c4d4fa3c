"""The payload codec (payloop/codec.py) with the real AES-GCM of `cryptography` and the SDK's real data converter."""

from __future__ import annotations

import base64
import os

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from payloop.codec import (
    ENCODING,
    KEY_ID_KEY,
    CodecDecodeError,
    CodecKeyError,
    EncryptionCodec,
    KeyRing,
    data_converter,
    uses_builtin_keys,
)
from payloop.settings import DEV_CODEC_KEY, DEV_CODEC_KEYS, Settings
from workflows.types import DepositInput


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


OLD, NEW = new_key(), new_key()
DEPOSIT = DepositInput(payment_id="pay_0123456789abcdef01234567", client_id="casino-a", player_id="p-7f3a9c2e11d0",
                       amount_minor=5000, currency="EUR", method="card",
                       return_url="https://casino.example/back?session=abc", country="DE")


async def plain_payload(value: object) -> Payload:
    return (await DataConverter.default.encode([value]))[0]


async def test_a_sealed_payload_names_its_key_hides_its_content_and_opens_again() -> None:
    codec = EncryptionCodec(KeyRing.parse(f"k2:{NEW},k1:{OLD}"))
    plain = await plain_payload(DEPOSIT)
    [sealed] = await codec.encode([plain])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_KEY] == b"k2"  # the first key encrypts
    assert set(sealed.metadata) == {"encoding", KEY_ID_KEY}  # the original type and encoding are inside
    for clear in (b"p-7f3a9c2e11d0", b"casino.example", b"json/plain", b"5000"):
        assert clear not in sealed.data
    assert await codec.decode([sealed]) == [plain]
    [again] = await codec.encode([plain])
    assert again.data != sealed.data  # a fresh nonce each time


async def test_rotation_old_payloads_open_with_the_old_key_new_ones_use_the_new_key() -> None:
    [under_old] = await EncryptionCodec(KeyRing.parse(f"k1:{OLD}")).encode([await plain_payload("x")])
    rotated = EncryptionCodec(KeyRing.parse(f"k2:{NEW},k1:{OLD}"))
    assert await rotated.decode([under_old]) == [await plain_payload("x")]
    [under_new] = await rotated.encode([await plain_payload("x")])
    assert under_new.metadata[KEY_ID_KEY] == b"k2"


async def test_a_key_id_the_ring_lacks_fails_and_names_the_key_id() -> None:
    [under_old] = await EncryptionCodec(KeyRing.parse(f"k1:{OLD}")).encode([await plain_payload("x")])
    with pytest.raises(CodecDecodeError, match="'k1'") as raised:
        await EncryptionCodec(KeyRing.parse(f"k2:{NEW}")).decode([under_old])
    assert raised.value.key_id == "k1" and raised.value.code == "unknown_codec_key"
    assert NEW not in str(raised.value) and OLD not in str(raised.value)


async def test_altered_or_relabelled_payloads_fail_instead_of_passing() -> None:
    ring = KeyRing.parse(f"k2:{NEW},k1:{OLD}")
    codec = EncryptionCodec(ring)
    [sealed] = await codec.encode([await plain_payload("x")])
    flipped = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID_KEY: b"k1"}, data=sealed.data)
    same_id_other_key = EncryptionCodec(KeyRing.parse(f"k2:{OLD}"))
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:5])
    for bad, reader in ((flipped, codec), (relabelled, codec), (sealed, same_id_other_key), (truncated, codec)):
        with pytest.raises(CodecDecodeError, match="failed authentication"):
            await reader.decode([bad])


async def test_payloads_without_the_marker_pass_through_decode_unchanged() -> None:
    """Histories recorded before the codec, and payloads of plain clients, still read."""
    codec = EncryptionCodec(KeyRing.parse(f"k1:{OLD}"))
    plain = [await plain_payload(DEPOSIT), await plain_payload(None), Payload(metadata={"encoding": b"binary/plain"},
                                                                              data=b"\x00\x01")]
    assert await codec.decode(plain) == plain


async def test_the_data_converter_round_trips_workflow_types() -> None:
    converter = data_converter(f"k1:{OLD}")
    payloads = await converter.encode([DEPOSIT])
    assert payloads[0].metadata["encoding"] == ENCODING
    assert await converter.decode(payloads, [DepositInput]) == [DEPOSIT]
    # A client without the codec cannot read it: the SDK does not know the encoding.
    with pytest.raises(KeyError, match="binary/encrypted"):
        await DataConverter.default.decode(payloads, [DepositInput])


async def test_failure_messages_and_stack_traces_are_encrypted_too() -> None:
    """An exception's text can hold values (a ledger error names the account and its balance)."""
    converter = data_converter(f"k1:{OLD}")
    try:
        raise ApplicationError("insufficient funds in player:p-7f3a9c2e11d0:EUR: 500 available", type="Funds")
    except ApplicationError as raised:
        error = raised
    failure = Failure()
    await converter.encode_failure(error, failure)
    assert failure.message == "Encoded failure" and failure.stack_trace == ""
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    assert b"p-7f3a9c2e11d0" not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.type == "Funds"
    assert decoded.message == "insufficient funds in player:p-7f3a9c2e11d0:EUR: 500 available"


@pytest.mark.parametrize(("spec", "complaint"), [
    ("", "empty"),
    (" , ", "empty"),
    (OLD, "expected id:base64key"),
    (f"bad id:{OLD}", "expected id:base64key"),
    (f"k1:{OLD},k1:{NEW}", "appears twice"),
    ("k1:not base64!", "not valid base64"),
    (f"k1:{base64.b64encode(os.urandom(16)).decode()}", "16 bytes; AES-256 needs 32"),
])
def test_a_bad_key_ring_is_refused_without_echoing_key_material(spec: str, complaint: str) -> None:
    with pytest.raises(CodecKeyError, match=complaint) as raised:
        KeyRing.parse(spec)
    for part in (OLD, NEW, "not base64"):
        assert part not in str(raised.value)


def test_url_safe_base64_keys_are_accepted() -> None:
    raw = os.urandom(32)
    ring = KeyRing.parse(f"k1:{base64.urlsafe_b64encode(raw).decode()}")
    assert ring.ids == ("k1",)


def test_builtin_or_missing_keys_are_told_apart_from_production_keys() -> None:
    assert Settings().codec_keys == DEV_CODEC_KEYS  # nothing set: the built-in ring
    assert uses_builtin_keys(DEV_CODEC_KEYS)
    assert uses_builtin_keys("")
    assert uses_builtin_keys(f"prod:{NEW},legacy:{DEV_CODEC_KEY}")  # the public key under any id
    assert not uses_builtin_keys(f"prod:{NEW},old:{OLD}")
    assert base64.b64decode(DEV_CODEC_KEY) == b"payloop-dev-codec-key-not-secret"
