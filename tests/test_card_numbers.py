"""What counts as a card number in free text (api/card_numbers.py); over HTTP in tests/e2e/test_trust_boundaries.py."""

from __future__ import annotations

import random
import uuid

import pytest
from pydantic import BaseModel, ValidationError

from api.card_numbers import CODE, contains_card_number, luhn_valid
from api.schemas import PaymentInitRequest, ReviewDecisionRequest

# Test numbers the card schemes publish (Visa 16 and 13, Mastercard, Amex 15, Discover, a 19-digit Visa).
CARDS = ["4111111111111111", "4222222222222", "5555555555554444", "378282246310005", "6011111111111117",
         "4000000000000000006"]


def test_the_published_test_cards_are_luhn_valid_and_one_digit_off_is_not() -> None:
    for card in CARDS:
        assert luhn_valid(card), card
        assert not luhn_valid(card[:-1] + str((int(card[-1]) + 1) % 10)), card


@pytest.mark.parametrize("text", [
    *CARDS,
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "3782 822463 10005",  # Amex grouping 4-6-5
    "card: 4111 1111 1111 1111 exp 12/27",
    "4111 1111 1111 1111 12 27",  # a card followed by its expiry: a window of the run holds it
    "https://casino.example/back?email=jane.doe%40example.com&pan=4111111111111111&token=x",
    "https://casino.example/back?pan=4111%201111%201111%201111",
    "https://casino.example/back?pan=4111+1111+1111+1111",
    "https://casino.example/back?pan=4111%25201111%25201111%25201111",  # encoded twice
    "https://casino.example/back?pan=%34%31%31%31%31%31%31%31%31%31%31%31%31%31%31%31",
    "pan_4111111111111111",  # an underscore is not a letter
])
def test_card_numbers_are_found(text: str) -> None:
    assert contains_card_number(text)


@pytest.mark.parametrize("text", [
    "4111111111111112",  # Luhn-invalid
    "https://casino.example/back?order=4111111111111112",
    "411111111111",  # 12 digits
    "41111111111111111111",  # 20 digits in one run: a long number, not a card
    "ab4111111111111111cd",  # inside a token
    "DE12 4111 1111 1111 1111 00",  # IBAN-shaped: glued to its country code (the middle would be a card)
    # A UUID of digits only: its first 16 digits are Luhn-valid, but groups of 8 and 12 digits are not a card's.
    "12345678-1234-4004-1234-123456789012",
    "2024-01-15 12:30 note 42",
    "",
])
def test_other_numbers_pass(text: str) -> None:
    assert not contains_card_number(text)


def test_the_uuid_above_would_be_a_card_number_if_its_grouping_were_ignored() -> None:
    assert luhn_valid("1234567812344004")


def test_random_tokens_are_never_taken_for_card_numbers() -> None:
    """UUIDs (hex and dashed) and hex tokens in URLs: a check that refused one in thousands would fail real
    payments at random."""
    rng = random.Random(20250101)
    for _ in range(20_000):
        token = uuid.UUID(int=rng.getrandbits(128), version=4)
        for text in (token.hex, str(token), f"https://casino.example/back?session={token.hex}&id={token}"):
            assert not contains_card_number(text), text


def test_the_schema_refuses_without_echoing_the_value() -> None:
    body = {"amount": "50.00", "currency": "EUR", "method": "card", "player_id": "alice",
            "return_url": "https://casino.example/back?pan=4111111111111111", "meta": {"device": "ok"}}
    with pytest.raises(ValidationError) as raised:
        PaymentInitRequest.model_validate(body)
    [error] = raised.value.errors(include_input=False)
    assert error["type"] == CODE and error["loc"] == ("return_url",)
    assert "4111" not in error["msg"]
    PaymentInitRequest.model_validate(body | {"return_url": "https://casino.example/back?order=4111111111111112"})
    with pytest.raises(ValidationError):
        ReviewDecisionRequest.model_validate({"decision": "reject", "reviewer": "jane",
                                              "reason": "player sent 4111 1111 1111 1111 by mail"})
    assert isinstance(PaymentInitRequest.model_validate(body | {"return_url": "https://x.example/"}), BaseModel)
