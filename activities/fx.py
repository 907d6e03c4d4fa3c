"""Activities of currency conversion: the quote a deposit or payout locks (and, for a deposit, the wallet currency
it claims or reads), and the posting of a converted payout. Deposits book their conversion with the credit
(activities/deposit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from fx import FxQuote, FxUnavailable, RateSource, convert_credit, convert_debit
from ledger import Ledger
from ledger.fx import DEPOSIT, PAYOUT, FxConversion, post_converted_payout
from players.wallets import claim_wallet_currency, wallet_currency
from workflows.types import (
    ActivityName, ConvertedPayout, ErrorType, FxDirection, FxLock, QuoteConversionInput, WalletConversion,
)

# The rate source is asked here, a few times, rather than by the workflow's retries: those are the database's
# (the claim), and a source that does not answer must end the payment `fx_unavailable`, not stall it. Three tries
# of at most 2 s with these waits between them fit in the step's 10 s (workflows/retry_policies.py).
RATE_SOURCE_TRY_TIMEOUT_SECONDS = 2.0
RATE_SOURCE_WAITS_SECONDS = (0.2, 0.5)


class FxActivities:
    def __init__(self, engine: AsyncEngine, ledger: Ledger, rates: RateSource, spread_bps: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 rate_source_waits_seconds: Sequence[float] = RATE_SOURCE_WAITS_SECONDS) -> None:
        self.engine = engine
        self.ledger = ledger
        self.rates = rates
        self.spread_bps = spread_bps
        self.clock = clock
        self.rate_source_waits_seconds = rate_source_waits_seconds

    def all(self) -> list[Callable]:
        return [self.quote_conversion, self.post_converted_payout]

    @activity.defn(name=ActivityName.QUOTE_CONVERSION)
    async def quote_conversion(self, input: QuoteConversionInput) -> WalletConversion:
        """The player's wallet currency and, when the payment is in another, a quote locked for it. A database
        error raises as it is (the workflow retries it); no quote raises a non-retryable FX_UNAVAILABLE."""
        if input.direction == FxDirection.CREDIT:
            wallet = await claim_wallet_currency(self.engine, input.player_id, input.reference, input.currency,
                                                 self.clock())
        else:
            wallet = await wallet_currency(self.engine, input.player_id)
        if wallet is None or wallet == input.currency:
            return WalletConversion(wallet)
        quote = await self._quote(input.currency, wallet)
        convert = convert_credit if input.direction == FxDirection.CREDIT else convert_debit
        converted = convert(input.amount_minor, input.currency, wallet, quote.rate, self.spread_bps)
        return WalletConversion(wallet, FxLock(
            payment_currency=input.currency, wallet_currency=wallet, rate=quote.rate, spread_bps=self.spread_bps,
            source=quote.source, rate_id=quote.rate_id, quoted_at=self.clock().isoformat(),
            expires_at=quote.expires_at, amount_minor=input.amount_minor, wallet_amount_minor=converted.wallet_minor,
            margin_minor=converted.margin_minor,
        ))

    async def _quote(self, from_currency: str, to_currency: str) -> FxQuote:
        waits = list(self.rate_source_waits_seconds)
        while True:
            try:
                async with asyncio.timeout(RATE_SOURCE_TRY_TIMEOUT_SECONDS):
                    return await self.rates.quote(from_currency, to_currency)
            except TimeoutError:
                error = FxUnavailable("FX source did not answer in time", retryable=True)
            except FxUnavailable as err:
                error = err
            if not error.retryable or not waits:
                raise ApplicationError(str(error), type=ErrorType.FX_UNAVAILABLE, non_retryable=True) from error
            activity.logger.warning("FX quote %s/%s: %s; asking again", from_currency, to_currency, error)
            await asyncio.sleep(waits.pop(0))

    @activity.defn(name=ActivityName.POST_CONVERTED_PAYOUT)
    async def post_converted_payout(self, payout: ConvertedPayout) -> None:
        await post_converted_payout(self.ledger, payout_conversion(payout.payout_id, payout.player_id, payout.fx,
                                                                   payout.method, payout.psp), self.clock())


def deposit_conversion(payment_id: str, player_id: str, lock: FxLock, credit_minor: int, method: str | None,
                       psp: str | None) -> FxConversion:
    """A deposit's credit of `credit_minor` (what the PSP captured, or less on a review's word) at its lock."""
    converted = convert_credit(credit_minor, lock.payment_currency, lock.wallet_currency, lock.rate, lock.spread_bps)
    return _conversion(DEPOSIT, payment_id, player_id, lock, credit_minor, converted.wallet_minor,
                       converted.mid_minor, converted.margin_minor, method, psp)


def payout_conversion(payout_id: str, player_id: str, lock: FxLock, method: str | None = None,
                      psp: str | None = None) -> FxConversion:
    converted = convert_debit(lock.amount_minor, lock.payment_currency, lock.wallet_currency, lock.rate,
                              lock.spread_bps)
    return _conversion(PAYOUT, payout_id, player_id, lock, lock.amount_minor, converted.wallet_minor,
                       converted.mid_minor, converted.margin_minor, method, psp)


def _conversion(kind: str, reference: str, player_id: str, lock: FxLock, from_minor: int, to_minor: int,
                mid_minor: int, margin_minor: int, method: str | None, psp: str | None) -> FxConversion:
    return FxConversion(
        reference=reference, kind=kind, player_id=player_id, from_currency=lock.payment_currency,
        from_minor=from_minor, to_currency=lock.wallet_currency, to_minor=to_minor, mid_minor=mid_minor,
        margin_minor=margin_minor, rate=lock.rate, spread_bps=lock.spread_bps, source=lock.source,
        rate_id=lock.rate_id, expires_at=lock.expires_at, method=method, psp=psp,
    )
