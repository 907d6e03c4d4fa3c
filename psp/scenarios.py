"""The sandbox PSPs' scenarios (`metadata.sandbox_scenario`): their names, and which sandbox PSP takes which, for
payments, payouts and refunds.

Pure data (no FastAPI, no sandbox import): the sandbox service (psp/sandbox/app.py) plays these scenarios, and the
product API checks `meta.sandbox_scenario` against SCENARIOS / PAYOUT_SCENARIOS / REFUND_SCENARIOS without importing
the sandbox server. tests/psp/test_scenarios.py checks that these sets are exactly what the running sandbox accepts.
"""

from __future__ import annotations

# Each sandbox PSP's family: PSPs of one family (two card acquirers, two crypto processors) share a wire format,
# signature scheme, scenarios and error codes, but are separate PSPs (own state, control mode, references and
# webhook URL). `ewallet_b` and `paybybank_b` are providers of their own, each with its own format and signature.
FAMILIES: dict[str, str] = {
    "card": "card",
    "card_b": "card",
    "ewallet": "ewallet",
    "ewallet_b": "ewallet_b",
    "paybybank": "paybybank",
    "paybybank_b": "paybybank_b",
    "crypto": "crypto",
    "crypto_b": "crypto",
}
# What each family's PSPs take payments with and pay out to; the method decides the flow (3DS for cards, a bank
# redirect for bank transfers, on-chain confirmations for crypto, instant for e-wallets).
FAMILY_METHODS: dict[str, str] = {
    "card": "card", "ewallet": "ewallet", "ewallet_b": "ewallet", "paybybank": "bank_transfer",
    "paybybank_b": "bank_transfer", "crypto": "crypto",
}
METHOD_OF: dict[str, str] = {psp: FAMILY_METHODS[family] for psp, family in FAMILIES.items()}
PSPS: tuple[str, ...] = tuple(FAMILIES)

# Scenarios that answer the create with one of the PSP's own error codes (see each connector's ERROR_TABLE):
# soft_decline → 402 (step up), issuer_unavailable → 503 every time (fail over), rate_limited → 429 twice.
# Only families with strong customer authentication have soft_decline.
_FAMILY_ERROR_SCENARIO_CODES: dict[str, dict[str, str]] = {
    "card": {"soft_decline": "authentication_required", "issuer_unavailable": "issuer_unavailable",
             "rate_limited": "rate_limited"},
    "ewallet": {"soft_decline": "sca_required", "issuer_unavailable": "wallet_backend_unavailable",
                "rate_limited": "too_many_requests"},
    "ewallet_b": {"soft_decline": "strong_auth_needed", "issuer_unavailable": "wallet_network_down",
                  "rate_limited": "throttled"},
    "paybybank": {"issuer_unavailable": "bank_unavailable", "rate_limited": "rate_limit_exceeded"},
    "paybybank_b": {"issuer_unavailable": "aspsp_unavailable", "rate_limited": "quota_exceeded"},
    "crypto": {"issuer_unavailable": "node_unavailable", "rate_limited": "rate_limit"},
}
ERROR_SCENARIO_CODES: dict[str, dict[str, str]] = {
    psp: dict(_FAMILY_ERROR_SCENARIO_CODES[family]) for psp, family in FAMILIES.items()
}

# Taken for payments and payouts at every sandbox PSP.
COMMON_SCENARIOS = frozenset(
    {"approve", "decline", "no_webhook", "lost", "lost_uncancellable", "duplicate_webhook", "out_of_order",
     "wrong_amount", "wrong_currency", "flaky", "slow"}
)
CHALLENGE_SCENARIOS = frozenset({"challenge", "3ds_fail"})  # payments; only the card family has 3DS
AMOUNT_SCENARIOS = frozenset({"underpaid", "overpaid"})  # crypto payments only
PAYOUT_ONLY_SCENARIOS = frozenset({"fail"})  # accepted, then refused downstream
# Payments at every sandbox PSP: the payment behaves as `approve`; its capture line in the PSP's settlement report
# (psp/sandbox/settlement.py) does not: `settle_amount_differs` (gross 1.00 of the major unit less, or one minor
# unit less where that is not possible), `settle_missing` (no line), `settle_twice` (two lines, two line ids),
# `settle_fee_differs` (fee 0.10 of the major unit more, at least one minor unit), `settle_late` (in the next
# day's report).
SETTLEMENT_SCENARIOS = frozenset(
    {"settle_amount_differs", "settle_missing", "settle_twice", "settle_fee_differs", "settle_late"}
)

PAYMENT_SCENARIOS_BY_PSP: dict[str, frozenset[str]] = {
    psp: COMMON_SCENARIOS
    | CHALLENGE_SCENARIOS  # only the card family has 3DS: elsewhere they behave as approve
    | frozenset(ERROR_SCENARIO_CODES[psp])
    | (AMOUNT_SCENARIOS if METHOD_OF[psp] == "crypto" else frozenset())
    | SETTLEMENT_SCENARIOS
    for psp in PSPS
}
PAYOUT_SCENARIOS_BY_PSP: dict[str, frozenset[str]] = {
    psp: COMMON_SCENARIOS | PAYOUT_ONLY_SCENARIOS | (frozenset(ERROR_SCENARIO_CODES[psp]) - {"soft_decline"})
    for psp in PSPS
}
# Refunds: `approve`; `decline` is accepted (pending), then fails with the PSP's failure code; `lost` is accepted and
# never settles nor announces itself; `no_webhook` settles without a webhook (only a look-up says so).
REFUND_SCENARIOS_BY_PSP: dict[str, frozenset[str]] = {
    psp: frozenset({"approve", "decline", "lost", "no_webhook"}) for psp in PSPS
}
# Every scenario some sandbox PSP takes (what the API lets through; the PSP refuses the ones it does not know).
SCENARIOS: frozenset[str] = frozenset().union(*PAYMENT_SCENARIOS_BY_PSP.values())
PAYOUT_SCENARIOS: frozenset[str] = frozenset().union(*PAYOUT_SCENARIOS_BY_PSP.values())
REFUND_SCENARIOS: frozenset[str] = frozenset().union(*REFUND_SCENARIOS_BY_PSP.values())

# Scenarios whose records send no webhook at all (only a status look-up knows what happened).
SILENT_SCENARIOS = frozenset({"no_webhook", "lost", "lost_uncancellable"})
# Scenarios whose records never resolve by themselves: look-ups keep answering the status they were left in.
NEVER_SETTLING_SCENARIOS = frozenset({"lost", "lost_uncancellable"})
# Scenarios whose records refuse every cancel (409 not_cancellable), whatever their status.
UNCANCELLABLE_SCENARIOS = frozenset({"lost_uncancellable"})

# The card family's test cards (`metadata.sandbox_card` on a payment): name → the card's BIN (issuer) country. Each
# card has a fixed instrument fingerprint, so tests and drills can pay with one card from several players or at both
# card acquirers; without a name the player pays with their own card (psp/sandbox/cards.py). Other families ignore it.
SANDBOX_CARDS: dict[str, str] = {
    "visa_de": "DE", "mc_de": "DE", "visa_gb": "GB", "mc_fi": "FI", "visa_es": "ES", "visa_se": "SE",
    "visa_us": "US", "visa_br": "BR", "mc_ng": "NG", "visa_kp": "KP", "mc_ir": "IR",
}
