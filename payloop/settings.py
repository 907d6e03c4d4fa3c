"""Runtime settings, read from `PAYLOOP_*` environment variables (see README for the table)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".payloop")

# The built-in codec key ring of the embedded stack, the demo and the tests (payloop/codec.py). Its key is no secret
# (it reads "payloop-dev-codec-key-not-secret"): what it seals is as good as clear text, so production must not run
# on it (payloop.codec.uses_builtin_keys). Here, not in codec.py, so reading settings loads no crypto.
DEV_CODEC_KEY = "cGF5bG9vcC1kZXYtY29kZWMta2V5LW5vdC1zZWNyZXQ="
DEV_CODEC_KEYS = f"dev:{DEV_CODEC_KEY}"
# The codec server's built-in bearer token (`payloop codec-server`), for the embedded stack only.
DEV_CODEC_SERVER_TOKEN = "dev-codec-token-change-me"
# The built-in key of the checkout URLs' signatures (dev stacks and tests only).
DEV_CHECKOUT_SIGNING_KEY = "dev-checkout-key-change-me"
MONITOR_INTERVAL_MIN_SECONDS = 10


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYLOOP_", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    # Empty means: a SQLite file inside data_dir.
    database_url: str = ""

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"

    # -- Temporal TLS / mTLS and API key (payloop/temporal.py connection_options) ----------------------------------
    # PEM files; empty = unset. The CA checks the server's certificate (unset: the system's roots); a client
    # certificate with its key makes it mTLS. Any of them (or the server name) turns TLS on.
    temporal_tls_cert: str = ""
    temporal_tls_key: str = ""
    temporal_tls_ca: str = ""
    # The name the server's certificate is checked against (and the TLS SNI) when the address' host is not it.
    temporal_tls_server_name: str = ""
    # Sent as `Authorization: Bearer <key>` on every call (e.g. Temporal Cloud); alone, it turns TLS on too.
    temporal_api_key: str = ""
    temporal_ui_url: str = "http://localhost:8233"
    task_queue: str = "payloop"

    # -- payload encryption (payloop/codec.py) and the codec server ---------------------------------------------
    # "id:base64key,id2:base64key2", each key 32 random bytes; the first encrypts, all decrypt (rotate by putting
    # the new key first). The default is the built-in dev ring: its key is public, so production must set its own
    # (payloop.codec.uses_builtin_keys tells).
    codec_keys: str = DEV_CODEC_KEYS
    # The codec server (`payloop codec-server`), through which the Temporal UI and CLI read encrypted payloads.
    codec_server_host: str = "127.0.0.1"
    codec_server_port: int = 8081
    # Where browsers reach it (the UI calls it from the engineer's browser); empty = http://localhost:<port>.
    codec_server_public_url: str = ""
    # Bearer token(s) of the codec server, "new,old" while rotating. The default is the built-in dev token.
    codec_server_token: str = DEV_CODEC_SERVER_TOKEN

    # Every process's log lines (payloop/logs.py): one JSON object per line, or plain text for a terminal.
    log_format: Literal["json", "text"] = "json"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # "key:client_id:scope,scope;key2:client2:scope" — a bearer key, the client it belongs to, its scopes.
    api_keys: str = "dev-key-change-me:dev:payments,wallet,ops"
    # Rate limits, in the `limits` notation ("50/second", "1000/minute"; several separated by ";"; "" = none).
    # Payments: per API client, on every request that carries its valid key (README: Rate limits and timeouts).
    # Webhooks: per PSP endpoint and source address (an IPv6 source by its /64). The rejection log: per PSP, how
    # many unverified webhooks are written to the log and the delivery table; the rest are only counted.
    rate_limit_payments: str = "300/second"
    rate_limit_webhooks: str = "200/second"
    rate_limit_webhook_rejection_log: str = "10/minute"
    # Sign-in attempts at the ops console per source address: the one unauthenticated form that tests API keys.
    rate_limit_console_login: str = "10/minute;50/hour"
    # Per checkout session: its pages, forms and live status polls (one a second while a payment is open).
    rate_limit_checkout: str = "120/minute;1000/hour"
    # Empty: every API process counts on its own (in memory). Set (redis://host:6379/0): all processes share
    # the counts, under keys starting with the prefix (so environments can share one Redis).
    redis_url: str = ""
    redis_key_prefix: str = "payloop"
    # An unverified webhook naming a payment makes it ask its PSP at most once per interval, across processes.
    status_recheck_interval_seconds: int = Field(default=30, ge=1)
    # A client must send its request head / body within these (slow clients cannot hold connections forever).
    api_header_timeout_seconds: float = Field(default=10.0, gt=0)
    api_body_timeout_seconds: float = Field(default=20.0, gt=0)

    # -- the ops console (/ops, api/console/) --------------------------------------------------------------------
    # The session cookie is `Secure` (sent over HTTPS only). Turn off only for a console served over plain http
    # (a dev stack on localhost, the tests); the API refuses nothing for it, so production keeps the default.
    console_cookie_secure: bool = True
    # A session ends after this long without a request, and this long after sign-in whatever happens.
    console_session_idle_seconds: int = Field(default=8 * 3600, ge=60)
    console_session_absolute_seconds: int = Field(default=12 * 3600, ge=60)

    # -- the player's checkout (/checkout, api/checkout/) ---------------------------------------------------------
    # Where players' browsers reach the API (the checkout URLs handed out start with it); empty = api_url.
    checkout_public_url: str = ""
    # Signs checkout URLs (HMAC-SHA256): "new,old" while rotating, the first signs. The default is built in and
    # refused outside dev mode.
    checkout_signing_keys: str = DEV_CHECKOUT_SIGNING_KEY
    # A checkout URL opens its forms for this long; at most 30 minutes, so a URL that leaks (a browser history, a
    # proxy's log) soon opens nothing.
    checkout_session_minutes: int = Field(default=30, ge=1, le=30)
    # The status pages of the payments a session started stay readable this long after the session expired (a
    # player back from a slow 3-D Secure or bank page still sees the outcome).
    checkout_status_grace_minutes: int = Field(default=120, ge=0, le=24 * 60)
    # Offers the sandbox PSPs' test scenarios (challenge, decline …) on the checkout's forms: dev stacks and tests.
    checkout_sandbox_scenarios: bool = False

    # -- dev mode ---------------------------------------------------------------------------------------------
    # Allows the built-in API key and webhook secret and the default SQLite ledger. Only the embedded stack
    # (`payloop run`, `payloop demo`) sets it, for the processes it starts; without it `payloop api` / `payloop
    # worker` refuse to start on them (entrypoints/startup.py).
    dev_mode: bool = False

    # The worker's Prometheus endpoint (the Temporal runtime's exporter: the SDK's worker metrics and the payments'
    # own, workers/metrics.py); port 0 turns it off.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9464

    sandbox_psp_host: str = "127.0.0.1"
    sandbox_psp_port: int = 8100
    # Where workers reach the sandbox PSP, and where a player's browser does (3DS pages); empty = host:port.
    sandbox_psp_base_url: str = ""
    sandbox_psp_public_url: str = ""
    # The fallback webhook secret of every PSP without its own below (built in: refused outside dev mode).
    sandbox_webhook_secret: str = "whsec_sandbox_dev"
    # Where the sandbox PSP delivers webhooks; `{psp}` is replaced by the PSP name.
    sandbox_webhook_url: str = "http://127.0.0.1:8000/v1/webhooks/{psp}"

    # -- webhook secrets, one per PSP -------------------------------------------------------------------------
    # Each PSP signs with its own secret, so an event one PSP signed cannot pass for another PSP's. The routing
    # file's `webhook_secret` names the setting each PSP's verifier reads (these, by default). "new,old" during a
    # rotation: any verifies, the sandbox signs with the first. Empty: sandbox_webhook_secret applies.
    webhook_secret_card: str = ""
    webhook_secret_card_b: str = ""
    webhook_secret_ewallet: str = ""
    webhook_secret_paybybank: str = ""
    webhook_secret_crypto: str = ""
    # The second PSP of the e-wallet, pay-by-bank and crypto methods (failover peers).
    webhook_secret_ewallet_b: str = ""
    webhook_secret_paybybank_b: str = ""
    webhook_secret_crypto_b: str = ""

    webhook_tolerance_seconds: int = Field(default=300, ge=1)
    # The webhook delivery log (`webhook_deliveries`) keeps this many days; the API prunes older rows.
    webhook_delivery_retention_days: int = Field(default=30, ge=1)
    deposit_webhook_timeout_seconds: float = Field(default=120.0, gt=0)
    deposit_status_poll_attempts: int = Field(default=3, ge=1)
    deposit_status_poll_interval_seconds: float = Field(default=5.0, gt=0)
    # A deposit in review still undecided after this raises an alert (deposit.review_overdue); it keeps waiting:
    # no timer ever decides a review.
    deposit_review_alert_seconds: float = Field(default=24 * 3600.0, gt=0)
    # Refunds (a client's, and those a review decision makes): how long to wait for the PSP's webhook, then how
    # many status look-ups, how far apart, before the refund goes to review with its money still held.
    refund_webhook_timeout_seconds: float = Field(default=600.0, gt=0)
    refund_status_poll_attempts: int = Field(default=5, ge=1)
    refund_status_poll_interval_seconds: float = Field(default=60.0, gt=0)
    payout_webhook_timeout_seconds: float = Field(default=300.0, gt=0)
    # The daily reconciliation of every PSP starts at this UTC time ("HH:MM"), after the PSPs publish yesterday's
    # settlement reports.
    recon_daily_at_utc: str = Field(default="02:30", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    payout_status_poll_attempts: int = Field(default=3, ge=1)
    payout_status_poll_interval_seconds: float = Field(default=30.0, gt=0)
    # While every payout PSP is down, payouts wait (with backoff) this long for one to recover, then fail.
    payout_psp_down_deadline_seconds: float = Field(default=6 * 3600.0, gt=0)
    payout_psp_down_first_retry_seconds: float = Field(default=30.0, gt=0)  # then doubling, at most 15 min
    kyc_wait_timeout_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)  # a payout waiting for KYC
    # A deposit waiting for KYC (its market's gate, or the risk rules' step-up) expires after this.
    deposit_kyc_wait_timeout_seconds: float = Field(default=3600.0, gt=0)
    review_wait_timeout_seconds: float = Field(default=3 * 24 * 3600.0, gt=0)
    # The daily AML re-check of every player with recent payments starts at this UTC time ("HH:MM").
    aml_daily_at_utc: str = Field(default="03:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    # Euro value of one unit of each other currency (AML and KYC thresholds, cross-currency deposit limits, the
    # risk rules' euro amounts): "USD=0.92,GBP=1.17".
    fx_rates_to_eur: str = "USD=0.92,GBP=1.17,CHF=1.05,SEK=0.088,NOK=0.086,DKK=0.134,PLN=0.23,CAD=0.68"
    # -- currency conversion (fx/) ---------------------------------------------------------------------------
    # The rate source a deposit or payout in another currency than the player's wallet is quoted by (fx/sources.py
    # names them), and where it answers (empty: the sandbox PSP service, which serves the sandbox FX rates).
    fx_rate_source: str = "sandbox"
    fx_rate_source_url: str = ""
    # The house's spread on a conversion, in basis points of the mid rate (50 = 0.5 %), in the house's favour.
    fx_spread_bps: int = Field(default=50, ge=0, le=1000)
    # Where payouts go when the player's deposit PSP cannot pay out (closed loop impossible).
    payout_fallback_psp: str = "ewallet"
    # The PSP routing file (YAML); None = the shipped psp/routing.yaml.
    routing_file: Path | None = None
    # -- outbound events (events/) ------------------------------------------------------------------------------
    # The worker's dispatcher sends due deliveries every interval (at once again while a batch was full); off: the
    # events are still written (GET /v1/events lists them), nothing is sent from this worker.
    events_dispatch_enabled: bool = True
    events_dispatch_interval_seconds: float = Field(default=1.0, gt=0)
    events_dispatch_batch_size: int = Field(default=50, ge=1, le=500)
    # One POST's whole budget; no redirect is followed (the endpoint's own URL is what was checked).
    events_delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # The waits after each failed attempt, comma-separated seconds (each stretched by up to 25 % of jitter); when
    # they run out the delivery is `failed` (ops can replay it). The default retries for about 29 hours; a worker
    # outside dev mode refuses less than 24 hours in all.
    events_retry_schedule_seconds: str = "5,30,120,600,1800,3600,10800,21600,21600,21600,21600"
    # `payloop run`'s demo receiver (entrypoints/event_receiver.py) listens here, on loopback.
    events_demo_receiver_port: int = 8090
    # -- risk (risk/) ------------------------------------------------------------------------------------------
    # The risk rules file (YAML, read once at start-up); None = the shipped risk/rules.yaml.
    risk_file: Path | None = None
    # -- incidents (incidents/) --------------------------------------------------------------------------------
    # The monitor's thresholds file (YAML, read once at the worker's start); None = the shipped
    # incidents/thresholds.yaml.
    incidents_file: Path | None = None
    # How often the `monitor` Schedule runs a detection pass (a cause is seen within this, plus the pass); 0: no
    # monitor (`payloop schedules` deletes its schedule).
    monitor_interval_seconds: int = Field(default=60, ge=0, le=3600)
    # Proxies (load balancers, the platform's cashier) in front of the API, as comma-separated CIDRs
    # ("10.0.0.0/8,2001:db8::/32"): only a request from one of them has its X-Forwarded-For believed (by uvicorn,
    # for the rate limits' source and the risk rules' player address alike); anyone else could write any address in
    # it. The default is uvicorn's own: loopback.
    trusted_proxies: str = "127.0.0.1/32,::1/128"
    # A `cidr,country` table of IP ranges (a GeoIP export); None = the shipped sandbox table risk/ip_countries.csv.
    ip_country_file: Path | None = None
    # Below the workflows' 15 s start-to-close for a PSP call, so a slow PSP ends an attempt cleanly.
    psp_http_timeout_seconds: float = Field(default=10.0, gt=0, lt=15)
    init_update_timeout_seconds: float = Field(default=30.0, gt=0)
    idempotency_ttl_hours: int = Field(default=24, ge=24)

    @field_validator("rate_limit_payments", "rate_limit_webhooks", "rate_limit_webhook_rejection_log",
                     "rate_limit_console_login", "rate_limit_checkout")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        # Refused at start-up, not at the first request it would have limited.
        if value.strip():
            parse_many(value)  # ValueError: "couldn't parse rate limit string …"
        return value.strip()

    @field_validator("events_retry_schedule_seconds")
    @classmethod
    def _retry_schedule(cls, value: str) -> str:
        # Refused at start-up, not at the first failed delivery.
        parse_retry_schedule(value)
        return value

    @field_validator("monitor_interval_seconds")
    @classmethod
    def _monitor_interval(cls, value: int) -> int:
        if 0 < value < MONITOR_INTERVAL_MIN_SECONDS:  # a pass takes a few seconds; faster would only overlap (skip)
            raise ValueError(f"0 (off) or at least {MONITOR_INTERVAL_MIN_SECONDS} seconds")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidr_list(cls, value: str) -> str:
        # Refused at start-up: a typo here would silently trust no proxy (or the wrong one).
        for cidr in _split_cidrs(value):
            ipaddress.ip_network(cidr)  # ValueError; strict: "10.0.0.1/8" (host bits set) is refused too
        return value.strip()

    @property
    def trusted_proxy_cidrs(self) -> list[str]:
        return _split_cidrs(self.trusted_proxies)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'payloop.db').resolve()}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def checkout_url(self) -> str:
        return self.checkout_public_url.rstrip("/") or self.api_url

    @property
    def codec_server_url(self) -> str:
        # localhost, not 127.0.0.1: the same site as the UI's default http://localhost:8233, so the browser sends
        # the codec server's session cookie along with the UI's requests (see api/codec_server.py).
        return self.codec_server_public_url.rstrip("/") or f"http://localhost:{self.codec_server_port}"

    @property
    def sandbox_psp_url(self) -> str:
        return self.sandbox_psp_base_url or f"http://{self.sandbox_psp_host}:{self.sandbox_psp_port}"

    @property
    def sandbox_psp_browser_url(self) -> str:
        return self.sandbox_psp_public_url or self.sandbox_psp_url


def parse_retry_schedule(value: str) -> tuple[float, ...]:
    """"5,30,120" → (5.0, 30.0, 120.0): at least one wait, each positive."""
    waits = tuple(float(part) for part in value.split(",") if part.strip())
    if not waits or not all(0 < wait < float("inf") for wait in waits):  # NaN compares false: refused too
        raise ValueError("one or more positive numbers of seconds, comma-separated")
    return waits


def _split_cidrs(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
