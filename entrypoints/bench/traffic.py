"""Real traffic through the public HTTP API: deposits, game rounds and payouts, as a cashier, a player's browser
and a game provider would send them; the sandbox PSPs complete the payments on their own.

Each phase is closed loop (at most `concurrency` items in flight, a new one as soon as one ends) or, with a
`rate`, open loop (one start every 1/rate seconds, still at most `concurrency` in flight). A payment is
complete when its workflow has closed (awaited through the Temporal client, a long poll that costs the stack
nothing), and its final status is then read through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from temporalio.client import Client

from workflows.deposit import DepositWorkflow
from workflows.withdrawal import WithdrawalWorkflow

DEPOSIT_METHODS = ("card", "ewallet", "bank_transfer", "crypto")
DEPOSIT_AMOUNT = "50.00"
PAYOUT_AMOUNT = "10.00"
CURRENCY = "EUR"


@dataclass
class DepositRecord:
    phase: str
    method: str
    player_id: str
    started: float  # epoch seconds, this process's clock
    answered: float | None = None  # init's answer arrived
    confirmed: float | None = None  # bank transfers: the player confirmed at the bank
    completed: float | None = None  # workflow closed
    payment_id: str | None = None
    http_status: int | None = None
    init_status: str | None = None
    psp: str | None = None
    final_status: str | None = None
    error: str | None = None
    scenario: str | None = None  # meta.sandbox_scenario
    init_timed_out: bool = False  # 504: the payment goes on; it is followed to its end all the same

    @property
    def init_latency(self) -> float | None:
        return self.answered - self.started if self.answered else None

    @property
    def workflow_id(self) -> str | None:
        return DepositWorkflow.workflow_id(self.payment_id) if self.payment_id else None


@dataclass
class PayoutRecord:
    phase: str
    player_id: str
    started: float
    answered: float | None = None
    completed: float | None = None
    payout_id: str | None = None
    http_status: int | None = None
    final_status: str | None = None
    psp: str | None = None
    error: str | None = None

    @property
    def init_latency(self) -> float | None:
        return self.answered - self.started if self.answered else None

    @property
    def workflow_id(self) -> str | None:
        return WithdrawalWorkflow.workflow_id(self.payout_id) if self.payout_id else None


@dataclass
class RoundRecord:
    player_id: str
    started: float
    bet_latency: float | None = None
    win_latency: float | None = None
    completed: float | None = None
    error: str | None = None


@dataclass
class Phase:
    name: str
    kind: str  # deposits | rounds | payouts | skeleton
    concurrency: int
    rate: float | None = None  # open loop starts per second; None = closed loop
    started: float = 0.0
    finished: float = 0.0
    count: int = 0
    completed: int = 0
    max_in_flight: int = 0

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def throughput(self) -> float:
        return self.completed / self.elapsed


@dataclass
class Driver:
    """Sends the traffic; keeps every record for the report."""

    api: httpx.AsyncClient
    browser: httpx.AsyncClient  # no API key: what a player's browser sends to the PSP's pages
    temporal: Client
    timeout: float = 120.0
    progress: Callable[[str, int], Any] | None = None  # (phase name, total) -> a tqdm-like bar, or None
    in_flight: int = 0
    deposits: list[DepositRecord] = field(default_factory=list)
    payouts: list[PayoutRecord] = field(default_factory=list)
    rounds: list[RoundRecord] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    players: list[str] = field(default_factory=list)

    # ---- phases -------------------------------------------------------------------------------------------

    async def run_phase(self, phase: Phase, items: list[Callable[[], Awaitable[bool]]]) -> Phase:
        """Runs `items` (each returns True when it completed as expected) under the phase's loop discipline."""
        phase.count = len(items)
        gate = asyncio.Semaphore(phase.concurrency)
        bar = self.progress(phase.name, len(items)) if self.progress else None
        phase_in_flight = 0

        async def one(item: Callable[[], Awaitable[bool]]) -> None:
            nonlocal phase_in_flight
            self.in_flight += 1
            phase_in_flight += 1
            phase.max_in_flight = max(phase.max_in_flight, phase_in_flight)
            try:
                if await item():
                    phase.completed += 1
            finally:
                self.in_flight -= 1
                phase_in_flight -= 1
                gate.release()
                if bar is not None:
                    bar.update(1)

        phase.started = time.time()
        tasks = []
        for n, item in enumerate(items):
            if phase.rate:
                delay = phase.started + n / phase.rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(one(item)))
        await asyncio.gather(*tasks)
        phase.finished = time.time()
        if bar is not None:
            bar.close()
        self.phases.append(phase)
        return phase

    async def deposit_phase(self, name: str, count: int, concurrency: int, methods: tuple[str, ...],
                            rate: float | None = None) -> Phase:
        cycle = itertools.cycle(methods)
        items = [self._deposit_item(name, next(cycle)) for _ in range(count)]
        return await self.run_phase(Phase(name, "deposits", concurrency, rate), items)

    async def hold_phase(self, name: str, count: int, init_concurrency: int, hold_seconds: float = 3.0) -> Phase:
        """`count` card deposits that stop at the 3DS challenge (scenario `challenge`: the workflow waits for the
        PSP's webhook) until all of them are in flight at once; held `hold_seconds` (RSS is sampled meanwhile),
        then the challenges are passed and each deposit followed to `credited`. Inits and challenges go
        `init_concurrency` at a time, so this measures memory with many payments in flight, not an overload."""
        init_gate = asyncio.Semaphore(init_concurrency)
        all_started = asyncio.Event()
        started = 0

        async def hold() -> None:
            nonlocal started
            started += 1
            if started == count:
                all_started.set()
            await all_started.wait()
            await asyncio.sleep(hold_seconds)

        # Released as they were started: `init_concurrency` players pass their challenge at a time.
        redirect_gate = asyncio.Semaphore(init_concurrency)
        items = [self._deposit_item(name, "card", scenario="challenge", init_gate=init_gate, before_redirect=hold,
                                    redirect_gate=redirect_gate)
                 for _ in range(count)]
        return await self.run_phase(Phase(name, "deposits", count), items)

    async def rounds_phase(self, name: str, count: int, concurrency: int, players: list[str]) -> Phase:
        if not players:
            raise RuntimeError("game rounds need funded players: run deposits first")
        cycle = itertools.cycle(players)
        items = [self._round_item(next(cycle)) for _ in range(count)]
        return await self.run_phase(Phase(name, "rounds", concurrency), items)

    async def payout_phase(self, name: str, players: list[str], concurrency: int) -> Phase:
        items = [self._payout_item(name, player) for player in players]
        return await self.run_phase(Phase(name, "payouts", concurrency), items)

    async def prepare_payout_players(self, players: list[str], concurrency: int) -> Phase:
        """KYC verified through the player API, and the balance played through once (a bet of all of it, won
        back), so the AML turnover rule lets the payout straight through, as for a real, active player."""
        return await self.run_phase(Phase("payout-setup", "setup", concurrency),
                                    [self._prepare_item(p) for p in players])

    # ---- items --------------------------------------------------------------------------------------------

    def _deposit_item(self, phase: str, method: str, *, scenario: str | None = None,
                      init_gate: asyncio.Semaphore | None = None,
                      before_redirect: Callable[[], Awaitable[None]] | None = None,
                      redirect_gate: asyncio.Semaphore | None = None) -> Callable[[], Awaitable[bool]]:
        async def item() -> bool:
            if init_gate is not None:
                await init_gate.acquire()
            record = DepositRecord(phase, method, new_player(), time.time(), scenario=scenario)
            self.deposits.append(record)
            try:
                return await self._deposit(record, init_gate=init_gate, before_redirect=before_redirect,
                                           redirect_gate=redirect_gate)
            except Exception as err:  # noqa: BLE001 - recorded and counted; one failure must not stop the run
                record.error = f"{type(err).__name__}: {err}"[:300]
                return False
        return item

    async def _deposit(self, record: DepositRecord, *, init_gate: asyncio.Semaphore | None = None,
                       before_redirect: Callable[[], Awaitable[None]] | None = None,
                       redirect_gate: asyncio.Semaphore | None = None) -> bool:
        meta = {"country": "DE", **({"sandbox_scenario": record.scenario} if record.scenario else {})}
        try:
            response = await self.api.post("/v1/payments/init", headers={"Idempotency-Key": uuid.uuid4().hex},
                                           json={"amount": DEPOSIT_AMOUNT, "currency": CURRENCY,
                                                 "method": record.method, "player_id": record.player_id,
                                                 "return_url": "https://casino.example/cashier/return",
                                                 "meta": meta})
        finally:
            if init_gate is not None:
                init_gate.release()
        record.answered = time.time()
        record.http_status = response.status_code
        body = response.json()
        record.payment_id = body.get("payment_id")
        record.init_status, record.psp = body.get("status"), body.get("psp")
        if response.status_code == 504 and record.payment_id:
            # "No answer in time": the payment was started and goes on; follow it like any other.
            record.init_timed_out = True
        elif response.status_code != 201 or not record.payment_id:
            record.error = f"init answered {response.status_code}: {body.get('code') or body}"[:300]
            return False
        if before_redirect is not None:
            await before_redirect()
        if record.init_timed_out:
            body = await self._after_timeout(record.payment_id)
            record.init_status = body.get("status")
        if record.init_status == "requires_action" and body.get("redirect_url"):
            # The player's browser: confirm at the bank (or pass the 3DS challenge) on the sandbox's page.
            async with redirect_gate or contextlib.nullcontext():
                page = await self.browser.post(body["redirect_url"], data={"outcome": "success"})
            if page.status_code >= 400:
                record.error = f"redirect page answered {page.status_code}"
                return False
            record.confirmed = time.time()
        await self._wait_closed(DepositWorkflow.workflow_id(record.payment_id))
        record.completed = time.time()
        final = await self.api.get(f"/v1/payments/{record.payment_id}")
        record.final_status = final.json().get("status")
        if record.final_status == "credited":
            self.players.append(record.player_id)
            return True
        return False

    async def _after_timeout(self, payment_id: str) -> dict[str, Any]:
        """After a 504 the PSP's first answer is still to come: read the payment until it has one (a redirect to
        follow, or a status past `pending`)."""
        deadline = time.monotonic() + self.timeout
        while True:
            view = (await self.api.get(f"/v1/payments/{payment_id}")).json()
            if view.get("status") != "pending" or time.monotonic() > deadline:
                return view
            await asyncio.sleep(0.5)

    def _round_item(self, player_id: str) -> Callable[[], Awaitable[bool]]:
        async def item() -> bool:
            record = RoundRecord(player_id, time.time())
            self.rounds.append(record)
            round_id = f"r-{uuid.uuid4().hex[:16]}"
            try:
                for path, kind, amount in (("debit", "bet", "1.00"), ("credit", "win", "0.50")):
                    started = time.perf_counter()
                    response = await self.api.post(f"/v1/wallet/{path}", json={
                        "player_id": player_id, "currency": CURRENCY, "amount": amount, "round_id": round_id,
                        "game_id": "bench-slots", "transaction_id": f"{kind}-{round_id}"})
                    latency = time.perf_counter() - started
                    if response.status_code != 200:
                        record.error = f"{path} answered {response.status_code}: {response.text[:200]}"
                        return False
                    if kind == "bet":
                        record.bet_latency = latency
                    else:
                        record.win_latency = latency
                record.completed = time.time()
                return True
            except Exception as err:  # noqa: BLE001 - recorded and counted
                record.error = f"{type(err).__name__}: {err}"[:300]
                return False
        return item

    def _prepare_item(self, player_id: str) -> Callable[[], Awaitable[bool]]:
        async def item() -> bool:
            response = await self.api.put(f"/v1/ops/players/{player_id}/kyc", json={"status": "verified"})
            if response.status_code != 200:
                raise RuntimeError(f"setting KYC answered {response.status_code}: {response.text[:200]}")
            balance = await self.api.get(f"/v1/wallet/{player_id}/balance")
            available = next((b["available"] for b in balance.json()["balances"] if b["currency"] == CURRENCY),
                             DEPOSIT_AMOUNT)
            round_id = f"setup-{uuid.uuid4().hex[:16]}"
            for path, kind in (("debit", "bet"), ("credit", "win")):
                response = await self.api.post(f"/v1/wallet/{path}", json={
                    "player_id": player_id, "currency": CURRENCY, "amount": available, "round_id": round_id,
                    "game_id": "bench-setup", "transaction_id": f"{kind}-{round_id}"})
                if response.status_code != 200:
                    raise RuntimeError(f"wager {path} answered {response.status_code}: {response.text[:200]}")
            return True
        return item

    def _payout_item(self, phase: str, player_id: str) -> Callable[[], Awaitable[bool]]:
        async def item() -> bool:
            record = PayoutRecord(phase, player_id, time.time())
            self.payouts.append(record)
            try:
                response = await self.api.post(
                    "/v1/payouts/init", headers={"Idempotency-Key": uuid.uuid4().hex},
                    json={"amount": PAYOUT_AMOUNT, "currency": CURRENCY, "player_id": player_id})
                record.answered = time.time()
                record.http_status = response.status_code
                body = response.json()
                record.payout_id = body.get("payout_id")
                if response.status_code != 201 or not record.payout_id:
                    record.error = f"payout init answered {response.status_code}: {body.get('code') or body}"[:300]
                    return False
                await self._wait_closed(WithdrawalWorkflow.workflow_id(record.payout_id))
                record.completed = time.time()
                view = (await self.api.get(f"/v1/payouts/{record.payout_id}")).json()
                record.final_status, record.psp = view.get("status"), view.get("psp")
                return record.final_status == "paid"
            except Exception as err:  # noqa: BLE001 - recorded and counted
                record.error = f"{type(err).__name__}: {err}"[:300]
                return False
        return item

    async def _wait_closed(self, workflow_id: str) -> None:
        handle = self.temporal.get_workflow_handle(workflow_id)
        await asyncio.wait_for(handle.result(), self.timeout)


def new_player() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}"
