"""The card the sandbox card PSPs (`card`, `card_b`) say a payment was made with: its BIN country and fingerprint.

A payment names a test card by `metadata.sandbox_card` (psp.scenarios.SANDBOX_CARDS); its fingerprint is fixed,
`fp_` and a hash of the name, the same at both card acquirers (as a card scheme's network token would be). Without
a name the player pays with their own card: a fingerprint from the customer id, issued in the payment's country (DE
when the request names none). An unknown name is refused like any invalid field (422), before anything is created.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from psp.sandbox.formats import SandboxError
from psp.scenarios import SANDBOX_CARDS

CARD_METADATA_KEY = "sandbox_card"
OWN_CARD_COUNTRY = "DE"  # where a player's own card is issued when the payment names no country


@dataclass(frozen=True)
class Card:
    bin_country: str
    fingerprint: str


def card_of(metadata: Mapping[str, str], customer_id: str, country: str | None) -> Card:
    """The card a payment with this metadata, customer and country is made with; SandboxError for an unknown name."""
    name = metadata.get(CARD_METADATA_KEY)
    if name is None:
        return Card(country or OWN_CARD_COUNTRY, _fingerprint(f"customer:{customer_id}"))
    if name not in SANDBOX_CARDS:
        raise SandboxError(422, "unknown_test_card", f"no sandbox test card {name!r}")
    return Card(SANDBOX_CARDS[name], _fingerprint(name))


def _fingerprint(text: str) -> str:
    return "fp_" + hashlib.sha256(text.encode()).hexdigest()[:24]
