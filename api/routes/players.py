"""Player profiles: KYC status, self-exclusion, closed accounts, deposit limits and the wallet currency; the audit
log for operators.

Every change is a plain "set this value", so a retry is harmless: the Idempotency-Key header is accepted and ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api.auth import Principal, _authenticate, require_scope
from api.errors import Problem, problem_responses
from api.schemas import (
    AuditEntryView,
    AuditLog,
    DepositLimitRequest,
    DepositLimitView,
    KycRequest,
    PlayerIdPath,
    PlayerProfileView,
    SelfExclusionRequest,
    WalletCurrencyRequest,
)
from payloop.db import utcnow
from payloop.money import MoneyError, currency_exponent, to_decimal_string, to_minor_units
from players import KycStatus, LimitPeriod, PlayerProfile, PlayerRuleError, PlayerStore, audit, wallets

router = APIRouter(tags=["players"], responses=problem_responses(503))

Payments = Annotated[Principal, Depends(require_scope("payments"))]
Ops = Annotated[Principal, Depends(require_scope("ops"))]


def _payments_or_ops(principal: Annotated[Principal, Depends(_authenticate)]) -> Principal:
    # The cashier (payments) and the back office (ops) both read profiles.
    if not principal.scopes & {"payments", "ops"}:
        raise Problem(403, "insufficient_scope", "Forbidden", "this API key lacks the 'payments' or 'ops' scope")
    return principal


def _store(request: Request) -> PlayerStore:
    return PlayerStore(request.app.state.engine, request.app.state.fx_rates)


Store = Annotated[PlayerStore, Depends(_store)]


@router.get("/v1/players/{player_id}", response_model=PlayerProfileView)
async def get_player(
    player_id: PlayerIdPath, store: Store, _principal: Annotated[Principal, Depends(_payments_or_ops)]
) -> PlayerProfileView:
    return await _profile(store, player_id)


@router.put("/v1/players/{player_id}/deposit-limits", response_model=PlayerProfileView)
async def set_deposit_limit(
    player_id: PlayerIdPath, body: DepositLimitRequest, store: Store, principal: Payments
) -> PlayerProfileView:
    try:
        currency_exponent(body.currency)
        amount_minor = None if body.amount is None else to_minor_units(body.amount, body.currency)
    except MoneyError as err:
        field = "currency" if err.code == "unsupported_currency" else "amount"
        raise Problem(422, err.code, "Invalid deposit limit", str(err),
                      errors=[{"field": field, "code": err.code, "message": str(err)}]) from None
    await store.set_deposit_limit(player_id, body.currency, LimitPeriod(body.period), amount_minor,
                                  now=utcnow(), actor=principal.client_id)
    return await _profile(store, player_id)


@router.put("/v1/players/{player_id}/wallet-currency", response_model=PlayerProfileView,
            responses=problem_responses(409))
async def set_wallet_currency(
    player_id: PlayerIdPath, body: WalletCurrencyRequest, request: Request, store: Store, principal: Payments
) -> PlayerProfileView:
    """The currency the player's balance is kept in; deposits and payouts in another one convert (README
    "Currencies and conversion"). 409 while the player holds money or a hold in the current one."""
    try:
        await wallets.set_wallet_currency(request.app.state.engine, player_id, body.currency, now=utcnow(),
                                          actor=principal.client_id)
    except MoneyError as err:
        raise _field_problem("currency", err.code, str(err)) from None
    except PlayerRuleError as err:
        raise Problem(409, err.code, "Wallet currency in use", str(err)) from None
    return await _profile(store, player_id)


@router.post("/v1/players/{player_id}/self-exclusion", response_model=PlayerProfileView,
             responses=problem_responses(409))
async def self_exclude(
    player_id: PlayerIdPath, body: SelfExclusionRequest, store: Store, principal: Payments
) -> PlayerProfileView:
    try:
        until = None if body.until is None else body.until.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past the last representable moment
        raise _field_problem("until", "out_of_range", "until is out of range") from None
    try:
        await store.set_self_exclusion(player_id, until, now=utcnow(), actor=principal.client_id)
    except PlayerRuleError as err:
        if err.code == "self_exclusion_in_past":
            raise _field_problem("until", err.code, str(err)) from None
        raise Problem(409, err.code, "Self-exclusion active", str(err)) from None
    return await _profile(store, player_id)


@router.put("/v1/ops/players/{player_id}/kyc", response_model=PlayerProfileView)
async def set_kyc(
    player_id: PlayerIdPath, body: KycRequest, request: Request, store: Store, principal: Ops
) -> PlayerProfileView:
    now = utcnow()
    before = await store.controls(player_id, "EUR", now)
    await store.set_kyc_status(player_id, KycStatus(body.status), now=now, actor=principal.client_id,
                               note=body.note)
    if body.status == KycStatus.VERIFIED.value and before.kyc_status != body.status and before.first_seen_at:
        request.app.state.metrics.kyc_verify_seconds.observe((now - before.first_seen_at).total_seconds())
    # Lets waiting withdrawals resume at once (best effort: they also re-read KYC by themselves).
    on_kyc_changed = getattr(request.app.state, "on_kyc_changed", None)
    if on_kyc_changed is not None:
        await on_kyc_changed(player_id, body.status)
    return await _profile(store, player_id)


@router.post("/v1/ops/players/{player_id}/close", response_model=PlayerProfileView)
async def close_account(player_id: PlayerIdPath, store: Store, principal: Ops) -> PlayerProfileView:
    await store.set_closed(player_id, True, now=utcnow(), actor=principal.client_id)
    return await _profile(store, player_id)


@router.post("/v1/ops/players/{player_id}/reopen", response_model=PlayerProfileView)
async def reopen_account(player_id: PlayerIdPath, store: Store, principal: Ops) -> PlayerProfileView:
    await store.set_closed(player_id, False, now=utcnow(), actor=principal.client_id)
    return await _profile(store, player_id)


@router.get("/v1/ops/audit", response_model=AuditLog)
async def audit_entries(
    request: Request,
    _principal: Ops,
    subject: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.:\-]{1,120}$", examples=["player:alice"],
                                  description="what the entries are about: player:<id>, payout:<id>, webhook:<id>")],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditLog:
    rows = await audit.entries(request.app.state.engine, subject, limit)
    return AuditLog(entries=[
        AuditEntryView(id=r["id"], at=r["at"].isoformat(), actor=r["actor"], action=r["action"],
                       subject=r["subject"], details=r["details"])
        for r in rows
    ])


async def _profile(store: PlayerStore, player_id: str) -> PlayerProfileView:
    return _view(await store.profile(player_id, utcnow()))


def _view(profile: PlayerProfile) -> PlayerProfileView:
    limits = []
    for lim in profile.deposit_limits:
        state = lim.state
        pending = state.pending_amount_minor
        limits.append(DepositLimitView(
            currency=lim.currency,
            period=lim.period.value,
            amount=to_decimal_string(state.amount_minor or 0, lim.currency),
            pending_amount=None if pending is None else to_decimal_string(pending, lim.currency),
            pending_effective_at=_iso(state.pending_effective_at),
        ))
    return PlayerProfileView(
        player_id=profile.player_id,
        kyc_status=profile.kyc_status,
        self_excluded=profile.self_excluded,
        self_excluded_until=_iso(profile.self_excluded_until),
        closed=profile.closed,
        deposit_limits=limits,
        wallet_currency=profile.wallet_currency,
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _field_problem(field: str, code: str, message: str) -> Problem:
    return Problem(422, code, "Validation failed", message, errors=[{"field": field, "code": code, "message": message}])
