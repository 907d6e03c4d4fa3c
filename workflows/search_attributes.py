"""Custom search attributes: what the Temporal UI filters payments by. Registered by the dev server launcher."""

from temporalio.common import SearchAttributeKey

PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
PAYMENT_PSP = SearchAttributeKey.for_keyword("PaymentPsp")
PLAYER_ID = SearchAttributeKey.for_keyword("PlayerId")
PAYMENT_METHOD = SearchAttributeKey.for_keyword("PaymentMethod")
PAYMENT_AMOUNT_MINOR = SearchAttributeKey.for_int("PaymentAmountMinor")
PAYMENT_CURRENCY = SearchAttributeKey.for_keyword("PaymentCurrency")

ALL = (PAYMENT_STATUS, PAYMENT_PSP, PLAYER_ID, PAYMENT_METHOD, PAYMENT_AMOUNT_MINOR, PAYMENT_CURRENCY)
