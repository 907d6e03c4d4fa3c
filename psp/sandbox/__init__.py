"""The sandbox PSP service (card with 3DS, e-wallet, pay-by-bank, crypto), run as its own process or inside tests."""

from psp.sandbox.app import SandboxConfig, config_from_settings, create_app

__all__ = ["SandboxConfig", "config_from_settings", "create_app"]
