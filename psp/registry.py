"""Which PSP providers exist, and how to build their connectors (activities) and webhook verifiers (API).

Adding a provider with its own wire format = one module implementing PspConnector (psp/http_connector.py
has the HTTP plumbing) plus a verifier and an error table, and one `Provider` entry in PROVIDERS.

Webhook secrets: one per PSP, read from the setting the routing file's `webhook_secret` names for it
(`PAYLOOP_WEBHOOK_SECRET_<PSP>` for a provider the file does not list), else the shared fallback
`PAYLOOP_SANDBOX_WEBHOOK_SECRET`. Each may list several secrets, comma-separated, during a rotation ("new,old"):
the sandbox signs with the first, the verifiers accept any. `webhook_secrets()` is the one place that resolves
them, for the API's verifiers, the sandbox's signers and the start-up checks alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType

import httpx

from payloop.psp_decision import PspDecision
from payloop.settings import Settings
from payloop.settlement import SettlementTerms
from psp import (
    crypto_connector,
    ewallet_b_connector,
    ewallet_connector,
    paybybank_b_connector,
    paybybank_connector,
    sandbox_connector,
    signatures,
)
from psp.base import InvalidWebhook, PspConnector, WebhookVerifier
from psp.http_connector import HttpPspConnector, SignedWebhookVerifier
from psp.routing import RoutingConfig, load_routing


@dataclass(frozen=True)
class Provider:
    name: str
    methods: frozenset[str]  # taken for payments
    payout_methods: frozenset[str]  # paid out to
    connector: Callable[[Settings, httpx.AsyncClient], PspConnector]
    # Takes the PSP's secret(s), "new,old" during a rotation (see webhook_secrets()).
    verifier: Callable[[Settings, str], WebhookVerifier]
    # The provider's error codes → one of PspDecision.table_decisions() (its connector class's ERROR_TABLE).
    error_table: Mapping[str, PspDecision] = field(default_factory=dict)
    # Its contract's settlement SLA and fee tolerance (its connector class's), for reconciliation.
    settlement_terms: SettlementTerms = field(default_factory=SettlementTerms)


def sandbox_provider(
    name: str,
    methods: frozenset[str],
    payout_methods: frozenset[str],
    connector_class: type[HttpPspConnector] = sandbox_connector.SandboxConnector,
    verifier_class: type[SignedWebhookVerifier] = sandbox_connector.SandboxWebhookVerifier,
) -> Provider:
    """A provider served by the sandbox PSP service under `{sandbox_psp_url}/{name}`, its settlement reports under
    `{sandbox_psp_url}/reports/{name}`."""

    def connector(settings: Settings, http: httpx.AsyncClient) -> PspConnector:
        return connector_class(
            name=name,
            methods=methods,
            base_url=f"{settings.sandbox_psp_url}/{name}",
            http=http,
            payout_methods=payout_methods,
            reports_url=f"{settings.sandbox_psp_url}/reports/{name}",
        )

    def verifier(settings: Settings, secret: str) -> WebhookVerifier:
        return verifier_class(name, secret, settings.webhook_tolerance_seconds)

    return Provider(name, methods, payout_methods, connector, verifier, connector_class.ERROR_TABLE,
                    connector_class.settlement_terms)


def _from_module(module: ModuleType, connector_class: type[HttpPspConnector],
                 verifier_class: type[SignedWebhookVerifier]) -> Provider:
    return sandbox_provider(module.NAME, module.METHODS, module.PAYOUT_METHODS, connector_class, verifier_class)


PROVIDERS: tuple[Provider, ...] = (
    _from_module(sandbox_connector, sandbox_connector.SandboxConnector, sandbox_connector.SandboxWebhookVerifier),
    # A second card acquirer (failover for card deposits and payouts): the card's wire format, signature and error
    # table, served by the sandbox under /card_b with its own state, references and webhook URL.
    sandbox_provider(
        "card_b", sandbox_connector.METHODS, sandbox_connector.PAYOUT_METHODS, sandbox_connector.SandboxConnector,
        sandbox_connector.SandboxWebhookVerifier,
    ),
    _from_module(ewallet_connector, ewallet_connector.EwalletConnector, ewallet_connector.EwalletWebhookVerifier),
    # The second e-wallet: a provider of its own (its own wire format, HTTP Signatures, error table and report).
    _from_module(
        ewallet_b_connector, ewallet_b_connector.EwalletBConnector, ewallet_b_connector.EwalletBWebhookVerifier
    ),
    _from_module(
        paybybank_connector, paybybank_connector.PayByBankConnector, paybybank_connector.PayByBankWebhookVerifier
    ),
    # The second pay-by-bank provider: Open Banking shapes, a detached JWS, its own error table and statement.
    _from_module(
        paybybank_b_connector, paybybank_b_connector.PayByBankBConnector,
        paybybank_b_connector.PayByBankBWebhookVerifier,
    ),
    _from_module(crypto_connector, crypto_connector.CryptoConnector, crypto_connector.CryptoWebhookVerifier),
    # A second crypto processor, as card_b is to card: the crypto format, signature and error table, served by the
    # sandbox under /crypto_b with its own state, references, secret and webhook URL.
    sandbox_provider(
        "crypto_b", crypto_connector.METHODS, crypto_connector.PAYOUT_METHODS, crypto_connector.CryptoConnector,
        crypto_connector.CryptoWebhookVerifier,
    ),
)


def build_connectors(settings: Settings, http: httpx.AsyncClient) -> dict[str, PspConnector]:
    """Connectors by PSP name. The caller owns `http` (and its timeout, settings.psp_http_timeout_seconds)."""
    return {p.name: p.connector(settings, http) for p in PROVIDERS}


def webhook_secret_names(routing: RoutingConfig) -> dict[str, str]:
    """Per provider, the name of the setting (or environment variable) holding its webhook secret: the routing
    file's `webhook_secret`, else PAYLOOP_WEBHOOK_SECRET_<PSP>."""
    named = {psp.name: psp.webhook_secret for psp in routing.psps}
    return {p.name: named.get(p.name) or signatures.own_secret_setting(p.name) for p in PROVIDERS}


def webhook_secrets(settings: Settings, routing: RoutingConfig | None = None) -> dict[str, str]:
    """Per provider, its webhook secret(s) ("new,old" during a rotation); `routing` defaults to the settings'
    routing file."""
    names = webhook_secret_names(routing or load_routing(settings))
    return {psp: signatures.secret_setting(settings, psp, name) for psp, name in names.items()}


def build_verifiers(settings: Settings, routing: RoutingConfig | None = None) -> dict[str, WebhookVerifier]:
    """Webhook verifiers by PSP name: `verifier(headers, raw_body, now) -> WebhookEvent`, raising InvalidWebhook.
    Each checks its own PSP's secret(s) only."""
    secrets = webhook_secrets(settings, routing)
    return {p.name: p.verifier(settings, secrets[p.name]) for p in PROVIDERS}


# Refusals that say the signature is not this PSP's (anything else means it was: stale, or signed but malformed).
_NOT_SIGNED_BY_IT = frozenset({"missing_signature", "bad_signature"})


def signed_by_another_psp(
    verifiers: Mapping[str, WebhookVerifier], psp: str, refusal: InvalidWebhook, headers: Mapping[str, str],
    raw_body: bytes, now: float,
) -> str | None:
    """The other PSP whose secret signed a webhook that `psp`'s verifier refused (`refusal`) as not signed by
    `psp`, if any: a delivery of that PSP posted (by mistake or to pass it off) to `psp`'s URL. Called only after
    `psp`'s own verifier failed, so accepted webhooks cost nothing more."""
    if refusal.code not in _NOT_SIGNED_BY_IT:
        return None  # signed by `psp` itself, but stale or malformed
    for other, verifier in verifiers.items():
        if other == psp:
            continue
        try:
            verifier(headers, raw_body, now)
        except InvalidWebhook as err:
            if err.code in _NOT_SIGNED_BY_IT:
                continue
        return other
    return None


def payment_methods() -> frozenset[str]:
    """Every payment method some provider takes."""
    return frozenset(method for p in PROVIDERS for method in p.methods)


def payout_methods() -> frozenset[str]:
    """Every method some provider pays out to."""
    return frozenset(method for p in PROVIDERS for method in p.payout_methods)


def error_tables() -> dict[str, dict[str, PspDecision]]:
    """Per PSP, a copy of its error codes and the decision for each: RETRY (same PSP), FAILOVER (next PSP),
    HARD_DECLINE, STEP_UP (3DS / SCA). Codes not listed: 402 → HARD_DECLINE, 5xx/408/429 → RETRY,
    404 → NOT_FOUND, other 4xx → REJECTED (never retried, never failed over)."""
    return {p.name: dict(p.error_table) for p in PROVIDERS}
