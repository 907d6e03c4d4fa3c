"""Wallet reads: balances per currency (available, held, posted)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.auth import Principal, require_scope
from api.errors import problem_responses
from api.schemas import CurrencyBalance, PlayerIdPath, WalletBalance
from payloop.money import to_decimal_string

router = APIRouter(prefix="/v1/wallet", tags=["wallet"], responses=problem_responses(503))

@router.get("/{player_id}/balance", response_model=WalletBalance)
async def wallet_balance(
    player_id: PlayerIdPath,
    request: Request,
    _principal: Annotated[Principal, Depends(require_scope("wallet"))],
) -> WalletBalance:
    balances = await request.app.state.ledger.player_balances(player_id)
    return WalletBalance(
        player_id=player_id,
        balances=[
            CurrencyBalance(
                currency=b.currency,
                available=to_decimal_string(b.available, b.currency),
                held=to_decimal_string(b.pending_debits, b.currency),
                posted=to_decimal_string(b.posted, b.currency),
            )
            for b in balances
        ],
    )
