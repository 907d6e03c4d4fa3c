"""Activities of the withdrawal workflow: the wallet hold and its settlement, checks, routing, PSP payouts,
and the player notification. Ledger ids derive from the payout id, so every step is safe to retry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fees import count_fee, fee_minor
from activities.fx import payout_conversion
from activities.psp_calls import call_and_record, call_psp, cancel_or_look_up, connector_for, status_poll_plan
from activities.screening import RiskScreening, assessment_of
from events.outbox import emit_kyc_required, emit_notification, emit_payout
from ledger import (
    InsufficientFunds,
    Ledger,
    LedgerError,
    TransferNotFound,
    TransferRequest,
    house_account,
    parse_account,
    player_account,
    transfer_ids,
)
from ledger.fees import book_fee
from ledger.fx import payout_hold
from ledger.payouts import PayoutRecord, record_payout
from payloop.settings import Settings
from players import PlayerStore, notifications
from psp.base import CreatePayoutRequest, PspConnector, PspPayout
from psp.routing import RoutingConfig, payout_choice
from psp.routing.health import HealthStore
from risk import aml
from risk.types import RiskSubject
from workflows.types import (
    ActivityName,
    CreatePspPayoutInput,
    ErrorType,
    HoldResult,
    PayoutCheckResult,
    PayoutFacts,
    PayoutRoute,
    PayoutStatus,
    PayoutSubject,
    PlayerNotification,
    PspPayoutView,
    PspRef,
)

PAYOUTS_ACCOUNT = "payouts"  # house:payouts:<CUR> — where held payouts go once posted, until PSP settlement


class WithdrawalActivities:
    def __init__(
        self,
        engine: AsyncEngine,
        ledger: Ledger,
        players: PlayerStore,
        risk: RiskScreening,
        connectors: Mapping[str, PspConnector],
        settings: Settings,
        routing: RoutingConfig,
        health: HealthStore,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.players = players
        self.risk = risk
        self.connectors = connectors
        self.settings = settings
        self.routing = routing
        self.health = health
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
            self.cancel_psp_payout,
            self.notify_player,
            self.record_payout,
        ]

    @activity.defn(name=ActivityName.HOLD_PAYOUT)
    async def hold_payout(self, payout: PayoutSubject) -> HoldResult:
        """Holds the payout's amount, or with a locked rate its wallet-currency amount (through house:fx)."""
        if payout.fx is not None:
            request = payout_hold(payout_conversion(payout.payout_id, payout.player_id, payout.fx))
        else:
            request = TransferRequest(
                id=transfer_ids.payout_hold(payout.payout_id),
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
    async def post_payout_hold(self, payout_id: str) -> None:
        await self._resolve(self.ledger.post_hold, transfer_ids.payout_hold(payout_id))

    @activity.defn(name=ActivityName.VOID_PAYOUT_HOLD)
    async def void_payout_hold(self, payout_id: str) -> None:
        try:
            await self._resolve(self.ledger.void_hold, transfer_ids.payout_hold(payout_id))
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
        """Account state, KYC, the risk rules and the player's AML cases, in that order; the first that does not
        pass decides."""
        now = self.clock()
        controls = await self.players.controls(payout.player_id, payout.currency, now)
        if controls.closed:
            return PayoutCheckResult("reject", "account_closed", "the player's account is closed")
        if controls.self_excluded(now):
            return PayoutCheckResult("reject", "self_excluded", "the player is self-excluded")
        if controls.kyc_status == "rejected":
            return PayoutCheckResult("reject", "kyc_rejected", "the player's identity check was rejected")
        stored = await self.risk.assess(RiskSubject(
            operation="payout", subject_id=payout.payout_id, player_id=payout.player_id,
            amount_minor=payout.amount_minor, currency=payout.currency, country=payout.country,
            ip_address=payout.ip_address, device_id=payout.device_id,
        ))
        risk = assessment_of(stored)
        if risk.action == "deny":
            return PayoutCheckResult("reject", "risk_denied", "the payout breaks the risk rules", risk)
        if (why := self.risk.kyc_required(stored, await self.risk.market(stored), controls.kyc_status)) is not None:
            if payout.client_id:  # a payout started before client_id was passed: no event
                await emit_kyc_required(self.engine, client_id=payout.client_id, player_id=payout.player_id,
                                        subject="payout", subject_id=payout.payout_id, reason=why)
            return PayoutCheckResult("kyc_required", why, "the player's identity is not verified yet", risk)
        # The scenarios see this payout as asked for; a hit opens a case, and a case open sends it to review.
        await self.risk.check_player(payout.player_id)
        if await aml.has_active_case(self.engine, payout.player_id):
            return PayoutCheckResult("review", "aml_case_open", "the player has an open AML case", risk)
        if risk.action == "review":
            return PayoutCheckResult("review", "risk_review", "the risk rules ask for a person to look", risk)
        return PayoutCheckResult("pass", risk=risk)

    @activity.defn(name=ActivityName.ROUTE_PAYOUT)
    async def route_payout(self, payout: PayoutSubject) -> PayoutRoute:
        """Closed loop: pay back to the method the player last deposited with, through that PSP unless its
        circuit is open (then the next PSP paying out to that method, by fee); with no such deposit, to the
        fallback PSP's method. Asked again whenever the chosen PSP did not take the payout."""
        last_deposit = await self.ledger.last_credit(player_account(payout.player_id, payout.currency), "deposit")
        deposit_psp = parse_account(last_deposit.debit_account)[1] if last_deposit is not None else None
        states = await self.health.states(self.clock())
        fallback = connector_for(self.connectors, self.settings.payout_fallback_psp).payout_methods
        choice = payout_choice(self.routing, deposit_psp=deposit_psp, fallback_methods=fallback,
                               currency=payout.currency, amount_minor=payout.amount_minor, country=payout.country,
                               available=set(self.connectors), health=states)
        if choice is not None:
            method, candidate = choice
            return PayoutRoute(candidate.psp, method, closed_loop=candidate.psp == deposit_psp,
                               status_poll=status_poll_plan(self.routing, candidate.psp))
        raise ApplicationError("no PSP pays this out", "no_payout_route", type=ErrorType.NO_PAYOUT_ROUTE,
                               non_retryable=True)

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
        connector = connector_for(self.connectors, input.psp)
        return _view(await call_and_record(self.health, input.psp, "create_payout",
                                           lambda: connector.create_payout(request)))

    @activity.defn(name=ActivityName.GET_PSP_PAYOUT)
    async def get_psp_payout(self, ref: PspRef) -> PspPayoutView:
        connector = connector_for(self.connectors, ref.psp)
        return _view(await call_psp(ref.psp, "get_payout", connector.get_payout(ref.merchant_reference)))

    @activity.defn(name=ActivityName.CANCEL_PSP_PAYOUT)
    async def cancel_psp_payout(self, ref: PspRef) -> PspPayoutView:
        """Cancels at the PSP; when the PSP refuses, returns the payout as the PSP sees it."""
        connector = connector_for(self.connectors, ref.psp)
        return _view(await cancel_or_look_up(ref.psp, "cancel_payout", connector.cancel_payout(ref.merchant_reference),
                                             lambda: connector.get_payout(ref.merchant_reference)))

    @activity.defn(name=ActivityName.NOTIFY_PLAYER)
    async def notify_player(self, notification: PlayerNotification) -> None:
        """The outbox row, and its event (delivered to the platform, which messages the player), at once."""
        async with self.engine.begin() as conn:
            await notifications.enqueue_in(
                conn, player_id=notification.player_id, kind=notification.kind,
                reference=notification.reference, details=notification.details, now=self.clock(),
            )
            if notification.client_id:  # a payout started before client_id was passed: the row only
                await emit_notification(conn, client_id=notification.client_id, player_id=notification.player_id,
                                        kind=notification.kind, reference=notification.reference,
                                        details=notification.details)

    @activity.defn(name=ActivityName.RECORD_PAYOUT)
    async def record_payout(self, facts: PayoutFacts) -> None:
        """The payouts table's row (the margin report), and a paid payout's PSP fee in the ledger."""
        now = self.clock()
        if facts.status == PayoutStatus.PAID and facts.psp:
            fee = fee_minor(self.routing, facts.psp, "payout", facts.amount_minor, facts.currency, facts.fee_minor)
            await book_fee(self.ledger, operation="payout", reference=facts.payout_id, psp=facts.psp,
                           method=facts.method or "", currency=facts.currency, fee_minor=fee, now=now)
            count_fee(facts.psp, "payout", facts.currency, fee)
        else:
            fee = None
        await record_payout(self.engine, PayoutRecord(
            payout_id=facts.payout_id, client_id=facts.client_id, player_id=facts.player_id, method=facts.method,
            psp=facts.psp, currency=facts.currency, amount_minor=facts.amount_minor, status=facts.status,
            fee_minor=fee, created_at=datetime.fromisoformat(facts.created_at),
            updated_at=datetime.fromisoformat(facts.updated_at),
        ), on_status=emit_payout)


def _view(payout: PspPayout) -> PspPayoutView:
    return PspPayoutView(
        psp=payout.psp,
        psp_reference=payout.psp_reference,
        status=payout.status,
        amount_minor=payout.amount_minor,
        currency=payout.currency,
        failure_code=payout.failure_code,
        fee_minor=payout.fee_minor,
    )
