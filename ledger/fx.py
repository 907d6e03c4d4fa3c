"""Conversions in the ledger: both legs through the house's FX accounts, so each currency still sums to zero.

A USD 100.00 deposit into a EUR wallet at a locked mid rate of 0.9210 with a 50 bps spread:
- USD leg: `deposit:<id>:credit` psp:<psp>:USD → house:fx:USD 100.00 (the deposit's credit, as without conversion);
- EUR leg: `fx:deposit:<id>:wallet` house:fx:EUR → player:<id>:EUR 91.63 (rate less the spread, rounded down),
  `fx:deposit:<id>:margin` house:fx:EUR → house:fx_margin:EUR 0.47 (the mid value 92.10 less what was credited).

A EUR wallet's USD 100.00 payout at the same lock: the hold `payout:<id>:hold` player:<id>:EUR → house:fx:EUR 92.57
(rate plus the spread, rounded up); when it is posted, `fx:payout:<id>:paid` house:fx:USD → house:payouts:USD
100.00 and `fx:payout:<id>:margin` house:fx:EUR → house:fx_margin:EUR 0.47; a voided hold books nothing else.

A refund or chargeback of a converted deposit gives back its share of the conversion at the deposit's locked rate
(`FxReturn`, legs `fx:<refund|dispute>:<id>:<wallet|shortfall|margin>`, kinds fx_*_return, referencing the
deposit): the player's wallet currency is debited, the payment currency is paid out of house:fx, and the house
gives up the margin's share too (it keeps no margin on money it hands back), so a deposit refunded in full leaves
house:fx and house:fx_margin where they were before it. Shares are proportional to the amount, rounded up (the
player never keeps more than was credited for what comes back), never more than what is left of the credit and
the margin, and the one that takes the last of the credit takes exactly what is left.

house:fx:<CUR> is the house's open position per currency (what treasury trades away); house:fx_margin:<CUR> the
spread earned, read by the margin report. Each conversion's row in `fx_conversions` (written in the transaction
that books its legs) records the locked quote for audit: rate, spread, source, rate id and expiry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import transfer_ids
from ledger.accounts import house_account, payouts_account, player_account, player_receivables_account
from ledger.models import ledger_transfers as transfers
from ledger.models import payments
from ledger.service import Ledger, TransferRequest
from payloop.db import UtcDateTime, insert_if_missing, metadata

DEPOSIT, PAYOUT = "deposit", "payout"
REFUND, DISPUTE = "refund", "dispute"  # what gives a converted deposit back (FxReturn.operation)
WALLET_KIND, MARGIN_KIND, PAID_KIND = "fx_wallet", "fx_margin", "fx_paid"  # transfer kinds of the legs
# A return's legs (reference: the deposit's payment id): the player's wallet share, the part of it the balance
# lacked (a receivable), the margin's share.
WALLET_RETURN_KIND, SHORTFALL_RETURN_KIND, MARGIN_RETURN_KIND = "fx_wallet_return", "fx_shortfall_return", \
    "fx_margin_return"
RETURN_KINDS = (WALLET_RETURN_KIND, SHORTFALL_RETURN_KIND, MARGIN_RETURN_KIND)
_RETURN_LEGS = ((WALLET_RETURN_KIND, "wallet"), (SHORTFALL_RETURN_KIND, "shortfall"), (MARGIN_RETURN_KIND, "margin"))

fx_conversions = sa.Table(
    "fx_conversions",
    metadata,
    sa.Column("reference", sa.String(100), primary_key=True),  # the payment or payout id
    sa.Column("kind", sa.String(10), primary_key=True),  # deposit | payout
    sa.Column("player_id", sa.String(100), nullable=False),
    sa.Column("method", sa.String(40)),
    sa.Column("psp", sa.String(40)),
    sa.Column("from_currency", sa.String(3), nullable=False),  # the payment's
    sa.Column("from_minor", sa.BigInteger, nullable=False),
    sa.Column("to_currency", sa.String(3), nullable=False),  # the wallet's
    sa.Column("to_minor", sa.BigInteger, nullable=False),  # credited to / charged from the wallet
    sa.Column("mid_minor", sa.BigInteger, nullable=False),
    sa.Column("margin_minor", sa.BigInteger, nullable=False),
    sa.Column("rate", sa.String(32), nullable=False),  # the locked mid rate, as quoted
    sa.Column("spread_bps", sa.Integer, nullable=False),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column("rate_id", sa.String(100), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=False),  # as the source said it (audit)
    sa.Column("booked_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("from_minor > 0 AND to_minor >= 0 AND margin_minor >= 0", name="fx_amounts"),
    sa.CheckConstraint("kind IN ('deposit', 'payout')", name="fx_kind"),
)


@dataclass(frozen=True, slots=True)
class FxConversion:
    """One conversion as booked: the payment side (`from_*`), the wallet side (`to_*`) and the locked quote."""

    reference: str
    kind: str
    player_id: str
    from_currency: str
    from_minor: int
    to_currency: str
    to_minor: int
    mid_minor: int
    margin_minor: int
    rate: str
    spread_bps: int
    source: str
    rate_id: str
    expires_at: str
    method: str | None = None
    psp: str | None = None


def fx_account(currency: str) -> str:
    return house_account("fx", currency)


def fx_margin_account(currency: str) -> str:
    return house_account("fx_margin", currency)


def deposit_legs(c: FxConversion) -> list[TransferRequest]:
    """The wallet-currency leg of a converted deposit (its payment-currency leg is the deposit's credit)."""
    return _nonzero([
        TransferRequest(transfer_ids.fx(DEPOSIT, c.reference, "wallet"), fx_account(c.to_currency),
                        player_account(c.player_id, c.to_currency), c.to_minor, c.to_currency, WALLET_KIND,
                        c.reference),
        _margin_leg(c),
    ])


def payout_legs(c: FxConversion) -> list[TransferRequest]:
    """What a converted payout books when its hold (player → house:fx, in the wallet currency) is posted."""
    return _nonzero([
        TransferRequest(transfer_ids.fx(PAYOUT, c.reference, "paid"), fx_account(c.from_currency),
                        payouts_account(c.from_currency), c.from_minor, c.from_currency, PAID_KIND, c.reference),
        _margin_leg(c),
    ])


def leg_accounts(legs: list[TransferRequest]) -> list[str]:
    return [account for leg in legs for account in (leg.debit_account, leg.credit_account)]


async def record_conversion(conn: AsyncConnection, c: FxConversion, now: datetime) -> None:
    """The conversion's row, once (a replay of the booking finds it)."""
    await insert_if_missing(conn, fx_conversions, asdict(c) | {"booked_at": now})


async def conversion(engine: AsyncEngine, kind: str, reference: str) -> FxConversion | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(fx_conversions).where(
            fx_conversions.c.kind == kind, fx_conversions.c.reference == reference))).one_or_none()
    if row is None:
        return None
    values = row._asdict()
    values.pop("booked_at")
    return FxConversion(**values)


def payout_hold(c: FxConversion) -> TransferRequest:
    """A converted payout's hold: the wallet amount, player → house:fx (not house:payouts, which is paid in the
    payout's own currency when the hold is posted)."""
    return TransferRequest(transfer_ids.payout_hold(c.reference), player_account(c.player_id, c.to_currency),
                           fx_account(c.to_currency), c.to_minor, c.to_currency, PAYOUT, c.reference)


async def post_converted_payout(ledger: Ledger, c: FxConversion, now: datetime) -> None:
    """Posts the payout's hold and books its payout-currency leg, its margin and its row: one transaction; a
    replay moves nothing."""
    legs = payout_legs(c)
    hold = payout_hold(c)

    async def tx(conn: AsyncConnection) -> None:
        await ledger.lock_accounts_in(conn, leg_accounts([hold, *legs]))
        await ledger.post_hold_in(conn, hold.id)
        await ledger.post_transfers_in(conn, legs)
        await record_conversion(conn, c, now)

    await ledger.transaction(tx)


def _margin_leg(c: FxConversion) -> TransferRequest:
    return TransferRequest(transfer_ids.fx(c.kind, c.reference, "margin"), fx_account(c.to_currency),
                           fx_margin_account(c.to_currency), c.margin_minor, c.to_currency, MARGIN_KIND, c.reference)


def _nonzero(legs: list[TransferRequest]) -> list[TransferRequest]:
    # A tiny amount can convert to nothing (or at no margin): a transfer of zero is no transfer.
    return [leg for leg in legs if leg.amount > 0]


# ---- refunds and chargebacks of a converted deposit -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FxReturn:
    """A refund's or dispute's share of a converted deposit (`conversion`), the wallet side in its currency."""

    conversion: FxConversion
    operation: str  # refund | dispute
    key: str  # the refund id or the dispute key
    amount_minor: int  # in the payment currency
    held_minor: int  # taken from the player's wallet balance
    shortfall_minor: int  # what the balance lacked: a player receivable
    margin_minor: int  # the margin the house gives up

    def payment_split(self) -> tuple[int, int]:
        """`amount_minor` split like the wallet share (held, shortfall): the refund's or dispute's row."""
        wallet_minor = self.held_minor + self.shortfall_minor
        if not self.shortfall_minor:
            return self.amount_minor, 0
        held = self.amount_minor * self.held_minor // wallet_minor
        return held, self.amount_minor - held

    def legs(self) -> list[TransferRequest]:
        """Wallet currency → house:fx (pending until the refund or dispute is final); the payment-currency side is
        the refund's or dispute's own moves, out of house:fx."""
        c, to = self.conversion, self.conversion.to_currency
        debits = {WALLET_RETURN_KIND: (player_account(c.player_id, to), self.held_minor),
                  SHORTFALL_RETURN_KIND: (player_receivables_account(to), self.shortfall_minor),
                  MARGIN_RETURN_KIND: (fx_margin_account(to), self.margin_minor)}
        return _nonzero([TransferRequest(transfer_ids.fx(self.operation, self.key, leg), debits[kind][0],
                                         fx_account(to), debits[kind][1], to, kind, c.reference)
                         for kind, leg in _RETURN_LEGS])


def return_accounts(c: FxConversion) -> list[str]:
    """Every account a return of `c` may touch in the wallet currency (lock them before moving any)."""
    to = c.to_currency
    return [player_account(c.player_id, to), player_receivables_account(to), fx_account(to), fx_margin_account(to)]


async def deposit_conversion_in(conn: AsyncConnection, payment_id: str) -> FxConversion | None:
    row = (await conn.execute(sa.select(fx_conversions).where(
        fx_conversions.c.kind == DEPOSIT, fx_conversions.c.reference == payment_id))).one_or_none()
    if row is None:
        return None
    values = row._asdict()
    values.pop("booked_at")
    return FxConversion(**values)


async def plan_return(ledger: Ledger, conn: AsyncConnection, c: FxConversion, *, operation: str, key: str,
                      amount_minor: int, allow_shortfall: bool, lock_also: list[str]) -> FxReturn:
    """The share of `c` that `amount_minor` (already reserved on the payment row) gives back, split between the
    player's available balance and, when `allow_shortfall`, a receivable. Locks the return's accounts and
    `lock_also` in one sorted batch. Without a shortfall the whole share is asked of the balance (the hold then
    raises InsufficientFunds when it is short)."""
    t = transfers.c
    live = (t.reference == c.reference) & t.status.in_(("pending", "posted"))
    wallet_taken, margin_taken = (await conn.execute(sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((t.kind.in_((WALLET_RETURN_KIND, SHORTFALL_RETURN_KIND)), t.amount),
                                             else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((t.kind == MARGIN_RETURN_KIND, t.amount), else_=0)), 0),
    ).where(live))).one()
    p = payments.c
    by_player = p.refunded_minor + p.refund_pending_minor + p.disputed_minor + p.charged_back_minor \
        - p.uncredited_refunds_minor
    last = (await conn.execute(sa.select(p.credited_minor <= by_player).where(p.payment_id == c.reference))
            ).scalar_one()
    wallet = _share(amount_minor, c.from_minor, c.to_minor, int(wallet_taken), last=bool(last))
    margin = _share(amount_minor, c.from_minor, c.margin_minor, int(margin_taken), last=bool(last))
    player = player_account(c.player_id, c.to_currency)
    balances = await ledger.lock_accounts_in(conn, return_accounts(c) + lock_also)
    held = min(wallet, max(0, balances[player].available)) if allow_shortfall else wallet
    return FxReturn(c, operation, key, amount_minor, held, wallet - held, margin)


async def resolve_return_in(ledger: Ledger, conn: AsyncConnection, operation: str, key: str, *, post: bool) -> None:
    """Post (the refund succeeded, the chargeback was lost) or void a return's legs; its accounts are locked."""
    ids = [transfer_ids.fx(operation, key, leg) for _, leg in _RETURN_LEGS]
    pending = (await conn.execute(sa.select(transfers.c.id).where(
        transfers.c.id.in_(ids), transfers.c.status == "pending").order_by(transfers.c.id))).scalars().all()
    for transfer_id in pending:
        await (ledger.post_hold_in if post else ledger.void_hold_in)(conn, transfer_id)


def _share(amount_minor: int, whole_minor: int, total_minor: int, taken_minor: int, *, last: bool) -> int:
    """`amount_minor`/`whole_minor` of `total_minor`, rounded up, within what is left of it; all that is left
    when this is the `last` share."""
    left = max(0, total_minor - taken_minor)
    if last:
        return left
    return min(left, -(-amount_minor * total_minor // whole_minor))
