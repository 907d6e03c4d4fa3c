"""Account ids: `<prefix>:<owner>:<CURRENCY>`; kind, owner, currency and floor all follow from the id."""

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


def is_valid_owner(owner: str) -> bool:
    return isinstance(owner, str) and bool(_OWNER_RE.match(owner))


def parse_account(account_id: str) -> ParsedAccount:
    if not isinstance(account_id, str):
        raise InvalidAccount(repr(account_id), "not a string")
    parts = account_id.split(":")
    if len(parts) != 3:
        raise InvalidAccount(account_id, "expected <kind>:<owner>:<currency>")
    prefix, owner, currency = parts
    if prefix not in _PREFIXES:
        raise InvalidAccount(account_id, f"unknown account kind {prefix!r}")
    if not is_valid_owner(owner):
        raise InvalidAccount(account_id, "owner must be 1-128 of letters, digits, '_', '-', '.'")
    if currency not in CURRENCY_EXPONENTS:
        raise InvalidAccount(account_id, f"unsupported currency {currency!r}")
    kind, floor = _PREFIXES[prefix]
    return ParsedAccount(kind, owner, currency, floor)
