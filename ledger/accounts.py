"""Account ids: `<prefix>:<owner>:<CURRENCY>`; kind, owner, currency and floor all follow from the id.

Balance convention: posted = credits - debits, so every currency's accounts sum to zero. Kinds:

- `player:<id>:<CUR>`: a wallet; the only bounded kind (available never below zero).
- `psp:<psp>:<CUR>`: what the PSP owes us (negative: a receivable it will settle). Deposits credit the player from
  it, fees, refunds and chargebacks bring it towards zero.
- `house:<name>:<CUR>`: the house's own books. The named ones the money flows use:
  `house:fees:<psp>:<CUR>` (the fees that PSP kept; the one id of four parts, owner `fees:<psp>`),
  `house:chargebacks:<CUR>`, `house:disputes:<CUR>` (money a PSP pulled back for a dispute still open),
  `house:player_receivables:<CUR>` (what players owe the house), `house:payouts:<CUR>`, `house:games:<CUR>`;
  reconciliation's `house:bank:<CUR>` (what the PSPs settled to our bank: negative, an asset, like a clearing),
  `house:recon_adjustments:<CUR>` and `house:recon_write_offs:<CUR>` (differences a person resolved).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ledger.errors import InvalidAccount
from payloop.money import CURRENCY_EXPONENTS

PLAYER = "player"
PSP_CLEARING = "psp_clearing"
HOUSE = "house"

# id prefix -> (kind, floor). Only player wallets are bounded: clearing and house accounts go negative by design.
_PREFIXES: dict[str, tuple[str, int | None]] = {
    "player": (PLAYER, 0),
    "psp": (PSP_CLEARING, None),
    "house": (HOUSE, None),
}
# No ':' in owners, so the id splits unambiguously.
_OWNER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# The one house sub-kind with a fourth part: one fee account per PSP (and currency).
FEES = "fees"


class ParsedAccount(NamedTuple):
    kind: str
    owner: str
    currency: str
    floor: int | None


def _make(prefix: str, owner: str, currency: str) -> str:
    account_id = f"{prefix}:{owner}:{currency}"
    parse_account(account_id)
    return account_id


def player_account(player_id: str, currency: str) -> str:
    return _make("player", player_id, currency)


def psp_clearing_account(psp: str, currency: str) -> str:
    return _make("psp", psp, currency)


def house_account(name: str, currency: str) -> str:
    return _make("house", name, currency)


def fee_account(psp: str, currency: str) -> str:
    """`house:fees:<psp>:<CUR>`: the fees `psp` kept from what it settles (a house expense, so it goes negative)."""
    return _make("house", f"{FEES}:{psp}", currency)


def chargebacks_account(currency: str) -> str:
    return house_account("chargebacks", currency)


def disputes_account(currency: str) -> str:
    return house_account("disputes", currency)


def player_receivables_account(currency: str) -> str:
    return house_account("player_receivables", currency)


def bank_account(currency: str) -> str:
    return house_account("bank", currency)


def recon_adjustments_account(currency: str) -> str:
    return house_account("recon_adjustments", currency)


def recon_write_offs_account(currency: str) -> str:
    return house_account("recon_write_offs", currency)


def payouts_account(currency: str) -> str:
    return house_account("payouts", currency)


def is_valid_owner(owner: str) -> bool:
    return isinstance(owner, str) and bool(_OWNER_RE.match(owner))


def parse_account(account_id: str) -> ParsedAccount:
    if not isinstance(account_id, str):
        raise InvalidAccount(repr(account_id), "not a string")
    parts = account_id.split(":")
    if len(parts) == 4 and parts[:2] == ["house", FEES]:
        prefix, owner, currency = "house", f"{FEES}:{parts[2]}", parts[3]
        owner_ok = is_valid_owner(parts[2]) and len(owner) <= 128  # the owner column holds 128 characters
    elif len(parts) == 3:
        prefix, owner, currency = parts
        owner_ok = is_valid_owner(owner)
    else:
        raise InvalidAccount(account_id, "expected <kind>:<owner>:<currency> (or house:fees:<psp>:<currency>)")
    if prefix not in _PREFIXES:
        raise InvalidAccount(account_id, f"unknown account kind {prefix!r}")
    if not owner_ok:
        raise InvalidAccount(account_id, "owner must be 1-128 of letters, digits, '_', '-', '.'")
    if currency not in CURRENCY_EXPONENTS:
        raise InvalidAccount(account_id, f"unsupported currency {currency!r}")
    kind, floor = _PREFIXES[prefix]
    return ParsedAccount(kind, owner, currency, floor)
