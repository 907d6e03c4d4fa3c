"""Which PSP providers exist, and how to build their connectors (activities) and webhook verifiers (API).

Adding a provider with its own wire format = one module implementing PspConnector (psp/http_connector.py
has the HTTP plumbing) plus a verifier and an error table, and one `Provider` entry in PROVIDERS.

Webhook secrets: `settings.sandbox_<psp>_webhook_secret` when Settings has such an attribute and it is set,
else the shared `settings.sandbox_webhook_secret`. Either may list several secrets, comma-separated, during a
rotation ("new,old"): the sandbox signs with the first, the verifiers accept any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType

import httpx

from payloop.psp_decision import PspDecision
from payloop.settings import Settings
from psp import crypto_connector, ewallet_connector, paybybank_connector, sandbox_connector, signatures
from psp.base import PspConnector, WebhookVerifier
from psp.http_connector import HttpPspConnector, SignedWebhookVerifier


@dataclass(frozen=True)
class Provider:
    name: str
    methods: frozenset[str]  # taken for payments
    payout_methods: frozenset[str]  # paid out to
    connector: Callable[[Settings, httpx.AsyncClient], PspConnector]
    verifier: Callable[[Settings], WebhookVerifier]
    # The provider's error codes → one of PspDecision.table_decisions() (its connector class's ERROR_TABLE).
    error_table: Mapping[str, PspDecision] = field(default_factory=dict)


def sandbox_provider(
    name: str,
    methods: frozenset[str],
    payout_methods: frozenset[str],
    connector_class: type[HttpPspConnector] = sandbox_connector.SandboxConnector,
    verifier_class: type[SignedWebhookVerifier] = sandbox_connector.SandboxWebhookVerifier,
) -> Provider:
    """A provider served by the sandbox PSP service under `{sandbox_psp_url}/{name}`."""

    def connector(settings: Settings, http: httpx.AsyncClient) -> PspConnector:
        return connector_class(
            name=name,
            methods=methods,
            base_url=f"{settings.sandbox_psp_url}/{name}",
            http=http,
            payout_methods=payout_methods,
        )

    def verifier(settings: Settings) -> WebhookVerifier:
        return verifier_class(name, signatures.secret_setting(settings, name), settings.webhook_tolerance_seconds)

    return Provider(name, methods, payout_methods, connector, verifier, connector_class.ERROR_TABLE)


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
    _from_module(
        paybybank_connector, paybybank_connector.PayByBankConnector, paybybank_connector.PayByBankWebhookVerifier
    ),
    _from_module(crypto_connector, crypto_connector.CryptoConnector, crypto_connector.CryptoWebhookVerifier),
)


def build_connectors(settings: Settings, http: httpx.AsyncClient) -> dict[str, PspConnector]:
    """Connectors by PSP name. The caller owns `http` (and its timeout, settings.psp_http_timeout_seconds)."""
    return {p.name: p.connector(settings, http) for p in PROVIDERS}


def build_verifiers(settings: Settings) -> dict[str, WebhookVerifier]:
    """Webhook verifiers by PSP name: `verifier(headers, raw_body, now) -> WebhookEvent`, raising InvalidWebhook."""
    return {p.name: p.verifier(settings) for p in PROVIDERS}


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
