"""The wallet ledger: idempotent double-entry transfers and two-phase holds.

Every balance change happens in SQL as `balance = balance + move` (never read-then-write in Python), the floor
is the accounts table's CHECK constraint, and accounts are always locked in sorted-id order. On PostgreSQL a
transfer between accounts the process has seen is one statement: a round trip, its row locks held only inside
the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, and_, bindparam, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.accounts import PLAYER, parse_account
from ledger.errors import (
    CurrencyMismatch,
    HoldAlreadyResolved,
    InsufficientFunds,
    InvalidTransfer,
    NotAHold,
    TransferConflict,
    TransferNotFound,
)
from ledger.models import ledger_accounts as accounts
from ledger.models import ledger_transfers as transfers
from payloop.db import insert_if_missing, utcnow
from payloop.money import CURRENCY_EXPONENTS, MAX_MINOR_UNITS

POSTED = "posted"
PENDING = "pending"
VOIDED = "voided"

# PostgreSQL serialization_failure / deadlock_detected: the whole transaction is safe to run again.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
_MAX_ATTEMPTS = 5

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TransferRequest:
    id: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    kind: str
    reference: str
    metadata: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    kind: str
    reference: str
    status: str
    created_at: datetime
    replayed: bool = False
    metadata: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account_id: str
    currency: str
    kind: str
    posted: int
    pending_debits: int
    pending_credits: int
    available: int  # posted - pending_debits: what the owner can spend now


def fingerprint(req: TransferRequest, *, hold: bool) -> str:
    body = {
        "debit": req.debit_account,
        "credit": req.credit_account,
        "amount": req.amount,
        "currency": req.currency,
        "kind": req.kind,
        "reference": req.reference,
        "hold": hold,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _Overdraft(Exception):
    """Raised inside a transaction to roll it back; turned into InsufficientFunds afterwards."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id


class Ledger:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # Account rows this Ledger saw committed in its engine's database. Accounts are never deleted, so they stay
        # true for the Ledger's lifetime: whoever replaces the database under an engine makes a new Ledger with it.
        self._known_accounts: set[str] = set()
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database dialect {engine.dialect.name!r}")

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    # ---- writes ---------------------------------------------------------------------------------------

    async def post_transfer(self, req: TransferRequest) -> Transfer:
        """Post `req` at once, exactly once per id; raises InsufficientFunds if the debit side would overdraw."""
        return await self._create(req, hold=False)

    async def hold(self, req: TransferRequest) -> Transfer:
        """Reserve `req.amount` (a pending transfer); it counts against the debit account's available balance."""
        return await self._create(req, hold=True)

    async def post_hold(self, transfer_id: str) -> Transfer:
        return await self._resolve(transfer_id, POSTED)

    async def void_hold(self, transfer_id: str) -> Transfer:
        return await self._resolve(transfer_id, VOIDED)

    async def transaction(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `fn` in one database transaction, rerun from scratch on a PostgreSQL serialization failure."""
        return await self._run(fn)

    async def post_transfer_in(self, conn: AsyncConnection, req: TransferRequest) -> Transfer:
        """post_transfer inside a `transaction()` of the caller, so the caller's own rows commit with the posting.

        An overdraft raises out of `fn`; `transaction()` rolls everything back and raises InsufficientFunds.
        """
        _validate(req)
        return await self._create_tx(conn, req, fingerprint(req, hold=False), hold=False)

    async def post_transfers_in(self, conn: AsyncConnection, requests: Sequence[TransferRequest]) -> list[Transfer]:
        """Post many transfers inside the caller's transaction, in bulk: one multi-row insert of the new ones, then
        one balance UPDATE per account with the sum of its moves, in sorted-id order (so the rows are locked in
        that order, as everywhere). The Transfers in the order of `requests`.

        Idempotent per id like post_transfer_in: an id already posted with the same body is a replay and moves
        nothing, with another body a TransferConflict. Only unbounded accounts may be debited (a floor would need
        each transfer checked on its own): a bounded debit account is an InvalidTransfer.
        """
        fingerprints = _bulk_fingerprints(requests)
        if not fingerprints:
            return []
        firsts = list({req.id: req for req in requests}.values())  # one per id (same id, same body: checked)
        now = utcnow()
        moves: dict[str, int] = {}
        for req in firsts:
            moves[req.debit_account] = moves.get(req.debit_account, 0)
            moves[req.credit_account] = moves.get(req.credit_account, 0)
        await _ensure_accounts(conn, [{"id": account_id} for account_id in sorted(moves)], now)
        inserted = await _insert_new_transfers(conn, [_transfer_row(req, fingerprints[req.id], now) for req in firsts])
        replayed = await _replayed(conn, [req.id for req in firsts if req.id not in inserted], fingerprints)
        for req in firsts:
            if req.id in inserted:
                moves[req.debit_account] -= req.amount
                moves[req.credit_account] += req.amount
        changed = [{"b_id": account_id, "b_move": move} for account_id, move in sorted(moves.items()) if move]
        if changed:
            await conn.execute(
                update(accounts).where(accounts.c.id == bindparam("b_id"))
                .values(posted_balance=accounts.c.posted_balance + bindparam("b_move"), updated_at=now),
                changed,
            )
        seen: set[str] = set()
        result = []
        for req in requests:
            if req.id in inserted and req.id not in seen:
                result.append(_posted(req, now))
            else:
                result.append(replayed.get(req.id) or replace(_posted(req, now), replayed=True))
            seen.add(req.id)
        return result

    async def hold_in(self, conn: AsyncConnection, req: TransferRequest) -> Transfer:
        """hold inside a `transaction()` of the caller (see post_transfer_in)."""
        _validate(req)
        return await self._create_tx(conn, req, fingerprint(req, hold=True), hold=True)

    async def post_hold_in(self, conn: AsyncConnection, transfer_id: str) -> Transfer:
        return await self._resolve_tx(conn, transfer_id, POSTED)

    async def void_hold_in(self, conn: AsyncConnection, transfer_id: str) -> Transfer:
        return await self._resolve_tx(conn, transfer_id, VOIDED)

    async def lock_accounts_in(self, conn: AsyncConnection, account_ids: Iterable[str]) -> dict[str, AccountBalance]:
        """Create the accounts that are missing, then lock all of them in sorted-id order until the caller's
        transaction ends; their balances as locked.

        A caller that moves several transfers in one transaction locks every account they touch first: each
        transfer alone updates its two accounts in sorted order, but two transfers in a row would not. (SQLite
        needs no row locks: its transactions take the write lock up front.)
        """
        ids = sorted(set(account_ids))
        if not ids:
            return {}
        await _ensure_accounts(conn, [{"id": account_id} for account_id in ids], utcnow())
        rows = await conn.execute(
            select(accounts).where(accounts.c.id.in_(ids)).order_by(accounts.c.id).with_for_update()
        )
        return {row.id: _to_balance(row) for row in rows}

    async def _create(self, req: TransferRequest, *, hold: bool) -> Transfer:
        _validate(req)
        fp = fingerprint(req, hold=hold)
        if self._engine.dialect.name == "postgresql" and self._known_accounts.issuperset(
            (req.debit_account, req.credit_account)
        ):
            # Both accounts exist: one statement in autocommit (atomic on its own) instead of BEGIN, five
            # statements and COMMIT — the ledger benchmark was bound by those round trips.
            return await self._run(lambda conn: self._create_tx(conn, req, fp, hold, ensure_accounts=False),
                                   autocommit=True)
        transfer = await self._run(lambda conn: self._create_tx(conn, req, fp, hold))
        if len(self._known_accounts) >= _KNOWN_ACCOUNTS_MAX:
            self._known_accounts.clear()
        self._known_accounts.update((req.debit_account, req.credit_account))
        return transfer

    async def _create_tx(
        self, conn: AsyncConnection, req: TransferRequest, fp: str, hold: bool, *, ensure_accounts: bool = True
    ) -> Transfer:
        """Insert the transfer unless its id exists, and only then move both balances.

        The floor is the accounts table's CHECK constraint, checked by the database on every balance change.
        """
        now = utcnow()
        status = PENDING if hold else POSTED
        moves = _balance_moves(req, hold)
        if ensure_accounts:
            await _ensure_accounts(conn, moves, now)
        transfer_row = {
            "id": req.id, "debit_account_id": req.debit_account, "credit_account_id": req.credit_account,
            "amount": req.amount, "currency": req.currency, "kind": req.kind, "reference": req.reference,
            "status": status, "fingerprint": fp, "metadata": req.metadata, "created_at": now,
        }
        try:
            if conn.dialect.name == "postgresql":
                inserted = await _insert_and_move_postgresql(conn, transfer_row, moves)
            else:
                inserted = await _insert_and_move_sqlite(conn, transfer_row, moves)
        except IntegrityError as err:
            if _FLOOR_CONSTRAINT in str(err.orig):
                raise _Overdraft(req.debit_account) from None
            raise
        if not inserted:  # a replay, or a concurrent request with the same id committed first
            existing = (await conn.execute(select(transfers).where(transfers.c.id == req.id))).one()
            if existing.fingerprint != fp:
                raise TransferConflict(req.id)
            return _to_transfer(existing, replayed=True)
        return Transfer(
            id=req.id,
            debit_account=req.debit_account,
            credit_account=req.credit_account,
            amount=req.amount,
            currency=req.currency,
            kind=req.kind,
            reference=req.reference,
            status=status,
            created_at=now,
            metadata=req.metadata,
        )

    async def _resolve(self, transfer_id: str, target: str) -> Transfer:
        return await self._run(lambda conn: self._resolve_tx(conn, transfer_id, target))

    async def _resolve_tx(self, conn: AsyncConnection, transfer_id: str, target: str) -> Transfer:
        now = utcnow()
        # The status guard makes concurrent post/void calls resolve a hold exactly once.
        won = (
            await conn.execute(
                update(transfers)
                .where(transfers.c.id == transfer_id, transfers.c.status == PENDING)
                .values(status=target, resolved_at=now)
                .returning(*transfers.c)
            )
        ).one_or_none()
        if won is None:
            row = (await conn.execute(select(transfers).where(transfers.c.id == transfer_id))).one_or_none()
            if row is None:
                raise TransferNotFound(transfer_id)
            if row.resolved_at is None:
                raise NotAHold(transfer_id)
            if row.status != target:
                raise HoldAlreadyResolved(transfer_id, row.status)
            return _to_transfer(row, replayed=True)

        amount = won.amount
        post = target == POSTED
        for account_id in sorted((won.debit_account_id, won.credit_account_id)):
            if account_id == won.debit_account_id:
                # Moving a hold to posted leaves available (posted - pending_debits) unchanged: no floor check.
                values: dict[str, Any] = {"pending_debits": accounts.c.pending_debits - amount}
                if post:
                    values["posted_balance"] = accounts.c.posted_balance - amount
            else:
                values = {"pending_credits": accounts.c.pending_credits - amount}
                if post:
                    values["posted_balance"] = accounts.c.posted_balance + amount
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values, updated_at=now))
        return _to_transfer(won, replayed=False)

    async def _run(self, fn: Callable[[AsyncConnection], Awaitable[T]], *, autocommit: bool = False) -> T:
        """Run `fn` in one transaction (or, with `autocommit`, its single statement on its own), from scratch again
        after a PostgreSQL serialization failure, deadlock or dropped connection; an overdraft rolls back and
        raises InsufficientFunds."""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                if autocommit:
                    async with self._autocommit.connect() as conn:
                        return await fn(conn)
                async with self._engine.begin() as conn:
                    return await fn(conn)
            except _Overdraft as e:
                balance = await self.account_balance(e.account_id)
                raise InsufficientFunds(e.account_id, balance.available if balance else 0) from None
            except DBAPIError as e:
                # A dropped connection may have committed or not: every write here is idempotent by its id, so
                # running it again either does it or answers the replay.
                retryable = e.connection_invalidated or getattr(e.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES
                if attempt == _MAX_ATTEMPTS or not retryable:
                    raise
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")

    # ---- reads ----------------------------------------------------------------------------------------

    async def get_transfer(self, transfer_id: str) -> Transfer | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(transfers).where(transfers.c.id == transfer_id))).one_or_none()
        return _to_transfer(row) if row else None

    async def account_balance(self, account_id: str) -> AccountBalance | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).one_or_none()
        return _to_balance(row) if row else None

    async def player_balances(self, player_id: str) -> list[AccountBalance]:
        """One balance per currency the player has ever used, ordered by currency."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(accounts)
                .where(accounts.c.owner == player_id, accounts.c.kind == PLAYER)
                .order_by(accounts.c.currency)
            )
            return [_to_balance(r) for r in rows]

    async def last_credit(self, account_id: str, kind: str) -> Transfer | None:
        """The newest posted `kind` transfer credited to the account (e.g. a player's last deposit)."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(transfers)
                    .where(transfers.c.credit_account_id == account_id, transfers.c.kind == kind,
                           transfers.c.status == POSTED)
                    .order_by(transfers.c.created_at.desc(), transfers.c.id.desc())
                    .limit(1)
                )
            ).first()
        return _to_transfer(row) if row else None

    async def player_debits_since(self, player_id: str, kind: str, since: datetime) -> list[tuple[int, str]]:
        """(amount, currency) of every `kind` transfer debited from the player since `since`, held or posted."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(transfers.c.amount, transfers.c.currency)
                .join(accounts, accounts.c.id == transfers.c.debit_account_id)
                .where(accounts.c.owner == player_id, accounts.c.kind == PLAYER, transfers.c.kind == kind,
                       transfers.c.status.in_((POSTED, PENDING)), transfers.c.created_at >= since)
            )
            return [(int(amount), currency) for amount, currency in rows]

    async def account_transfers(self, account_id: str, limit: int = 50, before: str | None = None) -> list[Transfer]:
        """Transfers touching the account, newest first; `before` is the last id of the previous page."""
        query = (
            select(transfers)
            .where(or_(transfers.c.debit_account_id == account_id, transfers.c.credit_account_id == account_id))
            .order_by(transfers.c.created_at.desc(), transfers.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            if before is not None:
                cursor = (
                    await conn.execute(select(transfers.c.created_at).where(transfers.c.id == before))
                ).scalar_one_or_none()
                if cursor is None:
                    raise TransferNotFound(before)
                query = query.where(
                    or_(
                        transfers.c.created_at < cursor,
                        and_(transfers.c.created_at == cursor, transfers.c.id < before),
                    )
                )
            return [_to_transfer(r) for r in await conn.execute(query)]


_FLOOR_CONSTRAINT = "ck_ledger_accounts_floor"
_KNOWN_ACCOUNTS_MAX = 100_000

# The transfer first; the first account (in sorted-id order, so concurrent transfers lock rows in one order)
# moves only if the transfer was inserted, the second only after the first.
_INSERT_AND_MOVE_POSTGRESQL = text("""
WITH new_transfer AS (
    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, currency, kind, reference,
                                  status, fingerprint, metadata, created_at)
    VALUES (:id, :debit_account_id, :credit_account_id, :amount, :currency, :kind, :reference,
            :status, :fingerprint, :metadata, :created_at)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), first_account AS (
    UPDATE ledger_accounts
    SET posted_balance = posted_balance + :a_posted_balance, pending_debits = pending_debits + :a_pending_debits,
        pending_credits = pending_credits + :a_pending_credits, updated_at = :created_at
    WHERE id = :a_id AND EXISTS (SELECT FROM new_transfer)
    RETURNING id
), second_account AS (
    UPDATE ledger_accounts
    SET posted_balance = posted_balance + :b_posted_balance, pending_debits = pending_debits + :b_pending_debits,
        pending_credits = pending_credits + :b_pending_credits, updated_at = :created_at
    WHERE id = :b_id AND EXISTS (SELECT FROM first_account)
    RETURNING id
)
SELECT (SELECT count(*) FROM new_transfer) AS inserted,
       (SELECT count(*) FROM first_account) + (SELECT count(*) FROM second_account) AS moved
""").bindparams(
    bindparam("metadata", type_=transfers.c.metadata.type),
    bindparam("created_at", type_=transfers.c.created_at.type),
)


async def _insert_and_move_postgresql(
    conn: AsyncConnection, transfer_row: dict[str, Any], moves: list[dict[str, Any]]
) -> bool:
    first, second = moves
    params = transfer_row | {f"a_{k}": v for k, v in first.items()} | {f"b_{k}": v for k, v in second.items()}
    inserted, moved = (await conn.execute(_INSERT_AND_MOVE_POSTGRESQL, params)).one()
    # Both rows existed before this statement began (ensured earlier in its transaction or committed), so the
    # updates found them; a failure here would be a bug, never a state the ledger may be left in.
    assert moved == 2 * inserted, f"transfer {transfer_row['id']}: {moved} balances moved"
    return bool(inserted)


async def _insert_and_move_sqlite(
    conn: AsyncConnection, transfer_row: dict[str, Any], moves: list[dict[str, Any]]
) -> bool:
    if not await insert_if_missing(conn, transfers, transfer_row):
        return False
    for move in moves:
        await conn.execute(
            update(accounts)
            .where(accounts.c.id == move["id"])
            .values(
                posted_balance=accounts.c.posted_balance + move["posted_balance"],
                pending_debits=accounts.c.pending_debits + move["pending_debits"],
                pending_credits=accounts.c.pending_credits + move["pending_credits"],
                updated_at=transfer_row["created_at"],
            )
        )
    return True


async def _ensure_accounts(conn: AsyncConnection, moves: list[dict[str, Any]], now: datetime) -> None:
    rows = []
    for move in moves:
        kind, owner, currency, floor = parse_account(move["id"])
        rows.append({"id": move["id"], "currency": currency, "kind": kind, "owner": owner, "floor": floor,
                     "created_at": now, "updated_at": now})
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    await conn.execute(insert_(accounts).values(rows).on_conflict_do_nothing())


def _bulk_fingerprints(requests: Sequence[TransferRequest]) -> dict[str, str]:
    """Each id's fingerprint, after validating every request for post_transfers_in; the same id twice with two
    bodies is a TransferConflict."""
    fingerprints: dict[str, str] = {}
    for req in requests:
        _validate(req)
        if parse_account(req.debit_account).floor is not None:
            raise InvalidTransfer(f"transfer {req.id}: a bulk posting debits unbounded accounts only, "
                                  f"not {req.debit_account}")
        fp = fingerprint(req, hold=False)
        if fingerprints.setdefault(req.id, fp) != fp:
            raise TransferConflict(req.id)
    return fingerprints


def _transfer_row(req: TransferRequest, fp: str, now: datetime) -> dict[str, Any]:
    return {"id": req.id, "debit_account_id": req.debit_account, "credit_account_id": req.credit_account,
            "amount": req.amount, "currency": req.currency, "kind": req.kind, "reference": req.reference,
            "status": POSTED, "fingerprint": fp, "metadata": req.metadata, "created_at": now}


def _posted(req: TransferRequest, now: datetime) -> Transfer:
    return Transfer(id=req.id, debit_account=req.debit_account, credit_account=req.credit_account,
                    amount=req.amount, currency=req.currency, kind=req.kind, reference=req.reference,
                    status=POSTED, created_at=now, metadata=req.metadata)


async def _insert_new_transfers(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
    """INSERT … ON CONFLICT DO NOTHING of every row in as few statements as the driver allows (SQLAlchemy's
    insertmanyvalues); the ids this call inserted."""
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    result = await conn.execute(insert_(transfers).on_conflict_do_nothing().returning(transfers.c.id), rows)
    return set(result.scalars())


async def _replayed(conn: AsyncConnection, ids: list[str], fingerprints: dict[str, str]) -> dict[str, Transfer]:
    """The stored transfers of ids that existed: replays when posted with the same body, else TransferConflict."""
    if not ids:
        return {}
    stored = {}
    for row in await conn.execute(select(transfers).where(transfers.c.id.in_(ids))):
        if row.fingerprint != fingerprints[row.id]:
            raise TransferConflict(row.id)
        stored[row.id] = _to_transfer(row, replayed=True)
    return stored


def _balance_moves(req: TransferRequest, hold: bool) -> list[dict[str, Any]]:
    """What the transfer adds to each account's balances, sorted by account id."""
    debit = {"id": req.debit_account, "posted_balance": 0 if hold else -req.amount,
             "pending_debits": req.amount if hold else 0, "pending_credits": 0}
    credit = {"id": req.credit_account, "posted_balance": 0 if hold else req.amount,
              "pending_debits": 0, "pending_credits": req.amount if hold else 0}
    return sorted((debit, credit), key=lambda move: move["id"])


def check_minor_units(what: str, value: object, *, lowest: int = 1) -> None:
    """InvalidTransfer unless `value` is an int (not a bool) of minor units in lowest..MAX_MINOR_UNITS."""
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= MAX_MINOR_UNITS:
        raise InvalidTransfer(f"{what}'s amount must be an integer number of minor units in "
                              f"{lowest}..{MAX_MINOR_UNITS}, not {value!r}")


def _validate(req: TransferRequest) -> None:
    if not isinstance(req.id, str) or not 0 < len(req.id) <= 200:
        raise InvalidTransfer("transfer id must be a non-empty string of at most 200 characters")
    check_minor_units("a transfer", req.amount)
    if req.currency not in CURRENCY_EXPONENTS:
        raise InvalidTransfer(f"unsupported currency {req.currency!r}")
    if req.debit_account == req.credit_account:
        raise InvalidTransfer("debit and credit accounts must differ")
    if not req.kind or not req.reference or len(req.kind) > 32 or len(req.reference) > 200:
        raise InvalidTransfer("kind (max 32 chars) and reference (max 200 chars) are required")
    if req.metadata is not None and not (
        isinstance(req.metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in req.metadata.items())
    ):
        raise InvalidTransfer("metadata must be a dict of strings")
    for account_id in (req.debit_account, req.credit_account):
        currency = parse_account(account_id).currency
        if currency != req.currency:
            raise CurrencyMismatch(account_id, currency, req.currency)


def _to_transfer(row: Row[Any], replayed: bool = False) -> Transfer:
    return Transfer(
        id=row.id,
        debit_account=row.debit_account_id,
        credit_account=row.credit_account_id,
        amount=row.amount,
        currency=row.currency,
        kind=row.kind,
        reference=row.reference,
        status=row.status,
        created_at=row.created_at,
        replayed=replayed,
        metadata=row._mapping["metadata"],
    )


def _to_balance(row: Row[Any]) -> AccountBalance:
    return AccountBalance(
        account_id=row.id,
        currency=row.currency,
        kind=row.kind,
        posted=row.posted_balance,
        pending_debits=row.pending_debits,
        pending_credits=row.pending_credits,
        available=row.posted_balance - row.pending_debits,
    )
