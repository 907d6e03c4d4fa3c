"""The quote activity (activities/fx.py): the rate source asked a few times by the activity itself, then a
non-retryable FX_UNAVAILABLE with no money moved; a database error raised as it is, for the workflow's database
retries; a payment in the wallet currency never asks the source. Both backends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.fx import FxActivities
from api.routes.payments import _init_outcome
from fx import FxQuote, FxUnavailable
from ledger import Ledger
from ledger.fx import fx_conversions
from ledger.models import ledger_transfers
from players.wallets import set_wallet_currency
from tests.ledger.money_helpers import T0
from workflows.types import DepositStatus, ErrorType, FxDirection, InitAnswer, QuoteConversionInput

QUOTE = FxQuote("USD", "EUR", "0.9210", "fx-x", "q_1", "2026-12-01T12:01:00+00:00")


class ScriptedSource:
    """Answers its script in order (an exception is raised), and counts the questions."""

    name = "scripted"

    def __init__(self, *answers: FxQuote | Exception) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def quote(self, from_currency: str, to_currency: str) -> FxQuote:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def activities(engine: AsyncEngine, source: ScriptedSource) -> FxActivities:
    return FxActivities(engine, Ledger(engine), source, 50, clock=lambda: T0, rate_source_waits_seconds=(0.01, 0.01))


def deposit(player: str, currency: str = "USD") -> QuoteConversionInput:
    return QuoteConversionInput(f"pay_{player}", player, currency, 10000, FxDirection.CREDIT)


async def rows(engine: AsyncEngine, table: sa.Table) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


async def test_a_source_down_for_a_while_is_asked_again_and_a_dead_one_ends_it(engine: AsyncEngine) -> None:
    await set_wallet_currency(engine, "p1", "EUR", now=T0, actor="c1")
    down = FxUnavailable("FX source answered 503", retryable=True)
    flaky = ScriptedSource(down, down, QUOTE)
    locked = await ActivityEnvironment().run(activities(engine, flaky).quote_conversion, deposit("p1"))
    assert flaky.asked == 3 and locked.lock is not None and locked.lock.wallet_amount_minor == 9163

    dead = ScriptedSource(down, down, down, QUOTE)
    with pytest.raises(ApplicationError) as ended:
        await ActivityEnvironment().run(activities(engine, dead).quote_conversion, deposit("p1"))
    assert (ended.value.type, ended.value.non_retryable, dead.asked) == (ErrorType.FX_UNAVAILABLE, True, 3)
    refusing = ScriptedSource(FxUnavailable("FX source refused USD/EUR: 404", retryable=False))
    with pytest.raises(ApplicationError, match="refused") as refused:
        await ActivityEnvironment().run(activities(engine, refusing).quote_conversion, deposit("p1"))
    assert refused.value.non_retryable and refusing.asked == 1  # a refusal is not asked again
    assert await rows(engine, ledger_transfers) == await rows(engine, fx_conversions) == 0  # no money moved


async def test_a_database_error_is_retryable_and_the_wallet_currency_never_asks_the_source(
        engine: AsyncEngine) -> None:
    source = ScriptedSource()
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE players RENAME TO players_away"))
    with pytest.raises(Exception) as hiccup:
        await ActivityEnvironment().run(activities(engine, source).quote_conversion, deposit("p2", "EUR"))
    # Not an ApplicationError: the workflow's database policy retries it (DATABASE_STEP / UNTIL_DONE).
    assert not isinstance(hiccup.value, ApplicationError) and isinstance(hiccup.value, sa.exc.DBAPIError)
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE players_away RENAME TO players"))
    retried = await ActivityEnvironment().run(activities(engine, source).quote_conversion, deposit("p2", "EUR"))
    assert (retried.wallet_currency, retried.lock, source.asked) == ("EUR", None, 0)


@pytest.mark.parametrize(("failure_code", "status", "code"), [
    ("fx_unavailable", 502, "fx_unavailable"),  # our rate source, not the player's bank: retryable, not a decline
    ("screening_unavailable", 502, "screening_unavailable"),
    ("card_declined", 402, "payment_declined"),
])
def test_the_init_answer_of_a_deposit_without_an_exchange_rate_is_a_retryable_502(
        failure_code: str, status: int, code: str) -> None:
    answered_status, body = _init_outcome(InitAnswer("pay_1", DepositStatus.FAILED, failure_code=failure_code))
    assert (answered_status, body["code"], body["payment_id"]) == (status, code, "pay_1")
    assert body["retryable"] is (status == 502)
