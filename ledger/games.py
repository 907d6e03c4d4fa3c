"""The game-round (seamless) wallet: the bets, wins and rollbacks that game providers send per round.

Every provider transaction is one `game_transactions` row, written in the same database transaction as its ledger
posting, so the two never disagree. The row's primary key makes a transaction id usable once: a replay gets the
stored answer, another body a conflict. A rollback of a bet not seen yet claims the bet's id with a tombstone, so
the late bet is refused, and a bet racing its rollback meets it on that key. A round is a row too: a win marks it
settled and a rollback locks it, so a rollback racing a win of its round sees the win.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    String,
    Table,
    Text,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import transfer_ids
from ledger.accounts import PLAYER, house_account, player_account
from ledger.errors import InvalidTransfer, LedgerError
from ledger.models import ledger_accounts, ledger_transfers
from ledger.service import Ledger, Transfer, TransferRequest, _to_transfer
from payloop.db import UtcDateTime, insert_if_missing, metadata, utcnow
from payloop.money import MAX_MINOR_UNITS, to_decimal_string

BET = "bet"
WIN = "win"
ROLLBACK = "rollback"
TOMBSTONE = "tombstone"  # a bet id claimed by the rollback that arrived first: that bet is refused forever

HOUSE_GAMES = "games"
GAME_REF_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")

game_transactions = Table(
    "game_transactions",
    metadata,
    Column("transaction_id", String(100), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("player_id", String(128), nullable=False),
    Column("currency", String(3), nullable=False),
    # NULL: a rollback (or its tombstone) that named no amount.
    Column("amount_minor", BigInteger, nullable=True),
    Column("round_id", String(100), nullable=False, index=True),
    Column("game_id", String(100), nullable=False),
    # win: the bet it pays (informational); rollback: the bet; tombstone: the rollback that left it.
    Column("reference_transaction_id", String(100), nullable=True, index=True),
    # The ledger transfer this transaction posted; NULL when it moved no money.
    Column("transfer_id", String(200), nullable=True),
    # NULL for tombstones: nothing replays them.
    Column("fingerprint", String(64), nullable=True),
    # The answer given, returned byte for byte on a replay.
    Column("response", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("kind IN ('bet', 'win', 'rollback', 'tombstone')", name="kind"),
    CheckConstraint("amount_minor IS NULL OR amount_minor >= 0", name="amount_not_negative"),
    Index("ix_game_transactions_player_id_created_at", "player_id", "created_at"),
)

game_rounds = Table(
    "game_rounds",
    metadata,
    Column("player_id", String(128), primary_key=True),
    Column("round_id", String(100), primary_key=True),
    Column("game_id", String(100), nullable=False),
    Column("currency", String(3), nullable=False),
    # Set by the round's first win (a zero win too); from then on its bets cannot be rolled back.
    Column("settled_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)


# ---- errors ---------------------------------------------------------------------------------------------------


class GameError(LedgerError):
    def __init__(self, transaction_id: str, message: str) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id


class GameTransactionConflict(GameError):
    code = "transaction_conflict"

    def __init__(self, transaction_id: str) -> None:
        super().__init__(transaction_id, f"transaction {transaction_id} already exists with a different body")


class TransactionRolledBack(GameError):
    code = "transaction_rolled_back"

    def __init__(self, transaction_id: str) -> None:
        super().__init__(transaction_id, f"bet {transaction_id} was rolled back before it arrived")


class NotABet(GameError):
    code = "not_a_bet"

    def __init__(self, transaction_id: str, kind: str) -> None:
        super().__init__(transaction_id, f"transaction {transaction_id} is a {kind}; only bets can be rolled back")


class RoundSettled(GameError):
    code = "round_settled"

    def __init__(self, transaction_id: str, round_id: str) -> None:
        super().__init__(transaction_id, f"round {round_id} is settled by a win; bet {transaction_id} stays")


class ReferenceMismatch(GameError):
    code = "reference_mismatch"

    def __init__(self, transaction_id: str, field: str) -> None:
        super().__init__(transaction_id, f"the request's {field} differs from that of bet {transaction_id}")
        self.field = field


class BettingRefused(GameError):
    """The player may not bet now (self-excluded, account closed); `code` says why."""

    def __init__(self, transaction_id: str, player_id: str, code: str) -> None:
        super().__init__(transaction_id, f"player {player_id} cannot bet: {code.replace('_', ' ')}")
        self.code = code


# ---- requests and answers -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GameRequest:
    transaction_id: str
    player_id: str
    currency: str
    amount: int | None  # minor units; None only for a rollback that names no amount
    round_id: str
    game_id: str
    reference_transaction_id: str | None = None

    def fingerprint(self, kind: str) -> str:
        body = json.dumps({"kind": kind, **asdict(self)}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class GameAnswer:
    body: str  # the JSON answer: transaction_id, player_id, currency, balance (available after), status
    replayed: bool = False

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class GameTransaction:
    transaction_id: str
    kind: str
    player_id: str
    currency: str
    amount: int | None
    round_id: str
    game_id: str
    reference_transaction_id: str | None
    transfer_id: str | None
    created_at: datetime


# A transaction's money movement, run inside its database transaction; returns the posted transfer, if any.
_Move = Callable[[AsyncConnection], Awaitable[Transfer | None]]


class GameWallet:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._ledger = Ledger(engine)

    async def bet(self, req: GameRequest, *, refused: str | None = None) -> GameAnswer:
        """Debit the player; InsufficientFunds leaves no trace, so the provider may retry after a deposit."""
        _validate(req, BET)

        async def move(conn: AsyncConnection) -> Transfer:
            # Checked only for a new bet: a replay of a bet accepted before the exclusion still gets its answer.
            if refused:
                raise BettingRefused(req.transaction_id, req.player_id, refused)
            await _open_round(conn, req)
            return await self._ledger.post_transfer_in(conn, _transfer(req, BET, to_house=True))

        return await self._record(req, BET, move)

    async def win(self, req: GameRequest) -> GameAnswer:
        """Credit the player and settle the round; a zero win only settles it (a lost round's close)."""
        _validate(req, WIN)

        async def move(conn: AsyncConnection) -> Transfer | None:
            await _open_round(conn, req)
            # The row lock orders this win against rollbacks of the round's bets.
            lock_round = select(game_rounds).where(*_round_key(req.player_id, req.round_id)).with_for_update()
            if (await conn.execute(lock_round)).one().currency != req.currency:
                raise ReferenceMismatch(req.transaction_id, "currency")
            if req.reference_transaction_id is not None:
                await _check_win_reference(conn, req, req.reference_transaction_id)
            await conn.execute(
                update(game_rounds)
                .where(*_round_key(req.player_id, req.round_id), game_rounds.c.settled_at.is_(None))
                .values(settled_at=utcnow())
            )
            if req.amount == 0:
                return None
            return await self._ledger.post_transfer_in(conn, _transfer(req, WIN, to_house=False))

        return await self._record(req, WIN, move)

    async def rollback(self, req: GameRequest) -> GameAnswer:
        """Reverse a bet once; an unknown bet gets a tombstone. Answers ok unless the reversal is refused."""
        _validate(req, ROLLBACK)
        bet_id = req.reference_transaction_id
        assert bet_id is not None  # _validate

        async def move(conn: AsyncConnection) -> Transfer | None:
            tombstone = _row(req, TOMBSTONE) | {
                "transaction_id": bet_id, "reference_transaction_id": req.transaction_id,
            }
            if await insert_if_missing(conn, game_transactions, tombstone):
                return None
            bet = await _get(conn, bet_id)
            if bet.kind == TOMBSTONE:  # an earlier rollback already refused this bet in advance
                return None
            if bet.kind != BET:
                raise NotABet(bet_id, bet.kind)
            for field, ours, theirs in (
                ("player_id", req.player_id, bet.player_id),
                ("currency", req.currency, bet.currency),
                ("round_id", req.round_id, bet.round_id),
                ("amount", req.amount, bet.amount_minor),
            ):
                if ours is not None and ours != theirs:
                    raise ReferenceMismatch(bet_id, field)
            # The row lock orders this rollback against a win of the round and against other rollbacks of the bet.
            lock_round = select(game_rounds).where(*_round_key(bet.player_id, bet.round_id)).with_for_update()
            round_ = (await conn.execute(lock_round)).one()
            reversal_id = transfer_ids.game(bet_id, ROLLBACK)
            if (await conn.execute(select(ledger_transfers.c.id).where(ledger_transfers.c.id == reversal_id))).first():
                return None  # reversed by an earlier rollback: this one is answered ok and moves nothing
            if round_.settled_at is not None:
                raise RoundSettled(bet_id, bet.round_id)
            reversal = TransferRequest(
                id=reversal_id,
                debit_account=house_account(HOUSE_GAMES, bet.currency),
                credit_account=player_account(bet.player_id, bet.currency),
                amount=bet.amount_minor,
                currency=bet.currency,
                kind=ROLLBACK,
                reference=bet_id,
                metadata={"round_id": bet.round_id, "game_id": bet.game_id, "rollback_id": req.transaction_id},
            )
            return await self._ledger.post_transfer_in(conn, reversal)

        return await self._record(req, ROLLBACK, move)

    async def _record(self, req: GameRequest, kind: str, move: _Move) -> GameAnswer:
        fingerprint = req.fingerprint(kind)

        async def tx(conn: AsyncConnection) -> GameAnswer:
            # Claim the id first: a concurrent request with the same id waits here until this one commits.
            if not await insert_if_missing(conn, game_transactions, {**_row(req, kind), "fingerprint": fingerprint}):
                return await _replay(conn, req.transaction_id, kind, fingerprint)
            transfer = await move(conn)
            body = json.dumps(
                {
                    "transaction_id": req.transaction_id,
                    "player_id": req.player_id,
                    "currency": req.currency,
                    "balance": to_decimal_string(await _available(conn, req.player_id, req.currency), req.currency),
                    "status": "ok",
                },
                separators=(",", ":"),
            )
            await conn.execute(
                update(game_transactions)
                .where(game_transactions.c.transaction_id == req.transaction_id)
                .values(
                    transfer_id=transfer.id if transfer else None,
                    amount_minor=transfer.amount if transfer else req.amount,
                    response=body,
                )
            )
            return GameAnswer(body)

        return await self._ledger.transaction(tx)

    # ---- reads ---------------------------------------------------------------------------------------------------

    async def round_transactions(self, round_id: str) -> list[GameTransaction]:
        """The round's transactions (tombstones included), oldest first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(game_transactions)
                .where(game_transactions.c.round_id == round_id)
                .order_by(game_transactions.c.created_at, game_transactions.c.transaction_id)
            )
            return [_to_game_transaction(r) for r in rows]

    async def player_history(self, player_id: str, limit: int = 50) -> list[Transfer]:
        """Ledger transfers touching any of the player's wallets (games and payments), newest first."""
        wallets = select(ledger_accounts.c.id).where(
            ledger_accounts.c.owner == player_id, ledger_accounts.c.kind == PLAYER
        )
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(ledger_transfers)
                .where(or_(ledger_transfers.c.debit_account_id.in_(wallets),
                           ledger_transfers.c.credit_account_id.in_(wallets)))
                .order_by(ledger_transfers.c.created_at.desc(), ledger_transfers.c.id.desc())
                .limit(limit)
            )
            return [_to_transfer(r) for r in rows]


async def turnover_since(engine: AsyncEngine, player_id: str, currency: str, since: datetime) -> int:
    """Minor units staked by the player in `currency` at or after `since`, less the bets that were rolled back."""
    bets = game_transactions.alias("bets")
    rollbacks = game_transactions.alias("rollbacks")
    reversed_ = (
        select(rollbacks.c.transaction_id)
        .where(
            rollbacks.c.kind == ROLLBACK,
            rollbacks.c.reference_transaction_id == bets.c.transaction_id,
            rollbacks.c.transfer_id.is_not(None),
        )
        .exists()
    )
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                select(func.coalesce(func.sum(bets.c.amount_minor), 0)).where(
                    bets.c.kind == BET,
                    bets.c.player_id == player_id,
                    bets.c.currency == currency,
                    bets.c.created_at >= since,
                    ~reversed_,
                )
            )
        ).scalar_one()
    return int(total)


# ---- helpers --------------------------------------------------------------------------------------------------


def _validate(req: GameRequest, kind: str) -> None:
    refs = [req.transaction_id, req.round_id, req.game_id]
    if req.reference_transaction_id is not None:
        refs.append(req.reference_transaction_id)
    if not all(isinstance(ref, str) and GAME_REF_RE.match(ref) for ref in refs):
        raise InvalidTransfer("transaction, round and game ids are 1-100 of letters, digits, '_', '.', ':', '-'")
    player_account(req.player_id, req.currency)  # raises InvalidAccount for a bad player id or currency
    lowest = {BET: 1, WIN: 0, ROLLBACK: 1}[kind]
    if req.amount is None and kind != ROLLBACK:
        raise InvalidTransfer(f"a {kind} needs an amount")
    if req.amount is not None and (
        isinstance(req.amount, bool) or not isinstance(req.amount, int) or not lowest <= req.amount <= MAX_MINOR_UNITS
    ):
        raise InvalidTransfer(f"a {kind}'s amount must be an integer of minor units in {lowest}..{MAX_MINOR_UNITS}")
    if kind == ROLLBACK and req.reference_transaction_id in (None, req.transaction_id):
        raise InvalidTransfer("a rollback names the bet it reverses, under another transaction id")


def _transfer(req: GameRequest, kind: str, *, to_house: bool) -> TransferRequest:
    player = player_account(req.player_id, req.currency)
    house = house_account(HOUSE_GAMES, req.currency)
    assert req.amount is not None  # _validate
    return TransferRequest(
        id=transfer_ids.game(req.transaction_id, kind),
        debit_account=player if to_house else house,
        credit_account=house if to_house else player,
        amount=req.amount,
        currency=req.currency,
        kind=kind,
        reference=req.transaction_id,
        metadata={"round_id": req.round_id, "game_id": req.game_id},
    )


def _row(req: GameRequest, kind: str) -> dict[str, Any]:
    return {
        "transaction_id": req.transaction_id,
        "kind": kind,
        "player_id": req.player_id,
        "currency": req.currency,
        "amount_minor": req.amount,
        "round_id": req.round_id,
        "game_id": req.game_id,
        "reference_transaction_id": req.reference_transaction_id,
        "created_at": utcnow(),
    }


def _round_key(player_id: str, round_id: str) -> tuple[Any, Any]:
    return game_rounds.c.player_id == player_id, game_rounds.c.round_id == round_id


async def _check_win_reference(conn: AsyncConnection, req: GameRequest, bet_id: str) -> None:
    """A win that names its bet must name a live bet of this player, round and currency: no win pays out on a
    bet that was never placed or was rolled back."""
    bet = (await conn.execute(select(game_transactions).where(game_transactions.c.transaction_id == bet_id))).first()
    if bet is None or bet.kind == TOMBSTONE:
        raise TransactionRolledBack(bet_id) if bet is not None else NotABet(bet_id, "unknown transaction")
    if bet.kind != BET:
        raise NotABet(bet_id, bet.kind)
    for field in ("player_id", "round_id", "currency"):
        if getattr(bet, field) != getattr(req, field):
            raise ReferenceMismatch(bet_id, field)
    reversal = transfer_ids.game(bet_id, ROLLBACK)
    if (await conn.execute(select(ledger_transfers.c.id).where(ledger_transfers.c.id == reversal))).first():
        raise TransactionRolledBack(bet_id)


async def _open_round(conn: AsyncConnection, req: GameRequest) -> None:
    await insert_if_missing(conn, game_rounds, {
        "player_id": req.player_id, "round_id": req.round_id, "game_id": req.game_id, "currency": req.currency,
        "created_at": utcnow(),
    })


async def _get(conn: AsyncConnection, transaction_id: str) -> Any:
    return (
        await conn.execute(select(game_transactions).where(game_transactions.c.transaction_id == transaction_id))
    ).one()


async def _replay(conn: AsyncConnection, transaction_id: str, kind: str, fingerprint: str) -> GameAnswer:
    existing = await _get(conn, transaction_id)
    if existing.kind == TOMBSTONE and kind == BET:
        raise TransactionRolledBack(transaction_id)
    if existing.fingerprint != fingerprint:
        raise GameTransactionConflict(transaction_id)
    return GameAnswer(existing.response, replayed=True)


async def _available(conn: AsyncConnection, player_id: str, currency: str) -> int:
    available = (
        await conn.execute(
            select(ledger_accounts.c.posted_balance - ledger_accounts.c.pending_debits).where(
                ledger_accounts.c.id == player_account(player_id, currency)
            )
        )
    ).scalar_one_or_none()
    return int(available or 0)


def _to_game_transaction(row: Any) -> GameTransaction:
    return GameTransaction(
        transaction_id=row.transaction_id,
        kind=row.kind,
        player_id=row.player_id,
        currency=row.currency,
        amount=row.amount_minor,
        round_id=row.round_id,
        game_id=row.game_id,
        reference_transaction_id=row.reference_transaction_id,
        transfer_id=row.transfer_id,
        created_at=row.created_at,
    )
