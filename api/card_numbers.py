"""Card numbers are refused wherever a client may type free text.

The product never handles card data (the PSP hosts card entry), so a card number in a request is a mistake we must
not store: it would land in the database, the audit log, Temporal histories and logs, and bring them into PCI scope.
`NoCardNumber` marks a free-text field of a request body; a value holding one is answered 422
`card_number_not_allowed`, naming the field and never echoing the value, before anything is stored or started.

What counts as a card number: a Luhn-valid run of 13-19 digits, the digits possibly in groups separated by single
spaces or dashes ("4111 1111 1111 1111", "3782-822463-10005"), also once or twice percent-encoded or with "+" for
spaces (URLs: the value is decoded before it is checked, and checked as sent too). Not counted, so that random
tokens do not trip it (a random run of 13-19 digits is Luhn-valid one time in ten):
- digits glued to letters on either side ("ab4111111111111111cd", "DE89 3704 0044 0532 0130 00": part of a hex
  token, an id or an IBAN, not a number of its own);
- a single unbroken run of more than 19 digits (a long number, not a card);
- groups of more than 6 digits joined by separators (a card is printed 4-4-4-4, 4-6-5, 4-4-4-4-3…; a UUID's
  8-4-4 digits are not a card).

Which fields carry it: see README (*Card numbers are refused*). Identifiers the platform or a game provider assigns
(player ids, transaction / round / game ids) and Idempotency-Keys are not free text and are not checked: numeric
ids and random keys would be refused about one time in ten (numeric 16-digit ids) for no reason, locking real
players or payments out.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

CODE = "card_number_not_allowed"
MESSAGE = "looks like a card number (a Luhn-valid run of 13-19 digits); card data must never be sent to this API"
MIN_DIGITS, MAX_DIGITS = 13, 19
MAX_GROUP_DIGITS = 6  # the longest group of a printed card number (4-6-5)
_PERCENT_DECODINGS = 2  # "%2520" (an encoded "%20") is still a space to whoever decodes the URL twice

_RUN = re.compile(r"[0-9]+(?:[ \-][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _has_card_number(text: str) -> bool:
    for run in _RUN.finditer(text):
        # A run glued to a letter is part of a token (a hex id, "DE89 3704 …" an IBAN), not a number of its own.
        before, after = text[run.start() - 1:run.start()], text[run.end():run.end() + 1]
        if before.isalnum() or after.isalnum():
            continue
        groups = _GROUP.findall(run.group())
        # Any consecutive groups may be the card: "4111 1111 1111 1111 12 27" (with its expiry) holds one.
        for i in range(len(groups)):
            digits = ""
            for j in range(i, len(groups)):
                if j > i and (len(groups[i]) > MAX_GROUP_DIGITS or len(groups[j]) > MAX_GROUP_DIGITS):
                    break
                digits += groups[j]
                if len(digits) > MAX_DIGITS:
                    break
                if len(digits) >= MIN_DIGITS and luhn_valid(digits):
                    return True
    return False


def contains_card_number(value: str) -> bool:
    """True when `value`, as sent or percent-decoded, holds what looks like a card number."""
    seen = value
    if _has_card_number(seen):
        return True
    for _ in range(_PERCENT_DECODINGS):
        decoded = unquote_plus(seen)
        if decoded == seen:
            break
        if _has_card_number(decoded):
            return True
        seen = decoded
    return False


def refuse_card_number(value: str | None) -> str | None:
    if value is not None and contains_card_number(value):
        # The value is not in the message: problem answers and logs must not repeat it.
        raise PydanticCustomError(CODE, MESSAGE)
    return value


# Annotate a free-text `str` field with it: `Annotated[str, Field(max_length=500), NoCardNumber]`.
NoCardNumber = AfterValidator(refuse_card_number)
