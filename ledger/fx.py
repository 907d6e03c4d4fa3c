"""Conversions in the ledger: both legs through the house's FX accounts, so each currency still sums to zero.

A USD 100.00 deposit into a EUR wallet at a locked mid rate of 0.9210 with a 50 bps spread:
- USD leg: `deposit:<id>:credit` psp:<psp>:USD → house:fx:USD 100.00 (the deposit's credit, as without conversion);
- EUR leg: `fx:deposit:<id>:wallet` house:fx:EUR → player:<id>:EUR 91.63 (rate less the spread, rounded down),
  `fx:deposit:<id>:margin` house:fx:EUR → house:fx_margin:EUR 0.47 (the mid value 92.10 less what was credited).

A EUR wallet's USD 100.00 payout at the same lock: the hold `payout:<id>:hold` player:<id>:EUR → house:fx:EUR 92.57
(rate plus the spread, rounded up); when it is posted, `fx:payout:<id>:paid` house:fx:USD → house:payouts:USD
100.00 and `fx:payout:<id>:margin` house:fx:EUR → house:fx_margin:EUR 0.47; a voided hold books nothing else.

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
from ledger.accounts import house_account, payouts_account, player_account
from ledger.service import Ledger, TransferRequest
from payloop.db import UtcDateTime, insert_if_missing, metadata

DEPOSIT, PAYOUT = "deposit", "payout"
WALLET_KIND, MARGIN_KIND, PAID_KIND = "fx_wallet", "fx_margin", "fx_paid"  # transfer kinds of the legs

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
