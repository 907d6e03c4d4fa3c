"""The money routes of the API (payment money, review, refunds, ops lists, disputes, margin) and the webhook routing
by kind, against a stand-in Temporal client and stand-in ledger reads: what the routes validate, how they map the
workflows' and the ledger's answers to HTTP, and that nothing a client sends becomes a 500. The flows themselves,
with Temporal, the sandbox PSPs and the ledger, are in tests/e2e."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.app import create_app
from api.routes import disputes, margin, payments, refunds, webhooks
from api.schemas import QueryMoment
from ledger.disputes import DisputeRecord
from ledger.errors import InsufficientFunds
from ledger.margin import MarginRow
from ledger.payments import PaymentMoney, PaymentRecord, PaymentRow
from ledger.refunds import RefundRecord, RefundRefused
from payloop.settings import Settings
from psp.base import WebhookEvent
from tests.conftest import FreshDatabase
from workflows.types import DepositState, DepositStatus, PspPaymentView, RefundState

OPS, PAYMENTS, OTHER = "ops-key", "payments-key", "other-key"
PAYMENT_ID = f"pay_{'a' * 24}"
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def money(captured: int = 0, credited: int = 0, refunded: int = 0, pending: int = 0) -> PaymentMoney:
    return PaymentMoney(captured_minor=captured, credited_minor=credited,
                        credit_transfer_id=f"deposit:{PAYMENT_ID}:credit" if credited else None,
                        refunded_minor=refunded, refund_pending_minor=pending, disputed_minor=0,
                        charged_back_minor=0, fees_minor=0)


def deposit(status: str = DepositStatus.CREDITED, **changes: Any) -> DepositState:
    state = DepositState(payment_id=PAYMENT_ID, client_id="casino-a", player_id="alice", amount_minor=5000,
                         currency="EUR", method="card", status=status, created_at=NOW.isoformat(),
                         updated_at=NOW.isoformat(), psp="card", psp_reference="card_1")
    return replace(state, **changes)


def not_found() -> RPCError:
    return RPCError("not found", RPCStatusCode.NOT_FOUND, b"")


@dataclass
class FakeTemporal:
    """Just what the routes call: handles (describe, query, signal, start_update) and start_workflow."""

    states: dict[str, Any] = field(default_factory=dict)  # workflow id → what its status query answers
    signals: list[tuple[str, Any]] = field(default_factory=list)
    started: list[dict[str, Any]] = field(default_factory=list)
    start_error: BaseException | None = None
    update: Callable[[Any], Any] | None = None  # the review decision → its result, or raises

    def get_workflow_handle(self, workflow_id: str) -> FakeHandle:
        return FakeHandle(self, workflow_id)

    async def start_workflow(self, run: Any, arg: Any, **options: Any) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started.append({"arg": arg, **options})


@dataclass
class FakeHandle:
    client: FakeTemporal
    workflow_id: str

    async def describe(self) -> Any:
        if self.workflow_id not in self.client.states:
            raise not_found()
        return SimpleNamespace(status=WorkflowExecutionStatus.RUNNING, typed_search_attributes=TypedSearchAttributes.empty)

    async def query(self, _handler: Any) -> Any:
        if self.workflow_id not in self.client.states:
            raise not_found()
        return self.client.states[self.workflow_id]

    async def signal(self, _handler: Any, arg: Any = None) -> None:
        if self.workflow_id not in self.client.states:
            raise not_found()
        self.client.signals.append((self.workflow_id, arg))

    async def start_update(self, _handler: Any, arg: Any, **_options: Any) -> Any:
        assert self.client.update is not None
        outcome = self.client.update(arg)  # raises like a validator's refusal

        async def result() -> Any:
            if outcome is None:  # still being carried out
                await asyncio.sleep(3600)
            return outcome

        return SimpleNamespace(result=result)


@dataclass
class Api:
    http: httpx.AsyncClient
    temporal: FakeTemporal

    async def call(self, method: str, path: str, key: str = OPS, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with FreshDatabase("sqlite", tmp_path) as db:
        settings = Settings(database_url=db.url, data_dir=tmp_path,
                            api_keys=f"{OPS}:casino-a:payments,ops;{PAYMENTS}:casino-a:payments;"
                                     f"{OTHER}:casino-b:payments")
        engine, temporal = db.engine(), FakeTemporal()
        app = create_app(settings, engine=engine, temporal=temporal)  # type: ignore[arg-type]
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://api") as http:
            yield Api(http, temporal)
        await engine.dispose()


@pytest.fixture(autouse=True)
def no_ledger_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger's reads answer "nothing recorded" unless a test says otherwise."""
    async def nothing(*_args: Any, **_kwargs: Any) -> Any:
        return None

    async def empty(*_args: Any, **_kwargs: Any) -> list[Any]:
        return []

    monkeypatch.setattr(payments, "payment_money", nothing)
    monkeypatch.setattr(refunds, "payment_money", nothing)
    monkeypatch.setattr(payments, "payment_refunds", empty)
    monkeypatch.setattr(refunds, "payment_refunds", empty)
    monkeypatch.setattr(refunds, "get_refund", nothing)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    return body


# --- schemas --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1700000000", "2026-01-01T00:00:00", "2026-01-01", "yesterday",
                                   "0001-01-01T00:00:00+01:00", "2026-13-01T00:00:00Z"])
def test_a_query_moment_is_an_iso_datetime_with_a_time_zone(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(QueryMoment).validate_python(value)


def test_a_query_moment_is_kept_in_utc() -> None:
    moment = TypeAdapter(QueryMoment).validate_python("2026-01-01T01:00:00+01:00")
    assert moment == datetime(2026, 1, 1, tzinfo=timezone.utc) and moment.tzinfo == timezone.utc


def test_the_ops_status_filter_is_every_deposit_status() -> None:
    statuses = {value for name, value in vars(DepositStatus).items() if name.isupper() and isinstance(value, str)}
    assert set(get_args(payments.DepositStatusFilter)) == statuses


@pytest.mark.parametrize(("error_type", "status", "code"), [
    ("NotInReview", 409, "not_in_review"), ("Finished", 409, "not_in_review"),
    ("DecisionNotAllowed", 409, "decision_not_allowed"), ("NothingCaptured", 409, "nothing_captured"),
    ("AmountOverCaptured", 422, "amount_over_captured"), ("InvalidDecision", 422, "invalid_decision"),
])
def test_review_refusals_map_to_problems(error_type: str, status: int, code: str) -> None:
    problem = payments.review_refused(ApplicationError("no", type=error_type))
    assert (problem.status, problem.code) == (status, code)


# --- GET /v1/payments/{id} ------------------------------------------------------------------------------------


async def test_the_payment_shows_what_the_ledger_holds(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    review_view = PspPaymentView(psp="card", psp_reference="card_1", status="captured", amount_minor=5000,
                                 currency="EUR")
    api.temporal.states["deposit-" + PAYMENT_ID] = deposit(
        DepositStatus.IN_REVIEW, review_psp_view=review_view, reviewed_by="casino-a/jane", refund_ids=["ref_x"])

    async def credited(*_args: Any) -> PaymentMoney:
        return money(captured=5000, credited=5000, refunded=1000, pending=500)

    monkeypatch.setattr(payments, "payment_money", credited)
    body = (await api.call("GET", f"/v1/payments/{PAYMENT_ID}")).json()
    assert body["status"] == "in_review" and body["credited_amount"] == "50.00"
    assert (body["refunded_amount"], body["refund_pending_amount"], body["refundable_amount"]) == (
        "10.00", "5.00", "35.00")
    assert body["credit_transfer_id"] == f"deposit:{PAYMENT_ID}:credit" and body["refund_ids"] == ["ref_x"]
    assert body["review_psp_view"]["amount"] == "50.00" and body["reviewed_by"] == "casino-a/jane"
    without_ops = (await api.call("GET", f"/v1/payments/{PAYMENT_ID}", PAYMENTS)).json()
    assert without_ops["review_psp_view"] is None and without_ops["reviewed_by"] is None


async def test_a_payment_without_ledger_money_shows_zeros(api: Api) -> None:
    api.temporal.states["deposit-" + PAYMENT_ID] = deposit(DepositStatus.PENDING)
    body = (await api.call("GET", f"/v1/payments/{PAYMENT_ID}")).json()
    assert body["captured_amount"] == body["refundable_amount"] == "0.00" and body["credit_transfer_id"] is None


# --- POST /v1/ops/payments/{id}/review ------------------------------------------------------------------------


async def test_review_validates_before_it_reaches_the_workflow(api: Api) -> None:
    path = f"/v1/ops/payments/{PAYMENT_ID}/review"
    reject_with_amount = {"decision": "reject", "reviewer": "jane", "amount": "1.00"}
    assert_problem(await api.call("POST", path, json=reject_with_amount), 422, "invalid_decision")
    assert_problem(await api.call("POST", path, PAYMENTS, json={"decision": "approve", "reviewer": "jane"}), 403,
                   "insufficient_scope")
    unknown = "/v1/ops/payments/pay_nope/review"
    assert_problem(await api.call("POST", unknown, json={"decision": "approve", "reviewer": "jane"}), 404,
                   "payment_not_found")
    api.temporal.states["deposit-" + PAYMENT_ID] = deposit(DepositStatus.IN_REVIEW)
    precise = {"decision": "approve", "reviewer": "jane", "amount": "12.345"}
    assert_problem(await api.call("POST", path, json=precise), 422, "amount_precision")


async def test_review_answers_200_when_done_202_while_carried_out_409_when_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = f"/v1/ops/payments/{PAYMENT_ID}/review"
    api.temporal.states["deposit-" + PAYMENT_ID] = deposit(DepositStatus.IN_REVIEW)
    decisions = []

    def credited(decision: Any) -> DepositState:
        decisions.append(decision)
        return deposit(DepositStatus.CREDITED, reviewed_by=decision.reviewer)

    api.temporal.update = credited
    done = await api.call("POST", path, json={"decision": "approve", "reviewer": "jane", "amount": "12.50"})
    assert done.status_code == 200 and done.json()["status"] == "credited", done.text
    assert (decisions[0].amount_minor, decisions[0].reviewer) == (1250, "casino-a/jane")

    monkeypatch.setattr(payments, "REVIEW_WAIT_SECONDS", 0.05)
    api.temporal.update = lambda _decision: None
    later = await api.call("POST", path, json={"decision": "reject", "reviewer": "jane"})
    assert later.status_code == 202 and later.json()["status"] == "in_review"

    def refused(_decision: Any) -> None:
        raise WorkflowUpdateFailedError(ApplicationError("nothing", type="NothingCaptured"))

    api.temporal.update = refused
    assert_problem(await api.call("POST", path, json={"decision": "approve", "reviewer": "jane"}), 409,
                   "nothing_captured")


# --- GET /v1/ops/payments -------------------------------------------------------------------------------------


def payment_row(payment_id: str) -> PaymentRow:
    facts = PaymentRecord(payment_id=payment_id, client_id="casino-a", player_id="alice", method="card",
                          currency="JPY", amount_minor=5000, status="credited", created_at=NOW, updated_at=NOW,
                          psp="card", psp_reference="r", country="JP")
    return PaymentRow(facts, replace(money(captured=5000, credited=5000), fees_minor=120))


@pytest.mark.parametrize("query", [
    "status=lost", "player_id=a:b", "psp=CARD", "method=card!", "review_reason=" + "x" * 101, "limit=0",
    "limit=201", "from=1700000000", "from=2026-01-01T00:00:00", "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    "before=pay_zz", "before=" + "x" * 2000, "psp_reference=a%20b", "psp_reference=" + "r" * 201,
])
async def test_ops_payments_filters_are_validated(api: Api, query: str) -> None:
    assert_problem(await api.call("GET", f"/v1/ops/payments?{query}"), 422, "validation_error")


async def test_ops_payments_pages_newest_first(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    async def rows(_engine: Any, wanted: Any, *, limit: int, before: str | None) -> list[PaymentRow]:
        asked.append((wanted, limit, before))
        return [payment_row(f"pay_{i:024x}") for i in range(limit)]

    monkeypatch.setattr(payments, "list_payments", rows)
    page = (await api.call("GET", "/v1/ops/payments?status=credited&limit=2&from=2026-01-01T00:00:00%2B01:00")).json()
    assert [p["payment_id"] for p in page["payments"]] == [f"pay_{0:024x}", f"pay_{1:024x}"]
    assert page["next_before"] == f"pay_{1:024x}"
    item = page["payments"][0]
    assert (item["amount"], item["credited_amount"], item["fees"]) == ("5000", "5000", "120")
    assert item["temporal_ui_url"].endswith(f"/workflows/deposit-{item['payment_id']}")
    wanted, limit, _ = asked[0]
    assert wanted.status == "credited" and limit == 3 and wanted.created_from == datetime(2025, 12, 31, 23,
                                                                                          tzinfo=timezone.utc)
    assert_problem(await api.call("GET", "/v1/ops/payments", PAYMENTS), 403, "insufficient_scope")


async def test_an_unknown_page_cursor_is_a_422(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unknown(*_args: Any, **_kwargs: Any) -> list[PaymentRow]:
        raise LookupError("no such payment")

    monkeypatch.setattr(payments, "list_payments", unknown)
    assert_problem(await api.call("GET", f"/v1/ops/payments?before={PAYMENT_ID}"), 422, "validation_error")


# --- refunds --------------------------------------------------------------------------------------------------


def refund_record(refund_id: str, status: str = "pending", **changes: Any) -> RefundRecord:
    record = RefundRecord(refund_id=refund_id, payment_id=PAYMENT_ID, client_id="casino-a", player_id="alice",
                          psp="card", psp_payment_reference="card_1", currency="EUR", amount_minor=1000,
                          reason="player request", funding="player", held_minor=1000, shortfall_minor=0,
                          status=status, review_reason=None, psp_refund_reference=None, failure_code=None,
                          fee_minor=None, created_at=NOW, updated_at=NOW)
    return replace(record, **changes)


def refund_body(**changes: Any) -> dict[str, Any]:
    return {"amount": "10.00", "reason": "player request", **changes}


async def post_refund(api: Api, body: dict[str, Any], key: str = OPS, idempotency_key: str | None = None
                      ) -> httpx.Response:
    # As JSON escapes (ASCII), so that text no encoder would write (a lone surrogate) reaches the API too.
    headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex, "Content-Type": "application/json"}
    return await api.call("POST", f"/v1/payments/{PAYMENT_ID}/refunds", key, content=json.dumps(body),
                          headers=headers)


async def test_refund_requests_are_validated_before_anything_is_reserved(api: Api) -> None:
    api.temporal.states["deposit-" + PAYMENT_ID] = deposit()
    assert_problem(await post_refund(api, refund_body(allow_shortfall=True), PAYMENTS), 403, "insufficient_scope")
    assert_problem(await post_refund(api, refund_body(), OTHER), 403, "forbidden")
    assert_problem(await post_refund(api, refund_body(amount="10.001")), 422, "amount_precision")
    assert_problem(await post_refund(api, refund_body(amount="0")), 422, "invalid_amount")
    assert_problem(await post_refund(api, refund_body(reason="")), 422, "validation_error")
    assert_problem(await post_refund(api, refund_body(reason="x" * 201)), 422, "validation_error")
    for unprintable in ("a\x00b", "a\nb", "a\ud800b"):
        assert_problem(await post_refund(api, refund_body(reason=unprintable)), 422, "validation_error")
    assert_problem(await post_refund(api, refund_body(meta={"sandbox_scenario": "explode"})), 422, "validation_error")
    assert_problem(await post_refund(api, refund_body(card="4111111111111111")), 422, "validation_error")
    no_key = await api.call("POST", f"/v1/payments/{PAYMENT_ID}/refunds", json=refund_body())
    assert_problem(no_key, 422, "idempotency_key_required")
    unknown = await api.call("POST", "/v1/payments/pay_1/refunds", json=refund_body(), headers={"Idempotency-Key": "k"})
    assert_problem(unknown, 404, "payment_not_found")
    assert api.temporal.started == []


async def test_concurrent_refunds_are_decided_by_the_reservation(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 refunds of 10.00 on a 50.00 deposit: 5 reserved and started, 15 refused with what is left."""
    api.temporal.states["deposit-" + PAYMENT_ID] = deposit()
    left = {"minor": 5000}

    async def reserve(_ledger: Any, *, refund_id: str, amount_minor: int, funding: str, **_: Any) -> RefundRecord:
        assert funding == "player"
        await asyncio.sleep(0)  # the requests interleave here, as in the database
        if amount_minor > left["minor"]:
            raise RefundRefused("refund_exceeds_refundable", "more than is refundable")
        left["minor"] -= amount_minor
        return refund_record(refund_id)

    async def what_is_left(*_args: Any) -> PaymentMoney:
        return money(captured=5000, credited=5000, pending=5000 - left["minor"])

    monkeypatch.setattr(refunds, "request_refund", reserve)
    monkeypatch.setattr(refunds, "payment_money", what_is_left)
    answers = await asyncio.gather(*(post_refund(api, refund_body()) for _ in range(20)))
    assert sorted(a.status_code for a in answers) == [201] * 5 + [409] * 15
    refused = [a.json() for a in answers if a.status_code == 409]
    assert {(r["code"], r["refundable_amount"]) for r in refused} == {("refund_exceeds_refundable", "0.00")}
    started = api.temporal.started
    assert len(started) == 5 and all(s["id"] == f"refund-{s['arg'].refund_id}" for s in started)
    assert all(s["arg"].refund_id.startswith("ref_") and refunds.REFUND_ID_RE.fullmatch(s["arg"].refund_id)
               for s in started)


async def test_a_retried_refund_gets_the_same_answer(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api.temporal.states["deposit-" + PAYMENT_ID] = deposit()
    reserved = []

    async def reserve(_ledger: Any, *, refund_id: str, **_: Any) -> RefundRecord:
        reserved.append(refund_id)
        return refund_record(refund_id)

    monkeypatch.setattr(refunds, "request_refund", reserve)
    api.temporal.start_error = RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
    assert_problem(await post_refund(api, refund_body(), idempotency_key="r-1"), 503, "temporal_unavailable")
    api.temporal.start_error = None
    first = await post_refund(api, refund_body(), idempotency_key="r-1")
    again = await post_refund(api, refund_body(), idempotency_key="r-1")
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    # The crash between reservation and start was healed with the same refund id.
    assert reserved == [first.json()["refund_id"]] * 2
    api.temporal.start_error = WorkflowAlreadyStartedError("refund-x", "RefundWorkflow")
    assert (await post_refund(api, refund_body(), idempotency_key="r-2")).status_code == 201


@pytest.mark.parametrize(("raised", "status", "code"), [
    (RefundRefused("payment_not_refundable", "nothing credited"), 409, "payment_not_refundable"),
    (RefundRefused("payment_not_found", "not recorded"), 404, "payment_not_found"),
    (RefundRefused("currency_mismatch", "USD"), 422, "currency_mismatch"),
    (InsufficientFunds("player:alice:EUR", 0), 402, "insufficient_funds"),
])
async def test_refund_refusals(api: Api, monkeypatch: pytest.MonkeyPatch, raised: Exception, status: int,
                               code: str) -> None:
    api.temporal.states["deposit-" + PAYMENT_ID] = deposit()

    async def refuse(*_args: Any, **_kwargs: Any) -> RefundRecord:
        raise raised

    monkeypatch.setattr(refunds, "request_refund", refuse)
    assert_problem(await post_refund(api, refund_body()), status, code)
    assert api.temporal.started == []


async def test_a_refund_reads_its_workflow_and_its_record(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    refund_id = f"ref_{'b' * 24}"

    async def record(*_args: Any) -> RefundRecord:
        return refund_record(refund_id, psp_refund_reference="card_r1", fee_minor=25)

    monkeypatch.setattr(refunds, "get_refund", record)
    assert_problem(await api.call("GET", "/v1/refunds/ref_1"), 404, "refund_not_found")
    only_record = (await api.call("GET", f"/v1/refunds/{refund_id}")).json()
    assert (only_record["status"], only_record["fee"], only_record["psp_reference"]) == ("pending", "0.25", "card_r1")
    api.temporal.states[f"refund-{refund_id}"] = RefundState(
        refund_id=refund_id, payment_id=PAYMENT_ID, client_id="casino-a", player_id="alice", amount_minor=1000,
        currency="EUR", funding="player", status="in_review", created_at=NOW.isoformat(),
        updated_at=(NOW + timedelta(minutes=1)).isoformat(), psp="card", review_reason="psp_status_unknown")
    merged = (await api.call("GET", f"/v1/refunds/{refund_id}")).json()
    assert (merged["status"], merged["review_reason"], merged["psp_reference"]) == (
        "in_review", "psp_status_unknown", "card_r1")
    assert merged["temporal_ui_url"].endswith(f"/workflows/refund-{refund_id}")
    assert_problem(await api.call("GET", f"/v1/refunds/{refund_id}", OTHER), 403, "forbidden")


# --- disputes and margin --------------------------------------------------------------------------------------


async def test_ops_disputes(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def listed(_engine: Any, *, state: str | None, limit: int, before: str | None) -> list[DisputeRecord]:
        return [DisputeRecord(psp="card", dispute_id=f"dp_{i}", payment_id=PAYMENT_ID, player_id="alice",
                              currency="EUR", amount_minor=5000, held_minor=3000, shortfall_minor=2000,
                              state="opened", reason_code="10.4", fee_minor=None, opened_at=NOW, resolved_at=None)
                for i in range(limit)]

    monkeypatch.setattr(disputes, "list_disputes", listed)
    page = (await api.call("GET", "/v1/ops/disputes?state=opened&limit=1")).json()
    assert page["next_before"] == "card:dp_0"
    item = page["disputes"][0]
    assert (item["amount"], item["held"], item["shortfall"], item["fee"]) == ("50.00", "30.00", "20.00", None)
    assert item["temporal_ui_url"].endswith("/workflows/dispute-card-dp_0")
    for query in ("state=unmatched", "limit=201", "before=dp_0", "before=card:a/b"):
        assert_problem(await api.call("GET", f"/v1/ops/disputes?{query}"), 422, "validation_error")


async def test_ops_margin(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def report(_engine: Any, *, created_from: datetime, created_to: datetime) -> list[MarginRow]:
        return [MarginRow(method="card", psp="card", currency="EUR", deposits_count=2, deposits_minor=10000,
                          refunds_count=1, refunds_minor=1000, chargebacks_count=0, chargebacks_minor=0,
                          fees_minor=150, payouts_count=1, payouts_minor=2000, fx_margin_minor=0,
                          net_margin_minor=6850,
                          chargeback_rate="0.000000", cost_per_deposit_minor=75)]

    monkeypatch.setattr(margin, "margin", report)
    body = (await api.call("GET", "/v1/ops/margin?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z")).json()
    assert body["from"] == "2026-01-01T00:00:00+00:00" and body["to"] == "2026-02-01T00:00:00+00:00"
    row = body["rows"][0]
    assert (row["net_margin"], row["cost_per_deposit"], row["chargeback_rate"]) == ("68.50", "0.75", "0.000000")
    for query in ("from=2026-01-01T00:00:00Z", "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
                  "from=2025-01-01T00:00:00Z&to=2026-01-03T00:00:00Z", "from=2026-01-01&to=2026-02-01"):
        assert_problem(await api.call("GET", f"/v1/ops/margin?{query}"), 422, "validation_error")
    assert_problem(await api.call("GET", "/v1/ops/margin?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
                                  PAYMENTS), 403, "insufficient_scope")


def test_every_money_route_documents_its_problems() -> None:
    schema = create_app(Settings()).openapi()
    expected = {
        ("get", "/v1/payments/{payment_id}"): {"404"},
        ("post", "/v1/ops/payments/{payment_id}/review"): {"202", "404", "409", "422", "504"},
        ("get", "/v1/ops/payments"): {"422"},
        ("post", "/v1/payments/{payment_id}/refunds"): {"402", "404", "409", "422", "504"},
        ("get", "/v1/payments/{payment_id}/refunds"): {"404"},
        ("get", "/v1/refunds/{refund_id}"): {"404"},
        ("get", "/v1/ops/disputes"): {"422"},
        ("get", "/v1/ops/margin"): {"422"},
    }
    for (method, path), statuses in expected.items():
        responses = schema["paths"][path][method]["responses"]
        assert statuses | {"401", "403", "503"} <= responses.keys(), (path, sorted(responses))
        assert "application/problem+json" in responses["404" if "404" in statuses else "422"]["content"]


# --- webhooks: routing by kind --------------------------------------------------------------------------------


@dataclass
class FakeInbox:
    marks: list[tuple[str, str | None]] = field(default_factory=list)
    engine: Any = None

    async def mark(self, _psp: str, _event_id: str, state: str, _now: datetime, reason: str | None = None) -> None:
        self.marks.append((state, reason))


def event(kind: str, reference: str, **changes: Any) -> WebhookEvent:
    return WebhookEvent(psp="card", event_id=uuid.uuid4().hex, payment_id=reference, psp_reference="card_r",
                        status="succeeded", amount_minor=1000, currency="EUR", occurred_at=NOW.isoformat(),
                        kind=kind, **changes)


async def deliver(temporal: FakeTemporal, webhook: WebhookEvent) -> tuple[str, list[tuple[str, str | None]]]:
    inbox = FakeInbox()
    outcome = await webhooks.deliver(temporal, "payloop", inbox, webhook, NOW)  # type: ignore[arg-type]
    return outcome, inbox.marks


async def test_a_refund_event_reaches_its_refund_workflow() -> None:
    temporal = FakeTemporal()
    refund_id = f"ref_{'c' * 24}"
    temporal.states[f"refund-{refund_id}"] = object()
    assert await deliver(temporal, event("refund", refund_id)) == ("accepted", [("signalled", None)])
    assert temporal.signals[0][0] == f"refund-{refund_id}"
    unknown = f"ref_{'d' * 24}"
    assert await deliver(temporal, event("refund", unknown)) == ("dead_letter", [("dead_letter", "unknown_refund")])
    assert await deliver(temporal, event("refund", PAYMENT_ID)) == ("dead_letter",
                                                                    [("dead_letter", "unknown_refund")])
    assert await deliver(temporal, event("payment", refund_id)) == ("dead_letter",
                                                                   [("dead_letter", "unknown_payment")])


async def test_a_dispute_event_signals_with_start_its_dispute_workflow() -> None:
    temporal = FakeTemporal()
    opened = event("dispute", PAYMENT_ID, dispute_id="dp_1", reason_code="10.4")
    assert await deliver(temporal, opened) == ("accepted", [("signalled", None)])
    started = temporal.started[0]
    assert started["id"] == "dispute-card-dp_1" and started["start_signal"] == "psp_event"
    assert started["start_signal_args"][0].event_id == opened.event_id and started["arg"].payment_id == PAYMENT_ID
    for dispute_id, reason in (("dp/../1", "malformed_dispute_id"), (None, "malformed_dispute_id")):
        assert await deliver(temporal, event("dispute", PAYMENT_ID, dispute_id=dispute_id)) == (
            "dead_letter", [("dead_letter", reason)])
    assert await deliver(temporal, event("dispute", "po_1", dispute_id="dp_2")) == (
        "dead_letter", [("dead_letter", "unknown_payment")])
    temporal.start_error = WorkflowAlreadyStartedError("dispute-card-dp_1", "DisputeWorkflow")
    assert await deliver(temporal, opened) == ("dead_letter", [("dead_letter", "dispute_finished")])
    temporal.start_error = RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
    assert await deliver(temporal, opened) == ("retry_later", [("dead_letter", "signal_failed")])


def test_an_unverified_body_names_the_refund_before_its_payment() -> None:
    refund_id = f"ref_{'e' * 24}"
    assert webhooks._find_reference({"data": {"payment": PAYMENT_ID, "refund": refund_id}}) == refund_id
    assert webhooks._find_reference({"reference": PAYMENT_ID}) == PAYMENT_ID


def test_a_replayed_event_keeps_its_kind_and_dispute() -> None:
    stored = {"psp": "card", "event_id": "e1", "payment_id": PAYMENT_ID, "psp_reference": "r", "status": "opened",
              "amount_minor": 1, "currency": "EUR", "received_at": NOW, "failure_code": None}
    rebuilt = webhooks._stored_event({**stored, "kind": "dispute", "dispute_id": "dp_1", "reason_code": "10.4",
                                      "fee_minor": 1500})
    assert (rebuilt.kind, rebuilt.dispute_id, rebuilt.reason_code, rebuilt.fee_minor) == ("dispute", "dp_1", "10.4",
                                                                                         1500)
    # Stored before the inbox kept kinds: the id's shape says it.
    assert webhooks._stored_event({**stored, "payment_id": "po_" + "0" * 24}).kind == "payout"
    assert webhooks._stored_event(stored).kind == "payment"
