"""Stateful fuzzing of the ledger and the game wallet against a pure-Python model, on SQLite and PostgreSQL.

A Hypothesis rule-based state machine sends random sequences of deposits, direct debits, holds, posts and voids,
game bets, wins and rollbacks to the real `Ledger` and `GameWallet`, with ids drawn from small pools so that
duplicates (same id, same body: the stored answer, no second movement) and conflicts (same id, another body:
refused, nothing moves) happen all the time, plus overdraft attempts, wins naming unknown or rolled-back bets,
rollbacks of unknown bets (tombstones) and late bets. The model predicts every answer or error; after every step
the ledger invariants must hold and every account, transfer, game transaction and round must equal the model.

Each example starts from emptied tables, on an engine of its own, with a drawn opening (money, holds, open, settled
and rolled-back bets, a tombstone); then up to 30 steps, each one action drawn from all of them. The test also
asserts that the run reached every interesting outcome (MUST_SEE), so a change that starves a path is noticed.

Hypothesis drives the machine synchronously, so the test owns an event loop and runs each step's coroutine on it;
the engines are created, used and disposed on that loop only (asyncpg connections are bound to their loop).

Deterministic (derandomized, no example database). A passing run takes 15-30 s per backend (SQLite, PostgreSQL)
on a busy 2-core machine, under a minute for both. A failing one also shrinks, for up to about 5 minutes per backend (every run of the
machine touches the database); the message names what differs from the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    HoldAlreadyResolved,
    InsufficientFunds,
    InvalidTransfer,
    Ledger,
    LedgerError,
    NotAHold,
    Transfer,
    TransferConflict,
    TransferNotFound,
    TransferRequest,
    assert_invariants,
    house_account,
    parse_account,
    player_account,
    psp_clearing_account,
)
from ledger.accounts import PLAYER
from ledger.games import (
    BET,
    HOUSE_GAMES,
    ROLLBACK,
    TOMBSTONE,
    WIN,
    BettingRefused,
    GameAnswer,
    GameRequest,
    GameTransactionConflict,
    GameWallet,
    NotABet,
    ReferenceMismatch,
    RoundSettled,
    TransactionRolledBack,
    game_rounds,
    game_transactions,
)
from ledger.models import ledger_accounts, ledger_transfers
from payloop.money import to_decimal_string
from tests.conftest import BACKENDS, FreshDatabase

T = TypeVar("T")

PLAYERS = ("alice", "bob", "carol")
CURRENCIES = ("EUR", "JPY")  # two exponents (2 and 0), so the answers' decimal strings are checked too
PSP = "cardpsp"
POSTED, PENDING, VOIDED = "posted", "pending", "voided"

WALLETS = [(player, currency) for player in PLAYERS for currency in CURRENCIES]
PAY_IDS = [f"pay_{n}" for n in range(6)]
PAYOUT_IDS = [f"payout:{n}" for n in range(6)]  # shared by direct debits and holds: the hold flag is in the body
RESOLVE_IDS = PAYOUT_IDS + ["deposit:pay_0:credit", "payout:unknown"]
BET_IDS = [f"b{n}" for n in range(6)]
GAME_IDS = BET_IDS + ["w0", "w1", "rb0", "rb1"]  # any kind may use any of these: cross-kind collisions
ROUNDS = ("r0", "r1", "r2")
GAMES = ("slots", "poker")

# Bounded and deterministic for CI: 20 examples of up to 30 steps per backend (timings in the module docstring).
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=20,
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=False,
)

# Outcomes seen across all examples of a run; the test asserts the interesting ones all happened.
OUTCOMES: Counter[str] = Counter()
MUST_SEE = {
    "transfer:ok", "transfer:replay", "transfer:TransferConflict", "transfer:InsufficientFunds",
    "resolve:posted", "resolve:voided", "resolve:replay", "resolve:HoldAlreadyResolved", "resolve:NotAHold",
    "resolve:TransferNotFound",
    "bet:ok", "bet:replay", "bet:GameTransactionConflict", "bet:InsufficientFunds", "bet:BettingRefused",
    "bet:TransactionRolledBack",
    "win:ok", "win:zero", "win:replay", "win:NotABet", "win:TransactionRolledBack", "win:ReferenceMismatch",
    "rollback:reversed", "rollback:tombstone", "rollback:no-op", "rollback:replay", "rollback:RoundSettled",
    "rollback:ReferenceMismatch", "rollback:NotABet", "rollback:GameTransactionConflict",
    "rollback:InvalidTransfer",
}


class Err:
    """An expected (or actual) refusal: the same exception class with the same message."""

    def __init__(self, exc: LedgerError) -> None:
        self.exc = exc

    def key(self) -> tuple[str, str]:
        return type(self.exc).__name__, str(self.exc)

    def __repr__(self) -> str:
        return f"{type(self.exc).__name__}({str(self.exc)!r})"


@dataclass
class ModelTransfer:
    req: TransferRequest
    hold: bool
    status: str


@dataclass
class ModelGameRow:
    kind: str
    req: GameRequest  # for a tombstone: the rollback that left it
    body: str | None  # the stored answer; None for a tombstone


def body_of(req: TransferRequest | Transfer) -> tuple[Any, ...]:
    """What the ledger's fingerprint covers (not the id, not the metadata)."""
    return req.debit_account, req.credit_account, req.amount, req.currency, req.kind, req.reference


def transfer_view(t: Transfer) -> tuple[Any, ...]:
    return t.id, *body_of(t), t.status, t.replayed


class Model:
    """Pure-Python ledger and game wallet. Each method returns the expected answer (or Err) and mutates the model
    only when the real call is expected to succeed."""

    def __init__(self) -> None:
        self.accounts: dict[str, list[int]] = {}  # id -> [posted, pending_debits, pending_credits]
        self.transfers: dict[str, ModelTransfer] = {}
        self.games: dict[str, ModelGameRow] = {}
        self.rounds: dict[tuple[str, str], list[Any]] = {}  # (player, round) -> [currency, settled]

    def available(self, account_id: str) -> int:
        posted, pending_debits, _ = self.accounts.get(account_id, [0, 0, 0])
        return posted - pending_debits

    def _account(self, account_id: str) -> list[int]:
        return self.accounts.setdefault(account_id, [0, 0, 0])

    # ---- ledger ------------------------------------------------------------------------------------------------

    def check_create(self, req: TransferRequest, hold: bool) -> Err | tuple[Any, ...] | None:
        """None: a new transfer that will be accepted; else the replay's view or the refusal."""
        existing = self.transfers.get(req.id)
        if existing is not None:
            if body_of(existing.req) != body_of(req) or existing.hold != hold:
                return Err(TransferConflict(req.id))
            return (req.id, *body_of(existing.req), existing.status, True)
        if parse_account(req.debit_account).kind == PLAYER and self.available(req.debit_account) < req.amount:
            return Err(InsufficientFunds(req.debit_account, self.available(req.debit_account)))
        return None

    def apply_create(self, req: TransferRequest, hold: bool) -> tuple[Any, ...]:
        debit, credit = self._account(req.debit_account), self._account(req.credit_account)
        if hold:
            debit[1] += req.amount
            credit[2] += req.amount
        else:
            debit[0] -= req.amount
            credit[0] += req.amount
        status = PENDING if hold else POSTED
        self.transfers[req.id] = ModelTransfer(req, hold, status)
        return (req.id, *body_of(req), status, False)

    def create(self, req: TransferRequest, hold: bool) -> Err | tuple[Any, ...]:
        outcome = self.check_create(req, hold)
        return self.apply_create(req, hold) if outcome is None else outcome

    def resolve(self, transfer_id: str, target: str) -> Err | tuple[Any, ...]:
        t = self.transfers.get(transfer_id)
        if t is None:
            return Err(TransferNotFound(transfer_id))
        if not t.hold:
            return Err(NotAHold(transfer_id))
        if t.status == target:
            return (transfer_id, *body_of(t.req), t.status, True)
        if t.status != PENDING:
            return Err(HoldAlreadyResolved(transfer_id, t.status))
        amount = t.req.amount
        debit, credit = self._account(t.req.debit_account), self._account(t.req.credit_account)
        debit[1] -= amount
        credit[2] -= amount
        if target == POSTED:
            debit[0] -= amount
            credit[0] += amount
        t.status = target
        return (transfer_id, *body_of(t.req), target, False)

    # ---- game wallet -------------------------------------------------------------------------------------------

    def _answer(self, req: GameRequest) -> str:
        balance = self.available(player_account(req.player_id, req.currency))
        return json.dumps(
            {
                "transaction_id": req.transaction_id,
                "player_id": req.player_id,
                "currency": req.currency,
                "balance": to_decimal_string(balance, req.currency),
                "status": "ok",
            },
            separators=(",", ":"),
        )

    def _replay(self, req: GameRequest, kind: str) -> Err | tuple[str, bool] | None:
        row = self.games.get(req.transaction_id)
        if row is None:
            return None
        if row.kind == TOMBSTONE and kind == BET:
            return Err(TransactionRolledBack(req.transaction_id))
        if row.kind != kind or row.req != req:  # a tombstone has no fingerprint: never equal
            return Err(GameTransactionConflict(req.transaction_id))
        assert row.body is not None
        return row.body, True

    def _record(self, req: GameRequest, kind: str) -> tuple[str, bool]:
        body = self._answer(req)
        self.games[req.transaction_id] = ModelGameRow(kind, req, body)
        return body, False

    def _game_transfer(self, req: GameRequest, kind: str, to_house: bool) -> TransferRequest:
        assert req.amount is not None
        player = player_account(req.player_id, req.currency)
        house = house_account(HOUSE_GAMES, req.currency)
        return TransferRequest(
            f"game:{req.transaction_id}:{kind}", player if to_house else house, house if to_house else player,
            req.amount, req.currency, kind, req.transaction_id,
        )

    def _open_round(self, req: GameRequest) -> None:
        self.rounds.setdefault((req.player_id, req.round_id), [req.currency, False])

    def bet(self, req: GameRequest, refused: str | None) -> Err | tuple[str, bool]:
        if (replay := self._replay(req, BET)) is not None:
            return replay
        if refused:
            return Err(BettingRefused(req.transaction_id, req.player_id, refused))
        transfer = self._game_transfer(req, BET, to_house=True)
        if isinstance(outcome := self.check_create(transfer, hold=False), Err):
            return outcome
        assert outcome is None, "a new bet's transfer id cannot exist yet"
        self._open_round(req)
        self.apply_create(transfer, hold=False)
        return self._record(req, BET)

    def win(self, req: GameRequest) -> Err | tuple[str, bool]:
        if (replay := self._replay(req, WIN)) is not None:
            return replay
        round_ = self.rounds.get((req.player_id, req.round_id))
        if round_ is not None and round_[0] != req.currency:
            return Err(ReferenceMismatch(req.transaction_id, "currency"))
        bet_id = req.reference_transaction_id
        if bet_id is not None:
            # The win's own row is already claimed when its reference is checked.
            bet = ModelGameRow(WIN, req, None) if bet_id == req.transaction_id else self.games.get(bet_id)
            if bet is None:
                return Err(NotABet(bet_id, "unknown transaction"))
            if bet.kind == TOMBSTONE:
                return Err(TransactionRolledBack(bet_id))
            if bet.kind != BET:
                return Err(NotABet(bet_id, bet.kind))
            for field in ("player_id", "round_id", "currency"):
                if getattr(bet.req, field) != getattr(req, field):
                    return Err(ReferenceMismatch(bet_id, field))
            if f"game:{bet_id}:rollback" in self.transfers:
                return Err(TransactionRolledBack(bet_id))
        self._open_round(req)
        self.rounds[(req.player_id, req.round_id)][1] = True
        if req.amount:
            self.create(self._game_transfer(req, WIN, to_house=False), hold=False)
        return self._record(req, WIN)

    def rollback(self, req: GameRequest) -> Err | tuple[str, bool]:
        bet_id = req.reference_transaction_id
        assert bet_id is not None
        if bet_id == req.transaction_id:
            return Err(InvalidTransfer("a rollback names the bet it reverses, under another transaction id"))
        if (replay := self._replay(req, ROLLBACK)) is not None:
            return replay
        bet = self.games.get(bet_id)
        if bet is None:
            self.games[bet_id] = ModelGameRow(TOMBSTONE, req, None)
            return self._record(req, ROLLBACK)
        if bet.kind == TOMBSTONE:
            return self._record(req, ROLLBACK)
        if bet.kind != BET:
            return Err(NotABet(bet_id, bet.kind))
        for field in ("player_id", "currency", "round_id", "amount"):
            ours = getattr(req, field)
            if ours is not None and ours != getattr(bet.req, field):
                return Err(ReferenceMismatch(bet_id, field))
        reversal = self._game_transfer(bet.req, ROLLBACK, to_house=False)
        if reversal.id in self.transfers:
            return self._record(req, ROLLBACK)
        if self.rounds[(bet.req.player_id, bet.req.round_id)][1]:
            return Err(RoundSettled(bet_id, bet.req.round_id))
        self.create(reversal, hold=False)
        return self._record(req, ROLLBACK)


async def _outcome(coro: Coroutine[Any, Any, T]) -> T | Err:
    try:
        return await coro
    except LedgerError as e:
        return Err(e)


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, Err) or isinstance(actual, Err):
        return isinstance(expected, Err) and isinstance(actual, Err) and expected.key() == actual.key()
    return expected == actual


def _assert_same(what: str, ledger: dict[Any, Any], model: dict[Any, Any]) -> None:
    differ = [
        f"  {key}: ledger {ledger.get(key, 'missing')!r}, model {model.get(key, 'missing')!r}"
        for key in sorted(set(ledger) | set(model), key=str)
        if ledger.get(key) != model.get(key)
    ]
    assert not differ, f"{what} differ from the model:\n" + "\n".join(differ)


def _label(result: Any, ok: str) -> str:
    if isinstance(result, Err):
        return type(result.exc).__name__
    replayed = result[-1]
    return "replay" if replayed else ok


# The machine has one rule, `step`, which runs one of the actions below (drawn uniformly) with that action's
# arguments. As separate rules, Hypothesis's swarm testing switched whole rules off per example, and most examples
# lacked the pairs that interesting cases need (a hold and its resolution, a bet and its rollback).
ACTIONS: dict[str, st.SearchStrategy[dict[str, Any]]] = {}


def action(**strategies: st.SearchStrategy[Any]) -> Any:
    def register(f: Any) -> Any:
        ACTIONS[f.__name__] = st.fixed_dictionaries(strategies)
        return f

    return register


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, loop: asyncio.AbstractEventLoop, db: FreshDatabase) -> None:
        super().__init__()
        self.loop = loop
        # Each example empties the tables and starts over, on an engine and a Ledger of its own: a Ledger remembers
        # the accounts it saw for its lifetime (accounts are never deleted outside this test).
        self.engine: AsyncEngine = db.engine(pool_size=2)
        self.ledger = Ledger(self.engine)
        self.wallet = GameWallet(self.engine)
        self.model = Model()
        self.sent_transfers: list[tuple[TransferRequest, bool]] = []
        self.sent_games: list[tuple[str, GameRequest]] = []
        self.overdrafts = 0
        self.fresh = 0
        self.checks = 0
        self.opened = False
        self.run(self._wipe())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.engine.dispose())

    def _seen(self, outcome: str) -> None:
        if self.opened:  # what the opening does is no evidence that the rules reach it
            OUTCOMES[outcome] += 1

    async def _wipe(self) -> None:
        async with self.engine.begin() as conn:
            for table in (game_transactions, game_rounds, ledger_transfers, ledger_accounts):
                await conn.execute(delete(table))

    # ---- ledger actions ----------------------------------------------------------------------------------------

    def _transfer(self, req: TransferRequest, hold: bool) -> Err | tuple[Any, ...]:
        expected = self.model.create(req, hold)
        call = self.ledger.hold(req) if hold else self.ledger.post_transfer(req)
        actual = self.run(_outcome(call))
        if not isinstance(actual, Err):
            actual = transfer_view(actual)
        assert _same(expected, actual), f"{req} hold={hold}: expected {expected}, got {actual}"
        if not isinstance(actual, Err) and not actual[-1]:
            self.sent_transfers.append((req, hold))
        self._seen(f"transfer:{_label(actual, 'ok')}")
        return actual

    @initialize(deposits=st.lists(st.integers(0, 20_000), min_size=len(WALLETS), max_size=len(WALLETS)),
                holds=st.lists(st.integers(0, 3_000), min_size=len(PLAYERS), max_size=len(PLAYERS)),
                bets=st.lists(st.integers(0, 3_000), min_size=len(PLAYERS), max_size=len(PLAYERS)),
                settled=st.sampled_from(PLAYERS), reversed_=st.sampled_from(PLAYERS), small=st.integers(1, 500))
    def opening(self, deposits: list[int], holds: list[int], bets: list[int], settled: str, reversed_: str,
                small: int) -> None:
        """A varied starting state, so that every action can reach its interesting cases from the first step:
        money in most wallets; per player a pending withdrawal hold and an open bet in r0 (0: none; refused when
        too large); a bet in a round settled by a zero win; a bet rolled back; a tombstone. Every call is checked
        against the model like any other step (the invariants are checked once the opening is done)."""
        for (player, currency), amount in zip(WALLETS, deposits, strict=True):
            if amount:
                self.deposit(f"open_{player}_{currency}", player, currency, amount)
        for player, amount in zip(PLAYERS, holds, strict=True):
            if amount:
                self.debit(f"payout:open_{player}", player, "EUR", amount, hold=True, overdraw=False)
        for player, amount in zip(PLAYERS, bets, strict=True):
            if amount:
                self._game(BET, GameRequest(f"open-{player}", player, "EUR", amount, "r0", "slots"))
        self._game(BET, GameRequest("open-settled", settled, "EUR", small, "r1", "slots"))
        self._game(WIN, GameRequest("open-settles", settled, "EUR", 0, "r1", "slots"))
        self._game(BET, GameRequest("open-reversed", reversed_, "EUR", small, "r2", "slots"))
        self._game(ROLLBACK, GameRequest("open-reversal", reversed_, "EUR", None, "r2", "slots", "open-reversed"))
        self._game(ROLLBACK, GameRequest("open-tombstone", reversed_, "EUR", None, "r2", "slots", BET_IDS[-1]))
        self.opened = True

    @action(pay=st.sampled_from(PAY_IDS), player=st.sampled_from(PLAYERS), currency=st.sampled_from(CURRENCIES),
            amount=st.integers(1, 10_000))
    def deposit(self, pay: str, player: str, currency: str, amount: int) -> None:
        self._transfer(TransferRequest(f"deposit:{pay}:credit", psp_clearing_account(PSP, currency),
                                       player_account(player, currency), amount, currency, "deposit", pay), False)

    @action(payout=st.sampled_from(PAYOUT_IDS), player=st.sampled_from(PLAYERS), currency=st.sampled_from(CURRENCIES),
            amount=st.integers(1, 5_000), hold=st.booleans(), overdraw=st.sampled_from([False, False, True]))
    def debit(self, payout: str, player: str, currency: str, amount: int, hold: bool, overdraw: bool) -> None:
        """A withdrawal, held (two-phase) or posted at once. `overdraw` asks for `amount` beyond the available
        balance (held amounts count against it) under a fresh id: always refused, nothing moves."""
        account = player_account(player, currency)
        if overdraw:
            self.overdrafts += 1
            payout, amount = f"overdraft:{self.overdrafts}", self.model.available(account) + amount
        result = self._transfer(TransferRequest(payout, account, psp_clearing_account(PSP, currency), amount,
                                                currency, "payout", payout.replace(":", "_")), hold)
        if overdraw:
            assert isinstance(result, Err) and isinstance(result.exc, InsufficientFunds), result

    @action(pick=st.sampled_from(["hold", "hold", "hold", "any", "pool"]), i=st.integers(0, 1000),
            pooled=st.sampled_from(RESOLVE_IDS), post=st.booleans())
    def resolve(self, pick: str, i: int, pooled: str, post: bool) -> None:
        """Post or void: a hold the ledger has (pending, posted or voided), any accepted transfer (not a hold),
        or a pooled id (maybe unknown)."""
        ids = [req.id for req, hold in self.sent_transfers if hold or pick == "any"]
        transfer_id = ids[i % len(ids)] if pick != "pool" and ids else pooled
        target = POSTED if post else VOIDED
        expected = self.model.resolve(transfer_id, target)
        call = self.ledger.post_hold(transfer_id) if post else self.ledger.void_hold(transfer_id)
        actual = self.run(_outcome(call))
        if not isinstance(actual, Err):
            actual = transfer_view(actual)
        assert _same(expected, actual), f"resolve {transfer_id} -> {target}: expected {expected}, got {actual}"
        self._seen(f"resolve:{_label(actual, target)}")

    @action(i=st.integers(0, 1000), change=st.sampled_from([None, None, "amount", "reference", "hold", "account"]))
    def resend_transfer(self, i: int, change: str | None) -> None:
        """An accepted request again: byte for byte, its stored transfer; with another body, refused. Either way
        nothing moves."""
        if not self.sent_transfers:
            return
        req, hold = self.sent_transfers[i % len(self.sent_transfers)]
        if change == "amount":
            req = dataclasses.replace(req, amount=req.amount + 1)
        elif change == "reference":
            req = dataclasses.replace(req, reference=req.reference + "x")
        elif change == "hold":
            hold = not hold
        elif change == "account":
            owner = parse_account(req.credit_account).owner
            other = next(p for p in PLAYERS if p != owner)
            req = dataclasses.replace(req, credit_account=player_account(other, req.currency))
            if req.credit_account == req.debit_account:
                return
        result = self._transfer(req, hold)
        if change is None:
            assert not isinstance(result, Err) and result[-1], f"replay of {req} was not a replay: {result}"
        else:
            assert isinstance(result, Err) and isinstance(result.exc, TransferConflict), result

    # ---- game actions ------------------------------------------------------------------------------------------

    def _game(self, kind: str, req: GameRequest, refused: str | None = None) -> Err | tuple[str, bool]:
        transfers_before = len(self.model.transfers)
        bet_known = req.reference_transaction_id in self.model.games
        if kind == BET:
            expected, call = self.model.bet(req, refused), self.wallet.bet(req, refused=refused)
        elif kind == WIN:
            expected, call = self.model.win(req), self.wallet.win(req)
        else:
            expected, call = self.model.rollback(req), self.wallet.rollback(req)
        answer = self.run(_outcome(call))
        actual = answer if isinstance(answer, Err) else (answer.body, answer.replayed)
        assert _same(expected, actual), f"{kind} {req}: expected {expected}, got {actual}"
        if isinstance(actual, Err) or actual[1]:
            label = _label(actual, "")
        elif kind == WIN:
            label = "ok" if req.amount else "zero"
        elif kind == ROLLBACK:
            moved = len(self.model.transfers) > transfers_before
            label = "reversed" if moved else "no-op" if bet_known else "tombstone"
        else:
            label = "ok"
        self._seen(f"{kind}:{label}")
        if isinstance(answer, GameAnswer):
            assert answer.data["status"] == "ok"
            if not answer.replayed:
                self.sent_games.append((kind, req))
        return actual

    def _bet_fields(self, bet_id: str | None) -> GameRequest | None:
        row = self.model.games.get(bet_id) if bet_id else None
        return row.req if row is not None and row.kind == BET else None

    def _fresh(self, prefix: str) -> str:
        self.fresh += 1
        return f"{prefix}-{self.fresh}"

    def _ref(self, mode: str, pooled: str, i: int) -> str | None:
        """A bet reference: none; one of the model's bets (any, open, rolled back or tombstoned, in a settled
        round); a win or rollback; an id never used; or a pooled id (maybe unknown, maybe not a bet). Falls back to
        the pooled id when the model has no such transaction."""
        if mode == "none":
            return None
        if mode == "unknown":
            return self._fresh("nobet")
        games, transfers, rounds = self.model.games, self.model.transfers, self.model.rounds
        candidates = {
            "known": [tid for tid, row in games.items() if row.kind == BET],
            "open": [tid for tid, row in games.items()
                     if row.kind == BET and f"game:{tid}:rollback" not in transfers
                     and not rounds[(row.req.player_id, row.req.round_id)][1]],
            "rolled_back": [tid for tid, row in games.items()
                            if row.kind == TOMBSTONE or f"game:{tid}:rollback" in transfers],
            "settled": [tid for tid, row in games.items()
                        if row.kind == BET and rounds[(row.req.player_id, row.req.round_id)][1]],
            "not_a_bet": [tid for tid, row in games.items() if row.kind in (WIN, ROLLBACK)],
            "pool": [],
        }[mode]
        return candidates[i % len(candidates)] if candidates else pooled

    def _pick_tx(self, mode: str, pooled: str, kind: str, i: int, bet_id: str | None = None) -> str:
        """A fresh id; a pooled one (maybe taken, by any kind); one a rollback tombstoned; or the bet's own id."""
        if mode == "pool":
            return pooled
        if mode == "tombstone":
            tombstones = [tid for tid, row in self.model.games.items() if row.kind == TOMBSTONE]
            if tombstones:
                return tombstones[i % len(tombstones)]
        if mode == "bet's" and bet_id is not None:
            return bet_id
        return self._fresh(kind)

    @action(tx_mode=st.sampled_from(["fresh", "fresh", "fresh", "pool", "tombstone"]),
            pooled=st.sampled_from(GAME_IDS), player=st.sampled_from(PLAYERS), currency=st.sampled_from(CURRENCIES),
            amount=st.integers(1, 3000), round_id=st.sampled_from(ROUNDS), game=st.sampled_from(GAMES),
            refused=st.sampled_from([None] * 4 + ["self_excluded"]))
    def bet(self, tx_mode: str, pooled: str, player: str, currency: str, amount: int, round_id: str, game: str,
            refused: str | None) -> None:
        """A bet, maybe of a player who may not bet now (`refused`); under a fresh id, a pooled one (maybe taken)
        or one a rollback tombstoned (the late bet: refused)."""
        tx = self._pick_tx(tx_mode, pooled, BET, amount)
        self._game(BET, GameRequest(tx, player, currency, amount, round_id, game), refused)

    @action(tx_mode=st.sampled_from(["fresh", "fresh", "fresh", "pool"]), pooled=st.sampled_from(GAME_IDS),
            player=st.sampled_from(PLAYERS), currency=st.sampled_from(CURRENCIES),
            amount=st.sampled_from([0, 1]) | st.integers(0, 3000), round_id=st.sampled_from(ROUNDS),
            game=st.sampled_from(GAMES),
            ref_mode=st.sampled_from(["none", "open", "known", "rolled_back", "unknown", "pool"]),
            ref=st.sampled_from(GAME_IDS), i=st.integers(0, 1000), follow=st.sampled_from([True, True, True, False]))
    def win(self, tx_mode: str, pooled: str, player: str, currency: str, amount: int, round_id: str, game: str,
            ref_mode: str, ref: str, i: int, follow: bool) -> None:
        """A win, naming its bet or not; `follow` takes player, round and currency from the bet named, if known."""
        bet_id = self._ref(ref_mode, ref, i)
        if follow and (bet := self._bet_fields(bet_id)) is not None:
            player, currency, round_id = bet.player_id, bet.currency, bet.round_id
        tx = self._pick_tx(tx_mode, pooled, WIN, i)
        self._game(WIN, GameRequest(tx, player, currency, amount, round_id, game, bet_id))

    @action(tx_mode=st.sampled_from(["fresh", "fresh", "fresh", "fresh", "pool", "bet's"]),
            pooled=st.sampled_from(GAME_IDS), player=st.sampled_from(PLAYERS), currency=st.sampled_from(CURRENCIES),
            amount=st.sampled_from(["none", "bet's", "none", "bet's", "other"]), round_id=st.sampled_from(ROUNDS),
            game=st.sampled_from(GAMES),
            ref_mode=st.sampled_from(
                ["open", "open", "known", "rolled_back", "settled", "unknown", "not_a_bet", "pool"]),
            ref=st.sampled_from(GAME_IDS), i=st.integers(0, 1000), follow=st.sampled_from([True, True, True, False]))
    def rollback(self, tx_mode: str, pooled: str, player: str, currency: str, amount: str, round_id: str, game: str,
                 ref_mode: str, ref: str, i: int, follow: bool) -> None:
        """A rollback of a bet (open, rolled back, in a settled round, unknown, not a bet); `follow` copies the
        known bet's fields. A rollback under its bet's own id (tx_mode "bet's") is malformed."""
        bet_id = self._ref(ref_mode, ref, i)
        assert bet_id is not None
        bet = self._bet_fields(bet_id)
        if follow and bet is not None:
            player, currency, round_id = bet.player_id, bet.currency, bet.round_id
        value = None if amount == "none" else (bet.amount if bet and amount == "bet's" else 7)
        tx = self._pick_tx(tx_mode, pooled, ROLLBACK, i, bet_id)
        self._game(ROLLBACK, GameRequest(tx, player, currency, value, round_id, game, bet_id))

    @action(i=st.integers(0, 1000), which=st.sampled_from([BET, WIN, ROLLBACK]),
            change=st.sampled_from([None, None, "game_id", "amount", "kind"]))
    def resend_game(self, i: int, which: str, change: str | None) -> None:
        """An accepted game transaction (preferably a `which`) again: byte for byte, the stored answer (even for a
        bet of a player now refused); with another body or as another kind, a conflict. Nothing moves."""
        sent = [(kind, req) for kind, req in self.sent_games if kind == which] or self.sent_games
        if not sent:
            return
        kind, req = sent[i % len(sent)]
        if change is None:
            expected_body = self.model.games[req.transaction_id].body
            result = self._game(kind, req, refused="self_excluded" if i % 2 else None)
            assert result == (expected_body, True), result
            return
        if change == "game_id":
            req = dataclasses.replace(req, game_id=req.game_id + "-2")
        elif change == "amount":
            req = dataclasses.replace(req, amount=(req.amount or 0) + 1)
        else:
            kind = {BET: WIN, WIN: BET, ROLLBACK: WIN}[kind]
            req = dataclasses.replace(req, amount=max(req.amount or 1, 1), reference_transaction_id=None)
        result = self._game(kind, req)
        assert isinstance(result, Err) and isinstance(result.exc, GameTransactionConflict), result

    # ---- the rules -----------------------------------------------------------------------------------------------

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(list(ACTIONS)), label="action")
        OUTCOMES[f"action:{name}"] += 1
        getattr(self, name)(**data.draw(ACTIONS[name], label=name))

    # ---- after every step --------------------------------------------------------------------------------------

    @invariant()
    def ledger_equals_model(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        await assert_invariants(self.engine)
        async with self.engine.connect() as conn:
            accounts = {
                r.id: [r.posted_balance, r.pending_debits, r.pending_credits]
                for r in await conn.execute(select(ledger_accounts))
            }
            transfers = {
                r.id: (r.status, r.amount, r.debit_account_id, r.credit_account_id)
                for r in await conn.execute(select(ledger_transfers))
            }
            games = {
                r.transaction_id: (r.kind, r.response)
                for r in await conn.execute(select(game_transactions))
            }
            rounds = {
                (r.player_id, r.round_id): [r.currency, r.settled_at is not None]
                for r in await conn.execute(select(game_rounds))
            }
        model = self.model
        _assert_same("accounts (posted, pending debits, pending credits)", accounts, model.accounts)
        _assert_same("transfers (status, amount, debit, credit)", transfers, {
            tid: (t.status, t.req.amount, t.req.debit_account, t.req.credit_account)
            for tid, t in model.transfers.items()
        })
        _assert_same("game transactions (kind, stored answer)", games,
                     {tid: (g.kind, g.body) for tid, g in model.games.items()})
        _assert_same("game rounds (currency, settled)", rounds, model.rounds)
        # The public read path agrees too: a player's available and held amounts per currency (one player a step,
        # in turn, to keep PostgreSQL round trips down; the rows above already cover every account).
        self.checks += 1
        player = PLAYERS[self.checks % len(PLAYERS)]
        balances = await self.ledger.player_balances(player)
        expected = {
            parse_account(a).currency: (v[0] - v[1], v[1])
            for a, v in model.accounts.items()
            if parse_account(a).kind == PLAYER and parse_account(a).owner == player
        }
        assert {b.currency: (b.available, b.pending_debits) for b in balances} == expected
        assert all(b.available >= 0 for b in balances)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ledger_state_machine(backend: str, tmp_path: Path) -> None:
    # A loop of our own: Hypothesis calls the rules synchronously, and pytest-asyncio's loop is not running here.
    loop = asyncio.new_event_loop()
    try:
        db = loop.run_until_complete(FreshDatabase(backend, tmp_path).__aenter__())
        try:
            OUTCOMES.clear()
            run_state_machine_as_test(lambda: LedgerMachine(loop, db), settings=SETTINGS)
            missing = MUST_SEE - set(OUTCOMES)
            assert not missing, f"the machine never reached {sorted(missing)}; seen: {dict(OUTCOMES)}"
        finally:
            loop.run_until_complete(db.__aexit__(None, None, None))
    finally:
        loop.close()
