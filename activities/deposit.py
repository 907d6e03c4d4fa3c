"""Activities of the deposit workflow: screening, routing, PSP calls, the wallet credit (with the PSP's fee) and
the payments table's row.

Every side effect is idempotent: PSP creates carry the payment id as Idempotency-Key, and the ledger transfer id
derives from the payment id and the step, so a retried or re-run activity never moves money twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fees import count_fee, fee_minor
from activities.fx import deposit_conversion
from activities.psp_calls import call_and_record, call_psp, cancel_or_look_up, connector_for, status_poll_plan
from activities.screening import RiskScreening, assessment_of, deposit_subject
from events.outbox import emit_kyc_required, emit_payment
from ledger import Ledger
from ledger.errors import LedgerError
from ledger.payments import PaymentRecord, credit_deposit, record_payment, record_uncredited_capture
from players import GateVerdict, PlayerControls, PlayerStore, ScreeningDecision
from psp.base import CreatePaymentRequest, PspConnector, PspPayment
from psp.routing import CircuitState, RoutingConfig, route
from psp.routing.health import HealthStore
from risk.types import PlayerStanding, StoredDecision
from workflows.types import (
    ActivityName,
    CreatePspPaymentInput,
    CreditDepositInput,
    DepositRoute,
    ErrorType,
    LedgerPosting,
    PaymentFacts,
    PspPaymentView,
    PspRef,
    RouteInput,
    ScreenDepositInput,
    ScreeningResult,
    UncreditedCapture,
)


class DepositActivities:
    def __init__(
        self,
        ledger: Ledger,
        players: PlayerStore,
        risk: RiskScreening,
        connectors: Mapping[str, PspConnector],
        routing: RoutingConfig,
        health: HealthStore,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.ledger = ledger
        self.players = players
        self.risk = risk
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
            self.record_uncredited_capture,
            self.record_payment,
        ]

    @activity.defn(name=ActivityName.SCREEN_DEPOSIT)
    async def screen_deposit(self, input: ScreenDepositInput) -> ScreeningResult:
        """The player's controls, KYC, the risk rules, then the limits — the risk decision and the deposit's count
        against the limits written in one transaction."""
        now = self.clock()
        subject = deposit_subject(input)
        assessed: list[StoredDecision] = []

        async def risk_gate(conn: AsyncConnection, controls: PlayerControls) -> GateVerdict:
            stored = await self.risk.assess_in(conn, subject, PlayerStanding(controls.kyc_status,
                                                                             controls.first_seen_at))
            assessed.append(stored)
            market = await self.risk.market(stored, conn)
            if controls.closed or controls.self_excluded(now):
                return GateVerdict()  # the limits' screening refuses it, and says why first
            if controls.kyc_status == "rejected":
                return GateVerdict(ScreeningDecision("deny", "kyc_rejected",
                                                     "the player's identity check was rejected"))
            if stored.decision.action == "deny":
                return GateVerdict(ScreeningDecision("deny", "risk_denied", "the deposit breaks the risk rules"))
            if (why := self.risk.kyc_required(stored, market, controls.kyc_status)) is not None:
                return GateVerdict(ScreeningDecision("kyc_required", why,
                                                     "the player's identity must be verified first"))
            return GateVerdict(kyc_threshold_eur_minor=market.kyc_deposit_threshold_eur_minor)

        decision = await self.players.screen_deposit(input.player_id, input.currency, input.payment_id,
                                                     input.amount_minor, now, gate=risk_gate)
        if decision.outcome == "kyc_required" and input.client_id:  # started before client_id was passed: no event
            await emit_kyc_required(self.ledger.engine, client_id=input.client_id, player_id=input.player_id,
                                    subject="payment", subject_id=input.payment_id, reason=decision.code)
        return ScreeningResult(decision.outcome, decision.code, decision.reason, assessment_of(assessed[-1]))

    @activity.defn(name=ActivityName.RELEASE_DEPOSIT_LIMIT)
    async def release_deposit_limit(self, payment_id: str) -> None:
        await self.players.release_deposit(payment_id, self.clock())

    @activity.defn(name=ActivityName.ROUTE_DEPOSIT)
    async def route_deposit(self, input: RouteInput) -> DepositRoute:
        """The PSPs to try, in order: the routing file's rules, fees, A/B weights (sticky per player) and live circuit
        states."""
        states = await self.health.states(self.clock())
        candidates = route(
            self.routing, method=input.method, currency=input.currency, amount_minor=input.amount_minor,
            country=input.country, risk=input.risk_level, payment_id=input.payment_id, available=set(self.connectors),
            health=states, player_id=input.player_id,
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
            sandbox_card=input.sandbox_card,
        )
        return _view(await call_and_record(self.health, input.psp, "create_payment",
                                           lambda: connector.create_payment(request)))

    @activity.defn(name=ActivityName.GET_PSP_PAYMENT)
    async def get_psp_payment(self, ref: PspRef) -> PspPaymentView:
        connector = self._connector(ref.psp)
        return _view(await call_psp(ref.psp, "get_payment", connector.get_payment(ref.merchant_reference)))

    @activity.defn(name=ActivityName.CANCEL_PSP_PAYMENT)
    async def cancel_psp_payment(self, ref: PspRef) -> PspPaymentView:
        """Cancels at the PSP; when the PSP refuses, returns the payment as the PSP sees it."""
        connector = self._connector(ref.psp)
        return _view(await cancel_or_look_up(ref.psp, "cancel_payment", connector.cancel_payment(ref.merchant_reference),
                                             lambda: connector.get_payment(ref.merchant_reference)))

    @activity.defn(name=ActivityName.CREDIT_DEPOSIT)
    async def credit_deposit(self, input: CreditDepositInput) -> LedgerPosting:
        """Credits the player and books the PSP's capture fee, with the payment's money record, at once; a deposit
        with a locked rate credits the wallet currency through the FX accounts (ledger/fx.py)."""
        captured_minor = input.captured_minor if input.captured_minor is not None else input.amount_minor
        fee = fee_minor(self.routing, input.psp, "capture", captured_minor, input.currency, input.fee_minor)
        conversion = deposit_conversion(input.payment_id, input.player_id, input.fx, input.amount_minor,
                                        input.method, input.psp) if input.fx else None
        try:
            transfer_id = await credit_deposit(
                self.ledger, payment_id=input.payment_id, player_id=input.player_id, psp=input.psp,
                method=input.method, currency=input.currency, captured_minor=captured_minor,
                credit_minor=input.amount_minor, fee_minor=fee, now=self.clock(),
                facts=_record(input.facts) if input.facts else None, conversion=conversion,
                on_status=emit_payment,
            )
        except LedgerError as err:
            # A conflict means the same id was posted with another body: a bug to look at, never to retry.
            raise ApplicationError(str(err), err.code, type=ErrorType.LEDGER_CONFLICT, non_retryable=True) from err
        count_fee(input.psp, "capture", input.currency, fee)
        if conversion is None:
            return LedgerPosting(transfer_id or "", False)
        return LedgerPosting(transfer_id or "", False, conversion.to_minor, conversion.margin_minor)

    @activity.defn(name=ActivityName.RECORD_UNCREDITED_CAPTURE)
    async def record_uncredited_capture(self, capture: UncreditedCapture) -> None:
        fee = fee_minor(self.routing, capture.psp, "capture", capture.captured_minor, capture.currency,
                        capture.fee_minor)
        await record_uncredited_capture(
            self.ledger, payment_id=capture.payment_id, psp=capture.psp, method=capture.method,
            currency=capture.currency, captured_minor=capture.captured_minor, fee_minor=fee, now=self.clock(),
        )
        count_fee(capture.psp, "capture", capture.currency, fee)

    @activity.defn(name=ActivityName.RECORD_PAYMENT)
    async def record_payment(self, facts: PaymentFacts) -> None:
        """The row, and its event when the status is one a platform hears of (events/payloads.py), at once."""
        await record_payment(self.ledger.engine, _record(facts), on_status=emit_payment)

    def _connector(self, psp: str) -> PspConnector:
        return connector_for(self.connectors, psp)


def _record(facts: PaymentFacts) -> PaymentRecord:
    return PaymentRecord(
        payment_id=facts.payment_id, client_id=facts.client_id, player_id=facts.player_id, method=facts.method,
        currency=facts.currency, amount_minor=facts.amount_minor, status=facts.status,
        created_at=datetime.fromisoformat(facts.created_at), updated_at=datetime.fromisoformat(facts.updated_at),
        psp=facts.psp, psp_reference=facts.psp_reference, country=facts.country, failure_code=facts.failure_code,
        review_reason=facts.review_reason,
    )


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
        bin_country=payment.bin_country,
        instrument=payment.instrument,
    )
