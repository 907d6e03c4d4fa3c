"""Activities of the deposit workflow: screening, routing, PSP calls and the wallet credit.

Every side effect is idempotent: PSP creates carry the payment id as Idempotency-Key, and the ledger transfer id
derives from the payment id and the step, so a retried or re-run activity never moves money twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.psp_calls import call_and_record, call_psp, cancel_or_look_up, connector_for, status_poll_plan
from ledger import Ledger, TransferRequest, player_account, psp_clearing_account, transfer_ids
from ledger.errors import LedgerError
from players import PlayerStore
from psp.base import CreatePaymentRequest, PspConnector, PspPayment
from psp.routing import CircuitState, RoutingConfig, route
from psp.routing.health import HealthStore
from workflows.types import (
    ActivityName,
    CreatePspPaymentInput,
    CreditDepositInput,
    DepositRoute,
    ErrorType,
    LedgerPosting,
    PspPaymentView,
    PspRef,
    RouteInput,
    ScreenDepositInput,
    ScreeningResult,
)


class DepositActivities:
    def __init__(
        self,
        ledger: Ledger,
        players: PlayerStore,
        connectors: Mapping[str, PspConnector],
        routing: RoutingConfig,
        health: HealthStore,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.ledger = ledger
        self.players = players
        self.connectors = connectors
        self.routing = routing
        self.health = health
        self.clock = clock

    def all(self) -> list[Callable]:
        return [
            self.screen_deposit,
            self.release_deposit_limit,
            self.route_deposit,
            self.create_psp_payment,
            self.get_psp_payment,
            self.cancel_psp_payment,
            self.credit_deposit,
        ]

    @activity.defn(name=ActivityName.SCREEN_DEPOSIT)
    async def screen_deposit(self, input: ScreenDepositInput) -> ScreeningResult:
        decision = await self.players.screen_deposit(
            input.player_id, input.currency, input.payment_id, input.amount_minor, self.clock()
        )
        return ScreeningResult(decision.outcome, decision.code, decision.reason)

    @activity.defn(name=ActivityName.RELEASE_DEPOSIT_LIMIT)
    async def release_deposit_limit(self, payment_id: str) -> None:
        await self.players.release_deposit(payment_id, self.clock())

    @activity.defn(name=ActivityName.ROUTE_DEPOSIT)
    async def route_deposit(self, input: RouteInput) -> DepositRoute:
        """The PSPs to try, in order: the routing file's rules, fees, A/B weights and live circuit states."""
        states = await self.health.states(self.clock())
        candidates = route(
            self.routing, method=input.method, currency=input.currency, amount_minor=input.amount_minor,
            country=input.country, risk=None, payment_id=input.payment_id, available=set(self.connectors),
            health=states,
        )
        if candidates and all(states.get(c.psp) == CircuitState.OPEN for c in candidates):
            # Every PSP for the method is down: refuse now rather than after a round of timeouts.
            raise ApplicationError("every PSP for this method is down", "method_unavailable",
                                   type=ErrorType.ALL_PSPS_DOWN, non_retryable=True)
        return DepositRoute([c.psp for c in candidates],
                            {c.psp: status_poll_plan(self.routing, c.psp) for c in candidates})

    @activity.defn(name=ActivityName.CREATE_PSP_PAYMENT)
    async def create_psp_payment(self, input: CreatePspPaymentInput) -> PspPaymentView:
        connector = self._connector(input.psp)
        request = CreatePaymentRequest(
            payment_id=input.payment_id,
            amount_minor=input.amount_minor,
            currency=input.currency,
            method=input.method,
            player_id=input.player_id,
            return_url=input.return_url,
            country=input.country,
            scenario=input.sandbox_scenario,
        )
        return _view(await call_and_record(self.health, input.psp, "create_payment",
                                           lambda: connector.create_payment(request)))

    @activity.defn(name=ActivityName.GET_PSP_PAYMENT)
    async def get_psp_payment(self, ref: PspRef) -> PspPaymentView:
        return _view(await call_psp(self._connector(ref.psp).get_payment(ref.merchant_reference)))

    @activity.defn(name=ActivityName.CANCEL_PSP_PAYMENT)
    async def cancel_psp_payment(self, ref: PspRef) -> PspPaymentView:
        """Cancels at the PSP; when the PSP refuses, returns the payment as the PSP sees it."""
        connector = self._connector(ref.psp)
        return _view(await cancel_or_look_up(connector.cancel_payment(ref.merchant_reference),
                                             lambda: connector.get_payment(ref.merchant_reference)))

    @activity.defn(name=ActivityName.CREDIT_DEPOSIT)
    async def credit_deposit(self, input: CreditDepositInput) -> LedgerPosting:
        request = TransferRequest(
            id=transfer_ids.deposit_credit(input.payment_id),
            debit_account=psp_clearing_account(input.psp, input.currency),
            credit_account=player_account(input.player_id, input.currency),
            amount=input.amount_minor,
            currency=input.currency,
            kind="deposit",
            reference=input.payment_id,
        )
        try:
            transfer = await self.ledger.post_transfer(request)
        except LedgerError as err:
            # A conflict means the same id was posted with another body: a bug to look at, never to retry.
            raise ApplicationError(str(err), err.code, type=ErrorType.LEDGER_CONFLICT, non_retryable=True) from err
        return LedgerPosting(transfer.id, transfer.replayed)

    def _connector(self, psp: str) -> PspConnector:
        return connector_for(self.connectors, psp)


def _view(payment: PspPayment) -> PspPaymentView:
    return PspPaymentView(
        psp=payment.psp,
        psp_reference=payment.psp_reference,
        status=payment.status,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        redirect_url=payment.redirect_url,
        failure_code=payment.failure_code,
        fee_minor=payment.fee_minor,
    )
