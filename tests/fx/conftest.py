"""The sandbox PSP service (which serves the sandbox FX rates) and its HTTP client, as the PSP tests run them."""

from tests.psp.conftest import http, receiver, sandbox  # noqa: F401
