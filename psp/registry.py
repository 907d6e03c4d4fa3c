"""Which PSP providers exist, and how to build their connectors (activities) and webhook verifiers (API).

Adding a provider with its own wire format = one module implementing PspConnector plus a verifier,
and one `Provider` entry in PROVIDERS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from payloop.settings import Settings
from psp.base import PspConnector, WebhookVerifier
from psp.sandbox_connector import SandboxConnector, SandboxWebhookVerifier


@dataclass(frozen=True)
class Provider:
    name: str
    methods: frozenset[str]  # taken for payments
    payout_methods: frozenset[str]  # paid out to
    connector: Callable[[Settings, httpx.AsyncClient], PspConnector]
    verifier: Callable[[Settings], WebhookVerifier]


def sandbox_provider(name: str, methods: frozenset[str], payout_methods: frozenset[str]) -> Provider:
    """A provider served by the sandbox PSP service under `{sandbox_psp_url}/{name}`."""

    def connector(settings: Settings, http: httpx.AsyncClient) -> PspConnector:
        return SandboxConnector(
            name=name,
            methods=methods,
            base_url=f"{settings.sandbox_psp_url}/{name}",
            http=http,
            payout_methods=payout_methods,
        )

    def verifier(settings: Settings) -> WebhookVerifier:
        return SandboxWebhookVerifier(name, settings.sandbox_webhook_secret, settings.webhook_tolerance_seconds)

    return Provider(name, methods, payout_methods, connector, verifier)


PROVIDERS: tuple[Provider, ...] = (
    sandbox_provider("card", frozenset({"card"}), payout_methods=frozenset({"card"})),
    sandbox_provider("ewallet", frozenset({"ewallet"}), payout_methods=frozenset({"ewallet"})),
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
