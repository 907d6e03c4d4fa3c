"""Activities of the withdrawal workflow: the wallet hold and its settlement, checks, routing, PSP payouts,
and the player notification. Ledger ids derive from the payout id, so every step is safe to retry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.psp_calls import call_psp, connector_for
from ledger import (
    InsufficientFunds,
    Ledger,
    LedgerError,
    TransferNotFound,
    TransferRequest,
    house_account,
    parse_account,
    player_account,
)
from ledger.games import turnover_since
from payloop import notifications
from payloop.money import MoneyError, parse_rates, to_eur_minor
from payloop.players import PlayerStore
from payloop.settings import Settings
from psp.base import CreatePayoutRequest, PspConnector, PspPayout
from workflows.types import (
    ActivityName,
    CreatePspPayoutInput,
    ErrorType,
    HoldResult,
    PayoutCheckResult,
    PayoutRoute,
    PayoutSubject,
    PlayerNotification,
    PspPaymentRef,
    PspPayoutView,
    payout_hold_id,
)

PAYOUTS_ACCOUNT = "payouts"  # house:payouts:<CUR> — where held payouts go once posted, until PSP settlement


class WithdrawalActivities:
    def __init__(
        self,
        engine: AsyncEngine,
        ledger: Ledger,
        players: PlayerStore,
        connectors: Mapping[str, PspConnector],
        settings: Settings,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.players = players
        self.connectors = connectors
        self.settings = settings
        self.rates = parse_rates(settings.fx_rates_to_eur)
        self.clock = clock

    def all(self) -> list[Callable]:
        return [
            self.hold_payout,
            self.post_payout_hold,
            self.void_payout_hold,
            self.check_payout,
            self.route_payout,
            self.create_psp_payout,
            self.get_psp_payout,
            self.notify_player,
        ]

    @activity.defn(name=ActivityName.HOLD_PAYOUT)
    async def hold_payout(self, payout: PayoutSubject) -> HoldResult:
        request = TransferRequest(
            id=payout_hold_id(payout.payout_id),
            debit_account=player_account(payout.player_id, payout.currency),
            credit_account=house_account(PAYOUTS_ACCOUNT, payout.currency),
            amount=payout.amount_minor,
            currency=payout.currency,
            kind="payout",
            reference=payout.payout_id,
        )
        try:
            transfer = await self.ledger.hold(request)
        except InsufficientFunds as err:
            raise ApplicationError(str(err), err.available, type=ErrorType.INSUFFICIENT_FUNDS,
                                   non_retryable=True) from err
        except LedgerError as err:
            raise ApplicationError(str(err), err.code, type=ErrorType.LEDGER_CONFLICT, non_retryable=True) from err
        balance = await self.ledger.account_balance(request.debit_account)
        return HoldResult(transfer.id, balance.available if balance else 0)

    @activity.defn(name=ActivityName.POST_PAYOUT_HOLD)
    async def post_payout_hold(self, transfer_id: str) -> None:
        await self._resolve(self.ledger.post_hold, transfer_id)

    @activity.defn(name=ActivityName.VOID_PAYOUT_HOLD)
    async def void_payout_hold(self, transfer_id: str) -> None:
        try:
            await self._resolve(self.ledger.void_hold, transfer_id)
        except TransferNotFound:
            pass  # the hold was never placed (e.g. cancelled while it was being placed): nothing to give back

    async def _resolve(self, resolve, transfer_id: str) -> None:  # noqa: ANN001
        try:
            await resolve(transfer_id)
        except TransferNotFound:
            raise
        except LedgerError as err:
            # Posting a voided hold (or the reverse) is a bug to look at, never something a retry fixes.
            raise ApplicationError(str(err), err.code, type=ErrorType.LEDGER_CONFLICT, non_retryable=True) from err

    @activity.defn(name=ActivityName.CHECK_PAYOUT)
    async def check_payout(self, payout: PayoutSubject) -> PayoutCheckResult:
        now = self.clock()
        controls = await self.players.controls(payout.player_id, payout.currency, now)
        if controls.closed:
            return PayoutCheckResult("reject", "account_closed", "the player's account is closed")
        if controls.self_excluded(now):
            return PayoutCheckResult("reject", "self_excluded", "the player is self-excluded")
        if controls.kyc_status == "rejected":
            return PayoutCheckResult("reject", "kyc_rejected", "the player's identity check was rejected")
        if controls.kyc_status != "verified":
            return PayoutCheckResult("kyc_required", "kyc_required", "the player's identity is not verified yet")
        return await self._aml(payout, now)

    async def _aml(self, payout: PayoutSubject, now: datetime) -> PayoutCheckResult:
        s = self.settings
        last_deposit = await self.ledger.last_credit(player_account(payout.player_id, payout.currency), "deposit")
        if last_deposit is not None:
            turnover = await turnover_since(self.engine, payout.player_id, payout.currency, last_deposit.created_at)
            # Deposit-then-withdraw with little play is the classic laundering pattern.
            if turnover * 100 < s.aml_turnover_percent * last_deposit.amount:
                return PayoutCheckResult("review", "low_turnover",
                                         "turnover since the last deposit is below the required share of it")
        since = now - timedelta(hours=s.aml_linked_window_hours)
        linked = await self.ledger.player_debits_since(payout.player_id, "payout", since)
        try:
            linked_eur = sum(to_eur_minor(amount, currency, self.rates) for amount, currency in linked)
        except MoneyError:
            # Without a rate the threshold cannot be judged: a person does, rather than no one.
            return PayoutCheckResult("review", "fx_rate_missing", "no euro rate for a currency of the payouts")
        if linked_eur >= s.aml_linked_threshold_eur_minor:
            return PayoutCheckResult("review", "aml_threshold",
                                     "linked payouts reach the reporting threshold")
        return PayoutCheckResult("pass")

    @activity.defn(name=ActivityName.ROUTE_PAYOUT)
    async def route_payout(self, payout: PayoutSubject) -> PayoutRoute:
        """Closed loop: pay out through the PSP the player last deposited with, when it can pay out."""
        last_deposit = await self.ledger.last_credit(player_account(payout.player_id, payout.currency), "deposit")
        if last_deposit is not None:
            _kind, psp, _currency, _floor = parse_account(last_deposit.debit_account)
            connector = self.connectors.get(psp)
            if connector is not None and connector.payout_methods:
                return PayoutRoute(psp, sorted(connector.payout_methods)[0], closed_loop=True)
        fallback = connector_for(self.connectors, self.settings.payout_fallback_psp)
        return PayoutRoute(fallback.name, sorted(fallback.payout_methods)[0], closed_loop=False)

    @activity.defn(name=ActivityName.CREATE_PSP_PAYOUT)
    async def create_psp_payout(self, input: CreatePspPayoutInput) -> PspPayoutView:
        request = CreatePayoutRequest(
            payout_id=input.payout_id,
            amount_minor=input.amount_minor,
            currency=input.currency,
            method=input.method,
            player_id=input.player_id,
            country=input.country,
            scenario=input.sandbox_scenario,
        )
        return _view(await call_psp(connector_for(self.connectors, input.psp).create_payout(request)))

    @activity.defn(name=ActivityName.GET_PSP_PAYOUT)
    async def get_psp_payout(self, ref: PspPaymentRef) -> PspPayoutView:
        return _view(await call_psp(connector_for(self.connectors, ref.psp).get_payout(ref.payment_id)))

    @activity.defn(name=ActivityName.NOTIFY_PLAYER)
    async def notify_player(self, notification: PlayerNotification) -> None:
        await notifications.enqueue(
            self.engine, player_id=notification.player_id, kind=notification.kind,
            reference=notification.reference, details=notification.details, now=self.clock(),
        )


def _view(payout: PspPayout) -> PspPayoutView:
    return PspPayoutView(
        psp=payout.psp,
        psp_reference=payout.psp_reference,
        status=payout.status,
        amount_minor=payout.amount_minor,
        currency=payout.currency,
        failure_code=payout.failure_code,
    )
