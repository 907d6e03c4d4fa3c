"""Disputes on SQLite and PostgreSQL: the PSP's pull-back, the player's hold and shortfall, lost and won, their
fees, idempotency, refusals that write nothing, and the list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    AlreadyFinal,
    DisputeRecord,
    DisputeRefused,
    Ledger,
    PaymentMoney,
    RecordConflict,
    RecordNotFound,
    RefundRefused,
    TransferRequest,
    assert_invariants,
    chargebacks_account,
    disputes_account,
    fee_account,
    house_account,
    list_disputes,
    open_dispute,
    payment_money,
    request_refund,
    resolve_dispute,
)
from ledger.disputes import get_dispute
from tests.ledger.money_helpers import CLEARING, P1, PSP, RECEIVABLES, T0, balance, credited, snapshot

DISPUTES = disputes_account("EUR")
CHARGEBACKS = chargebacks_account("EUR")


async def dispute(ledger: Ledger, dispute_id: str = "d1", amount: int = 5000, **changes: object) -> DisputeRecord:
    args = dict(psp=PSP, dispute_id=dispute_id, payment_id="pay_1", amount_minor=amount, currency="EUR",
                reason_code="10.4", now=T0) | changes
    return await open_dispute(ledger, **args)  # type: ignore[arg-type]


async def resolve(ledger: Ledger, outcome: str, dispute_id: str = "d1", fee: int | None = None) -> DisputeRecord:
    return await resolve_dispute(ledger, psp=PSP, dispute_id=dispute_id, outcome=outcome, fee_minor=fee,
                                 method="card", now=T0 + timedelta(days=30))


async def spend(ledger: Ledger, amount: int) -> None:
    await ledger.post_transfer(TransferRequest(f"bet:{amount}", P1, house_account("games", "EUR"), amount, "EUR",
                                               "bet", "round"))


async def accounts(ledger: Ledger) -> dict[str, tuple[int, int, int]]:
    return {name: await balance(ledger, account) for name, account in (
        ("player", P1), ("clearing", CLEARING), ("disputes", DISPUTES), ("chargebacks", CHARGEBACKS),
        ("receivables", RECEIVABLES))}


async def test_a_lost_dispute_of_a_funded_player(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    opened = await dispute(ledger)
    assert (opened.state, opened.held_minor, opened.shortfall_minor, opened.player_id) == ("opened", 5000, 0, "p1")
    assert await accounts(ledger) == {"player": (5000, 5000, 0), "clearing": (0, 0, 0),
                                      "disputes": (-5000, 0, 0), "chargebacks": (0, 0, 5000),
                                      "receivables": (0, 0, 0)}
    money = await payment_money(engine, "pay_1")
    assert (money.disputed_minor, money.refundable_minor) == (5000, 0)
    await assert_invariants(engine)

    lost = await resolve(ledger, "lost", fee=1500)
    assert (lost.state, lost.fee_minor, lost.resolved_at) == ("lost", 1500, T0 + timedelta(days=30))
    assert await accounts(ledger) == {"player": (0, 0, 0), "clearing": (1500, 0, 0), "disputes": (0, 0, 0),
                                      "chargebacks": (0, 0, 0), "receivables": (0, 0, 0)}
    assert await balance(ledger, fee_account(PSP, "EUR")) == (-1500, 0, 0)
    assert await payment_money(engine, "pay_1") == PaymentMoney(5000, 5000, "deposit:pay_1:credit", 0, 0, 0, 5000,
                                                                1500)
    chargeback = await ledger.get_transfer("dispute:card:d1:chargeback")
    assert chargeback is not None and (chargeback.debit_account, chargeback.credit_account, chargeback.amount) == (
        CHARGEBACKS, DISPUTES, 5000)
    await assert_invariants(engine)


async def test_a_won_dispute_with_a_shortfall_gives_everything_back(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    await spend(ledger, 3000)
    opened = await dispute(ledger)
    assert (opened.held_minor, opened.shortfall_minor) == (2000, 3000)
    assert await accounts(ledger) == {"player": (2000, 2000, 0), "clearing": (0, 0, 0),
                                      "disputes": (-5000, 0, 0), "chargebacks": (3000, 0, 2000),
                                      "receivables": (-3000, 0, 0)}
    await assert_invariants(engine)
    won = await resolve(ledger, "won")
    assert won.state == "won"
    assert await accounts(ledger) == {"player": (2000, 0, 0), "clearing": (-5000, 0, 0), "disputes": (0, 0, 0),
                                      "chargebacks": (0, 0, 0), "receivables": (0, 0, 0)}
    money = await payment_money(engine, "pay_1")
    assert (money.disputed_minor, money.charged_back_minor, money.refundable_minor) == (0, 0, 5000)
    await assert_invariants(engine)


async def test_a_player_with_no_funds_left_owes_it_all(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    await spend(ledger, 5000)
    opened = await dispute(ledger, amount=2500)
    assert (opened.held_minor, opened.shortfall_minor) == (0, 2500)
    assert await ledger.get_transfer("dispute:card:d1:hold") is None
    await assert_invariants(engine)
    await resolve(ledger, "lost")
    assert await accounts(ledger) == {"player": (0, 0, 0), "clearing": (-2500, 0, 0), "disputes": (0, 0, 0),
                                      "chargebacks": (0, 0, 0), "receivables": (-2500, 0, 0)}
    await assert_invariants(engine)


async def test_an_open_dispute_blocks_refunds_of_its_money(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    await dispute(ledger, amount=4500)
    with pytest.raises(RefundRefused) as refused:
        await request_refund(ledger, refund_id="r1", payment_id="pay_1", client_id="c1", amount_minor=600,
                             currency="EUR", reason=None, funding="player", allow_shortfall=True, now=T0)
    assert refused.value.code == "refund_exceeds_refundable"
    await assert_invariants(engine)


async def test_the_same_dispute_again_moves_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    first = await dispute(ledger)
    before = await snapshot(engine)
    assert await dispute(ledger) == first
    assert await dispute(ledger, reason_code="other", now=T0 + timedelta(hours=1)) == first  # a later copy
    for changes in (dict(amount=4000), dict(currency="USD")):
        with pytest.raises(RecordConflict) as conflict:
            await dispute(ledger, **changes)
        assert conflict.value.code == "dispute_conflict"
    assert await snapshot(engine) == before

    lost = await resolve(ledger, "lost", fee=100)
    after = await snapshot(engine)
    assert await resolve(ledger, "lost", fee=100) == lost
    with pytest.raises(AlreadyFinal) as final:
        await resolve(ledger, "won")
    assert (final.value.code, final.value.status) == ("dispute_already_final", "lost")
    with pytest.raises(RecordConflict):
        await resolve(ledger, "lost", fee=200)
    assert await snapshot(engine) == after
    with pytest.raises(RecordNotFound) as missing:
        await resolve(ledger, "won", dispute_id="nope")
    assert missing.value.code == "dispute_not_found"
    with pytest.raises(ValueError):
        await resolve(ledger, "maybe")
    await assert_invariants(engine)


async def test_refusals_write_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    before = await snapshot(engine)
    for code, changes in (("payment_not_found", dict(payment_id="nope")), ("currency_mismatch", dict(currency="USD"))):
        with pytest.raises(DisputeRefused) as refused:
            await dispute(ledger, **changes)
        assert refused.value.code == code
    assert await snapshot(engine) == before
    assert await get_dispute(engine, PSP, "d1") is None
    await assert_invariants(engine)


async def test_list_disputes_newest_first_by_state_and_pages(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine, amount=10_000)
    for i in range(5):
        await dispute(ledger, f"d{i}", amount=1000, now=T0 + timedelta(hours=i // 2))  # pairs tie on opened_at
    await resolve(ledger, "won", dispute_id="d1")
    await resolve(ledger, "lost", dispute_id="d3")
    assert [d.dispute_id for d in await list_disputes(engine)] == ["d4", "d3", "d2", "d1", "d0"]
    assert [d.dispute_id for d in await list_disputes(engine, state="opened")] == ["d4", "d2", "d0"]
    page = await list_disputes(engine, limit=2)
    rest = await list_disputes(engine, limit=10, before=page[-1].key)
    assert [d.dispute_id for d in page + rest] == ["d4", "d3", "d2", "d1", "d0"]
    assert [d.dispute_id for d in await list_disputes(engine, state="opened", before="card:d2")] == ["d0"]
    with pytest.raises(RecordNotFound):
        await list_disputes(engine, before="card:nope")
    await assert_invariants(engine)
