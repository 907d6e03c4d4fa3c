"""Refunds on SQLite and PostgreSQL: reservation, player-funded holds with and without a shortfall, uncredited
refunds, the PSP's final word, review, idempotency, refusals that write nothing, and the reservation race."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    AlreadyFinal,
    InsufficientFunds,
    InvalidTransfer,
    Ledger,
    PaymentMoney,
    RecordConflict,
    RecordNotFound,
    RefundRecord,
    RefundRefused,
    TransferRequest,
    assert_invariants,
    credit_deposit,
    fee_account,
    get_refund,
    house_account,
    mark_refund_in_review,
    payment_money,
    payment_refunds,
    psp_clearing_account,
    record_payment,
    record_uncredited_capture,
    request_refund,
    settle_refund,
)
from tests.conftest import FreshDatabase
from tests.ledger.money_helpers import (
    CLEARING,
    P1,
    PSP,
    RECEIVABLES,
    T0,
    balance,
    credited,
    payment,
    row_counts,
    snapshot,
)


async def refund(ledger: Ledger, refund_id: str = "r1", amount: int = 1000, **changes: Any) -> RefundRecord:
    args = dict(refund_id=refund_id, payment_id="pay_1", client_id="c1", amount_minor=amount, currency="EUR",
                reason="player asked", funding="player", allow_shortfall=False, now=T0) | changes
    return await request_refund(ledger, **args)


async def settle(ledger: Ledger, refund_id: str, outcome: str, fee: int | None = None) -> RefundRecord:
    return await settle_refund(ledger, refund_id, outcome=outcome, psp_refund_reference=f"psp-{refund_id}",
                               failure_code=None if outcome == "succeeded" else "declined", fee_minor=fee,
                               method="card", now=T0)


async def spend(ledger: Ledger, player_account_id: str, amount: int) -> None:
    """The player bets some of the deposit away."""
    await ledger.post_transfer(TransferRequest(f"bet:{amount}", player_account_id, house_account("games", "EUR"),
                                               amount, "EUR", "bet", "round"))


async def test_a_player_refund_holds_then_posts_with_its_fee(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    held = await refund(ledger)
    assert (held.status, held.funding, held.held_minor, held.shortfall_minor, held.psp, held.psp_payment_reference,
            held.player_id) == ("pending", "player", 1000, 0, PSP, "ref-pay_1", "p1")
    assert await balance(ledger, P1) == (5000, 1000, 0)
    assert (await payment_money(engine, "pay_1")).refund_pending_minor == 1000
    await assert_invariants(engine)

    done = await settle(ledger, "r1", "succeeded", fee=25)
    assert (done.status, done.psp_refund_reference, done.fee_minor) == ("succeeded", "psp-r1", 25)
    assert await balance(ledger, P1) == (4000, 0, 0)
    assert await balance(ledger, CLEARING) == (-5000 + 1000 + 25, 0, 0)
    assert await balance(ledger, fee_account(PSP, "EUR")) == (-25, 0, 0)
    money = await payment_money(engine, "pay_1")
    assert money == PaymentMoney(5000, 5000, "deposit:pay_1:credit", 1000, 0, 0, 0, 25)
    assert money.refundable_minor == 4000
    assert await get_refund(engine, "r1") == done
    await assert_invariants(engine)


async def test_a_failed_refund_releases_everything(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    await refund(ledger, amount=5000)
    failed = await settle(ledger, "r1", "failed")
    assert (failed.status, failed.failure_code) == ("failed", "declined")
    assert await balance(ledger, P1) == (5000, 0, 0)
    assert (await payment_money(engine, "pay_1")).refundable_minor == 5000
    assert (await refund(ledger, "r2", amount=5000)).status == "pending"  # all of it can be refunded again
    await assert_invariants(engine)


async def test_a_shortfall_is_owed_by_the_player(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    await spend(ledger, P1, 4700)  # 3.00 left
    with pytest.raises(InsufficientFunds):
        await refund(ledger, amount=1000)
    short = await refund(ledger, amount=1000, allow_shortfall=True)
    assert (short.held_minor, short.shortfall_minor) == (300, 700)
    assert await balance(ledger, P1) == (300, 300, 0)
    assert await balance(ledger, RECEIVABLES) == (0, 700, 0)
    assert await balance(ledger, CLEARING) == (-5000, 0, 1000)
    await assert_invariants(engine)
    await settle(ledger, "r1", "succeeded")
    assert await balance(ledger, P1) == (0, 0, 0)  # never below zero
    assert await balance(ledger, RECEIVABLES) == (-700, 0, 0)
    assert await balance(ledger, CLEARING) == (-4000, 0, 0)
    await assert_invariants(engine)


async def test_a_failed_shortfall_refund_voids_both_holds(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    await spend(ledger, P1, 5000)  # nothing left
    short = await refund(ledger, amount=2000, allow_shortfall=True)
    assert (short.held_minor, short.shortfall_minor) == (0, 2000)
    await mark_refund_in_review(ledger, "r1", review_reason="psp_status_unknown", now=T0)
    assert await balance(ledger, RECEIVABLES) == (0, 2000, 0)  # kept where it is during review
    await settle(ledger, "r1", "failed")
    assert await balance(ledger, RECEIVABLES) == (0, 0, 0)
    assert await balance(ledger, CLEARING) == (-5000, 0, 0)
    await assert_invariants(engine)


async def test_an_uncredited_refund_holds_nothing_and_books_its_fee(ledger: Ledger, engine: AsyncEngine) -> None:
    await record_payment(engine, payment(status="rejected"))
    await record_uncredited_capture(ledger, payment_id="pay_1", psp=PSP, method="card", currency="EUR",
                                    captured_minor=5000, fee_minor=0, now=T0)
    with pytest.raises(RefundRefused) as refused:  # the player was never credited: nothing of theirs to take
        await refund(ledger, amount=5000)
    assert refused.value.code == "payment_not_refundable"
    back = await refund(ledger, amount=5000, funding="uncredited")
    assert (back.held_minor, back.shortfall_minor) == (0, 0)
    assert (await payment_money(engine, "pay_1")).refund_pending_minor == 5000
    await settle(ledger, "r1", "succeeded", fee=40)
    assert await payment_money(engine, "pay_1") == PaymentMoney(5000, 0, None, 5000, 0, 0, 0, 40, 5000)
    assert await balance(ledger, CLEARING) == (40, 0, 0)  # only the fee: the capture was never in the ledger
    await assert_invariants(engine)


async def test_a_stray_capture_at_a_left_psp_reserves_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    stray = await refund(ledger, amount=5000, funding="uncredited", psp="card_b", psp_payment_reference="b-77")
    assert (stray.psp, stray.psp_payment_reference) == ("card_b", "b-77")
    assert (await payment_money(engine, "pay_1")).refund_pending_minor == 0
    await settle(ledger, "r1", "succeeded", fee=10)
    assert (await payment_money(engine, "pay_1")).refunded_minor == 0
    assert await balance(ledger, psp_clearing_account("card_b", "EUR")) == (10, 0, 0)
    with pytest.raises(InvalidTransfer):  # the player's money is at the payment's PSP, not here
        await refund(ledger, "r2", funding="player", psp="card_b", psp_payment_reference="b-77")
    with pytest.raises(RefundRefused) as refused:  # another PSP's reference cannot be guessed
        await refund(ledger, "r3", funding="uncredited", psp="card_b")
    assert refused.value.code == "payment_not_refundable"
    await assert_invariants(engine)


async def test_refusals_write_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    await record_payment(engine, payment("pay_new", status="pending", psp=None))
    await refund(ledger, "r0", amount=4000)
    before = await snapshot(engine)
    cases = {
        "payment_not_found": dict(payment_id="nope"),
        "currency_mismatch": dict(currency="USD"),
        "payment_not_refundable": dict(payment_id="pay_new"),
        "refund_exceeds_refundable": dict(amount=1001),
    }
    for code, changes in cases.items():
        with pytest.raises(RefundRefused) as refused:
            await refund(ledger, **changes)
        assert refused.value.code == code
        assert await snapshot(engine) == before, code
    await spend(ledger, P1, 500)  # 5.00 available (40.00 held) of the 10.00 asked
    before = await snapshot(engine)
    with pytest.raises(InsufficientFunds) as short:
        await refund(ledger, amount=1000)
    assert (short.value.account_id, short.value.available) == (P1, 500)
    assert await snapshot(engine) == before
    await assert_invariants(engine)


async def test_the_same_refund_again_moves_nothing(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    first = await refund(ledger)
    before = await snapshot(engine)
    assert await refund(ledger) == first
    assert await refund(ledger, psp=PSP, psp_payment_reference="ref-pay_1") == first
    assert await snapshot(engine) == before
    for changes in (dict(amount=1001), dict(reason="other"), dict(funding="uncredited"), dict(client_id="c2"),
                    dict(psp_payment_reference="ref-x")):
        with pytest.raises(RecordConflict) as conflict:
            await refund(ledger, **changes)
        assert conflict.value.code == "refund_conflict"
    assert await snapshot(engine) == before

    done = await settle(ledger, "r1", "succeeded", fee=25)
    after = await snapshot(engine)
    assert await settle(ledger, "r1", "succeeded", fee=25) == done
    with pytest.raises(AlreadyFinal) as final:
        await settle(ledger, "r1", "failed")
    assert (final.value.code, final.value.status) == ("refund_already_final", "succeeded")
    with pytest.raises(RecordConflict):
        await settle(ledger, "r1", "succeeded", fee=30)
    with pytest.raises(AlreadyFinal):
        await mark_refund_in_review(ledger, "r1", review_reason="x", now=T0)
    assert await snapshot(engine) == after
    for call in (settle(ledger, "nope", "failed"), mark_refund_in_review(ledger, "nope", review_reason="x", now=T0)):
        with pytest.raises(RecordNotFound) as missing:
            await call
        assert missing.value.code == "refund_not_found"
    with pytest.raises(ValueError):
        await settle(ledger, "r1", "maybe")
    await assert_invariants(engine)


async def test_review_keeps_the_money_and_either_outcome_ends_it(ledger: Ledger, engine: AsyncEngine) -> None:
    await credited(ledger, engine)
    await refund(ledger, "r1")
    await refund(ledger, "r2")
    for refund_id in ("r1", "r2"):
        for _ in range(2):
            reviewed = await mark_refund_in_review(ledger, refund_id, review_reason="psp_status_unknown", now=T0)
        assert (reviewed.status, reviewed.review_reason) == ("in_review", "psp_status_unknown")
    assert await balance(ledger, P1) == (5000, 2000, 0)
    await settle(ledger, "r1", "succeeded")
    await settle(ledger, "r2", "failed")
    assert await balance(ledger, P1) == (4000, 0, 0)
    assert [(r.refund_id, r.status) for r in await payment_refunds(engine, "pay_1")] == [
        ("r1", "succeeded"), ("r2", "failed")]
    assert await payment_refunds(engine, "nope") == []
    await assert_invariants(engine)


async def test_concurrent_refunds_never_exceed_the_refundable(fresh_db: FreshDatabase) -> None:
    engine = fresh_db.engine(pool_size=20)
    try:
        ledger = Ledger(engine)
        await credited(ledger, engine, amount=5000)
        results = await asyncio.gather(*(refund(ledger, f"r{i}", amount=1000) for i in range(20)),
                                       return_exceptions=True)
        records = [r for r in results if isinstance(r, RefundRecord)]
        refused = [r for r in results if isinstance(r, RefundRefused)]
        assert len(records) == 5 and len(refused) == 15, results
        assert {r.code for r in refused} == {"refund_exceeds_refundable"}
        assert (await row_counts(engine))["refunds"] == 5
        assert (await payment_money(engine, "pay_1")).refund_pending_minor == 5000
        assert await balance(ledger, P1) == (5000, 5000, 0)
        await assert_invariants(engine)
    finally:
        await engine.dispose()


async def test_concurrent_copies_of_one_refund_hold_once(fresh_db: FreshDatabase) -> None:
    engine = fresh_db.engine(pool_size=10)
    try:
        ledger = Ledger(engine)
        await credited(ledger, engine)
        results = await asyncio.gather(*(refund(ledger, "r1") for _ in range(10)))
        assert len(set(results)) == 1
        assert await balance(ledger, P1) == (5000, 1000, 0)
        assert (await payment_money(engine, "pay_1")).refund_pending_minor == 1000
        await assert_invariants(engine)
    finally:
        await engine.dispose()


async def test_the_players_refunds_take_only_the_credited_part_of_a_capture(ledger: Ledger, engine: AsyncEngine) -> None:
    """A review approved 30.00 of a 50.00 capture: the other 20.00 goes back as an uncredited refund, and the
    player's own refunds may take the 30.00 credited — never the 20.00 that was never theirs."""
    await record_payment(engine, payment())
    await credit_deposit(ledger, payment_id="pay_1", player_id="p1", psp=PSP, method="card", currency="EUR",
                         captured_minor=5000, credit_minor=3000, fee_minor=None, now=T0)
    with pytest.raises(RefundRefused) as refused:
        await refund(ledger, "ref_over", 3100)
    assert refused.value.code == "refund_exceeds_refundable"
    await refund(ledger, "ref_player", 3000)
    with pytest.raises(RefundRefused):
        await refund(ledger, "ref_uncredited_over", 2100, funding="uncredited")
    await refund(ledger, "ref_uncredited", 2000, funding="uncredited")
    money = await payment_money(engine, "pay_1")
    assert (money.refund_pending_minor, money.uncredited_refunds_minor, money.refundable_minor) == (5000, 2000, 0)
