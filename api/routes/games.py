"""The game-round (seamless) wallet for game providers: debit (bet), credit (win), rollback, and the reads.

The provider's transaction_id is the idempotency key: the same id with the same body gets the stored answer byte
for byte, another body a 409. Business refusals are problem+json; a rollback of an unknown bet answers 200.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

from api.auth import Principal, require_scope
from api.errors import Problem, problem_responses
from api.schemas import Amount, Currency, PlayerId, PlayerIdPath
from ledger import InsufficientFunds, LedgerError, player_account
from ledger.games import GameAnswer, GameError, GameRequest, GameWallet, BettingRefused
from payloop.db import utcnow
from payloop.money import MoneyError, currency_exponent, to_decimal_string, to_minor_units
from players import PlayerStore

router = APIRouter(prefix="/v1/wallet", tags=["game wallet"], responses=problem_responses(503))

GameRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")]
Wallet = Annotated[Principal, Depends(require_scope("wallet"))]

_ZERO_RE = re.compile(r"^0(\.0+)?$")


class _GameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    player_id: PlayerId
    currency: Currency
    transaction_id: GameRef
    round_id: GameRef
    game_id: GameRef


class DebitRequest(_GameBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"player_id": "alice", "currency": "EUR", "amount": "1.00", "transaction_id": "bet-1", "round_id": "round-1",
         "game_id": "slots"}]})
    amount: Amount


class CreditRequest(_GameBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"player_id": "alice", "currency": "EUR", "amount": "2.50", "transaction_id": "win-1", "round_id": "round-1",
         "game_id": "slots", "reference_transaction_id": "bet-1"}]})
    amount: Amount  # "0.00" closes a lost round: the round is settled, no money moves
    reference_transaction_id: GameRef | None = None


class RollbackRequest(_GameBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"player_id": "alice", "currency": "EUR", "transaction_id": "rollback-1", "round_id": "round-1",
         "game_id": "slots", "reference_transaction_id": "bet-1"}]})
    reference_transaction_id: GameRef
    amount: Amount | None = None  # when given, must equal the bet's

    @model_validator(mode="after")
    def _names_another_transaction(self) -> RollbackRequest:
        if self.reference_transaction_id == self.transaction_id:
            raise ValueError("a rollback has a transaction id of its own, not the bet's")
        return self


class WalletAnswer(BaseModel):
    transaction_id: str
    player_id: str
    currency: str
    balance: str  # available after this transaction (at the time of its first answer, on a replay)
    status: str


class GameTransactionView(BaseModel):
    transaction_id: str
    kind: str  # bet | win | rollback | tombstone
    player_id: str
    currency: str
    amount: str | None
    game_id: str
    reference_transaction_id: str | None
    moved_money: bool
    created_at: datetime


class RoundView(BaseModel):
    round_id: str
    transactions: list[GameTransactionView]


class HistoryEntry(BaseModel):
    transfer_id: str
    kind: str
    amount: str  # signed, as the player's wallet saw it: a bet is negative
    currency: str
    status: str
    reference: str
    created_at: datetime


class PlayerHistory(BaseModel):
    player_id: str
    transactions: list[HistoryEntry]


_ANSWERED = {200: {"model": WalletAnswer}, **problem_responses(402, 409)}


@router.post("/debit", responses=_ANSWERED)
async def debit(body: DebitRequest, request: Request, _principal: Wallet) -> Response:
    req = _request(body, _amount(body.amount, body.currency), None)
    now = utcnow()
    store = PlayerStore(request.app.state.engine, request.app.state.fx_rates)
    controls = await store.controls(body.player_id, body.currency, now)
    refused = "account_closed" if controls.closed else "self_excluded" if controls.self_excluded(now) else None
    return await _answer(body.currency, _wallet(request).bet(req, refused=refused))


@router.post("/credit", responses=_ANSWERED)
async def credit(body: CreditRequest, request: Request, _principal: Wallet) -> Response:
    # Wins reach self-excluded players too: the money was won before or while the exclusion started.
    req = _request(body, _amount(body.amount, body.currency, allow_zero=True), body.reference_transaction_id)
    return await _answer(body.currency, _wallet(request).win(req))


@router.post("/rollback", responses=_ANSWERED)
async def rollback(body: RollbackRequest, request: Request, _principal: Wallet) -> Response:
    req = _request(body, _amount(body.amount, body.currency), body.reference_transaction_id)
    return await _answer(body.currency, _wallet(request).rollback(req))


@router.get("/rounds/{round_id}", response_model=RoundView, responses=problem_responses(404))
async def round_transactions(
    round_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")], request: Request, _principal: Wallet
) -> RoundView:
    transactions = await _wallet(request).round_transactions(round_id)
    if not transactions:
        raise Problem(404, "round_not_found", "Round not found", "no game transaction has this round id")
    return RoundView(
        round_id=round_id,
        transactions=[
            GameTransactionView(
                transaction_id=t.transaction_id,
                kind=t.kind,
                player_id=t.player_id,
                currency=t.currency,
                amount=None if t.amount is None else to_decimal_string(t.amount, t.currency),
                game_id=t.game_id,
                reference_transaction_id=t.reference_transaction_id,
                moved_money=t.transfer_id is not None,
                created_at=t.created_at,
            )
            for t in transactions
        ],
    )


@router.get("/{player_id}/transactions", response_model=PlayerHistory)
async def player_transactions(
    player_id: PlayerIdPath,
    request: Request,
    _principal: Wallet,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> PlayerHistory:
    transfers = await _wallet(request).player_history(player_id, limit)
    return PlayerHistory(
        player_id=player_id,
        transactions=[
            HistoryEntry(
                transfer_id=t.id,
                kind=t.kind,
                amount=to_decimal_string(
                    t.amount if t.credit_account == player_account(player_id, t.currency) else -t.amount, t.currency
                ),
                currency=t.currency,
                status=t.status,
                reference=t.reference,
                created_at=t.created_at,
            )
            for t in transfers
        ],
    )


# ---- helpers ------------------------------------------------------------------------------------------------------

def _wallet(request: Request) -> GameWallet:
    return GameWallet(request.app.state.engine)


def _amount(amount: str | None, currency: str, *, allow_zero: bool = False) -> int | None:
    try:
        currency_exponent(currency)
        if amount is None:
            return None
        if allow_zero and _ZERO_RE.match(amount):
            return 0
        return to_minor_units(amount, currency)
    except MoneyError as err:
        field = "currency" if err.code == "unsupported_currency" else "amount"
        raise Problem(422, err.code, "Invalid amount", str(err),
                      errors=[{"field": field, "code": err.code, "message": str(err)}]) from None


def _request(body: _GameBody, amount: int | None, reference: str | None) -> GameRequest:
    return GameRequest(
        transaction_id=body.transaction_id,
        player_id=body.player_id,
        currency=body.currency,
        amount=amount,
        round_id=body.round_id,
        game_id=body.game_id,
        reference_transaction_id=reference,
    )


async def _answer(currency: str, pending: Awaitable[GameAnswer]) -> Response:
    try:
        answer = await pending
    except InsufficientFunds as err:
        raise Problem(402, err.code, "Insufficient funds", "the player's available balance is below the bet",
                      balance=to_decimal_string(err.available, currency)) from None
    except GameError as err:
        # A rule breach is a 422 (as for deposits' limits); the rest conflict with what the wallet already holds.
        status = 422 if isinstance(err, BettingRefused) else 409
        raise Problem(status, err.code, _title(err.code), str(err), transaction_id=err.transaction_id) from None
    except LedgerError as err:
        raise Problem(422, err.code, "Invalid request", str(err)) from None
    return Response(answer.body, media_type="application/json")


def _title(code: str) -> str:
    return code.replace("_", " ").capitalize()
