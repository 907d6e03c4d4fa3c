"""The FastAPI application: wires settings, database, Temporal client and PSP verifiers into the routes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api import checkout, console, errors, http_guards, outages
from api.auth import parse_api_keys
from api.checkout.sessions import CheckoutSessions
from api.console.sessions import SessionStore
from api.idempotency import IdempotencyStore
from api.metrics import ApiMetrics, CountersOf
from api.rate_limits import RateLimits
from api.retention import DeliveryLogPruner
from api.routes import (
    checkout as checkout_routes,
    disputes,
    events,
    games,
    health,
    incidents,
    margin,
    payments,
    payouts,
    players,
    recon,
    refunds,
    risk,
    routing,
    wallet,
    webhooks,
)
from api.webhook_inbox import WebhookInbox
from ledger import Ledger
from payloop.db import create_engine
from payloop.logs import AccessLogMiddleware
from payloop.money import parse_rates
from payloop.settings import Settings
from payloop.temporal import connect
from psp.registry import build_verifiers, payment_methods
from psp.routing import load_routing, switches
from psp.routing.health import HealthStore


def create_app(settings: Settings, *, engine: AsyncEngine | None = None, temporal: Client | None = None) -> FastAPI:
    """The API app. Tests pass their own engine and client; otherwise both are made from settings at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        db = engine or create_engine(settings.effective_database_url)
        state = app.state
        state.engine = db
        state.temporal = temporal or await connect(settings)
        state.ledger = Ledger(db)
        state.idempotency = IdempotencyStore(db, timedelta(hours=settings.idempotency_ttl_hours))
        counted = state.metrics
        state.webhook_inbox = WebhookInbox(
            db, on_delivery=lambda psp, outcome: counted.webhook_deliveries.labels(psp, outcome).inc(),
            on_alert=lambda kind: counted.alerts.labels(kind).inc())
        state.psp_health = HealthStore(db, state.routing)
        state.disabled_methods = switches.DisabledMethods(db)  # read on every deposit init: cached a few seconds
        state.console_sessions = SessionStore(db, idle_seconds=settings.console_session_idle_seconds,
                                              absolute_seconds=settings.console_session_absolute_seconds)
        state.checkout_sessions = CheckoutSessions(
            db, settings.checkout_signing_keys, lifetime=timedelta(minutes=settings.checkout_session_minutes),
            status_grace=timedelta(minutes=settings.checkout_status_grace_minutes))

        async def on_kyc_changed(player_id: str, _status: str) -> None:
            await payouts.nudge_kyc_waiting(state.temporal, player_id)

        state.on_kyc_changed = on_kyc_changed
        pruner = state.delivery_log_pruner = DeliveryLogPruner(db, settings.webhook_delivery_retention_days)
        pruner.start()
        yield
        await pruner.stop()
        await state.rate_limits.close()
        if own_engine:
            await db.dispose()

    # FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN (blank pages offline); FastAPIOffline is
    # FastAPI's documented self-hosting recipe (docs_url=None, get_swagger_ui_html / get_redoc_html, the OAuth2
    # redirect) with the assets shipped in its package and served under /static-offline-docs.
    app = FastAPIOffline(title="payloop", version="1", lifespan=lifespan,
                         description="Deposits, withdrawals and the wallet of a real-money gaming platform.")
    app.state.settings = settings
    app.state.api_keys = parse_api_keys(settings.api_keys)
    app.state.routing = load_routing(settings)  # once, at startup: a bad file stops the app with its line
    app.state.webhook_verifiers = build_verifiers(settings, app.state.routing)  # each PSP's secret, as it names it
    app.state.methods = payment_methods()
    app.state.fx_rates = parse_rates(settings.fx_rates_to_eur)  # deposit limits count every currency at these
    app.state.rate_limits = RateLimits(settings)  # per client, per webhook source, re-checks (README: Rate limits)
    app.state.metrics = ApiMetrics(CountersOf(app.state))  # /metrics
    http_guards.install(app, settings.api_body_timeout_seconds)  # before errors: inside its 500 middleware
    errors.install(app)
    outages.install(app)  # the database out of reach: 503 with Retry-After, not 500
    console.install(app)  # /ops: the ops console's pages (README: Ops console)
    checkout.install(app)  # /checkout: the players' pages (README: Checkout)
    # Last, so outermost: every request (a rate-limited or timed-out one too) has its trace id and access line.
    app.add_middleware(AccessLogMiddleware, logger_name="payloop.api.access", loggable_path=checkout.loggable_path)
    for module in (health, payments, refunds, payouts, webhooks, wallet, players, games, routing, checkout_routes,
                   events):
        app.include_router(module.router)
    for module in (payments, refunds, payouts, webhooks, disputes, margin, recon, risk, routing, incidents, events):
        app.include_router(module.ops_router)
    return app
