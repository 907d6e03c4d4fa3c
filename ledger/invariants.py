"""Money invariants, checked with a handful of aggregate queries (nothing is loaded row by row).

Two groups: the ledger's own (double entry, floors, stored balances equal their transfers, currencies, one credit
per payment), and the money records held against the transfers that moved their money (payments, refunds,
disputes, PSP fees, reconciliation's settlements and resolved cases, currency conversions: see ledger/payments.py,
refunds.py, disputes.py, fees.py, reconciliation.py, fx.py). Each check reports at most
_MAX_ROWS offenders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Integer,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import transfer_ids
from ledger.accounts import FEES
from ledger.fees import FEE
from ledger.fx import MARGIN_RETURN_KIND, RETURN_KINDS, SHORTFALL_RETURN_KIND, WALLET_RETURN_KIND, fx_conversions
from ledger.models import (
    disputes,
    payments,
    psp_fees,
    recon_cases,
    recon_settlements,
    refunds,
)
from ledger.models import ledger_accounts as accounts
from ledger.models import ledger_transfers as transfers
from ledger.payments import DEPOSIT
from ledger.reconciliation import (
    ADJUSTMENT,
    FEE_DIFFERENCE,
    PAID_OUT,
    SETTLEMENT,
    WRITE_OFF_KIND,
)
from ledger.refunds import HOLD_KIND, SHORTFALL_KIND

# Enough to diagnose; a broken ledger should not produce a million-line report.
_MAX_ROWS = 50


@dataclass
class InvariantReport:
    ok: bool
    violations: list[str] = field(default_factory=list)
    accounts: int = 0
    transfers: int = 0


async def check_invariants(engine: AsyncEngine) -> InvariantReport:
    violations: list[str] = []
    async with engine.connect() as conn:
        n_accounts = (await conn.execute(select(func.count()).select_from(accounts))).scalar_one()
        n_transfers = (await conn.execute(select(func.count()).select_from(transfers))).scalar_one()

        # 1. Double entry: per currency, balances sum to zero and every pending debit has its pending credit.
        per_currency = await conn.execute(
            select(
                accounts.c.currency,
                func.sum(accounts.c.posted_balance),
                func.sum(accounts.c.pending_debits),
                func.sum(accounts.c.pending_credits),
            ).group_by(accounts.c.currency)
        )
        for currency, posted, pending_debits, pending_credits in per_currency:
            if posted != 0:
                violations.append(f"{currency}: posted balances sum to {int(posted)}, not 0")
            if pending_debits != pending_credits:
                violations.append(
                    f"{currency}: pending debits {int(pending_debits)} != pending credits {int(pending_credits)}"
                )

        # 2. No account below its floor, no negative pending amounts.
        below = await conn.execute(
            select(accounts.c.id, accounts.c.posted_balance, accounts.c.pending_debits, accounts.c.floor)
            .where(
                or_(
                    and_(
                        accounts.c.floor.is_not(None),
                        accounts.c.posted_balance - accounts.c.pending_debits < accounts.c.floor,
                    ),
                    accounts.c.pending_debits < 0,
                    accounts.c.pending_credits < 0,
                )
            )
            .limit(_MAX_ROWS)
        )
        for account_id, posted, pending_debits, floor in below:
            violations.append(
                f"{account_id}: below its floor or negative pending "
                f"(posted {posted}, pending debits {pending_debits}, floor {floor})"
            )

        # 3. Every account's stored balances equal what its transfers add up to.
        is_posted = transfers.c.status == "posted"
        is_pending = transfers.c.status == "pending"
        zero = literal(0, Integer)
        legs = union_all(
            select(
                transfers.c.credit_account_id.label("account_id"),
                case((is_posted, transfers.c.amount), else_=zero).label("posted"),
                zero.label("pending_debits"),
                case((is_pending, transfers.c.amount), else_=zero).label("pending_credits"),
            ),
            select(
                transfers.c.debit_account_id.label("account_id"),
                case((is_posted, -transfers.c.amount), else_=zero).label("posted"),
                case((is_pending, transfers.c.amount), else_=zero).label("pending_debits"),
                zero.label("pending_credits"),
            ),
        ).subquery("legs")
        sums = (
            select(
                legs.c.account_id,
                func.sum(legs.c.posted).label("posted"),
                func.sum(legs.c.pending_debits).label("pending_debits"),
                func.sum(legs.c.pending_credits).label("pending_credits"),
            )
            .group_by(legs.c.account_id)
            .subquery("sums")
        )
        expected = {name: func.coalesce(sums.c[name], 0) for name in ("posted", "pending_debits", "pending_credits")}
        drift = await conn.execute(
            select(
                accounts.c.id,
                accounts.c.posted_balance,
                accounts.c.pending_debits,
                accounts.c.pending_credits,
                expected["posted"],
                expected["pending_debits"],
                expected["pending_credits"],
            )
            .select_from(accounts.outerjoin(sums, sums.c.account_id == accounts.c.id))
            .where(
                or_(
                    accounts.c.posted_balance != expected["posted"],
                    accounts.c.pending_debits != expected["pending_debits"],
                    accounts.c.pending_credits != expected["pending_credits"],
                )
            )
            .limit(_MAX_ROWS)
        )
        for account_id, posted, pd, pc, exp_posted, exp_pd, exp_pc in drift:
            violations.append(
                f"{account_id}: stored posted/pending_debits/pending_credits {posted}/{pd}/{pc} "
                f"!= transfers {int(exp_posted)}/{int(exp_pd)}/{int(exp_pc)}"
            )

        # 4. A transfer's currency is that of both its accounts.
        debit = accounts.alias("debit")
        credit = accounts.alias("credit")
        mismatched = await conn.execute(
            select(transfers.c.id)
            .join(debit, debit.c.id == transfers.c.debit_account_id)
            .join(credit, credit.c.id == transfers.c.credit_account_id)
            .where(or_(debit.c.currency != transfers.c.currency, credit.c.currency != transfers.c.currency))
            .limit(_MAX_ROWS)
        )
        for (transfer_id,) in mismatched:
            violations.append(f"transfer {transfer_id}: currency differs from its accounts'")

        # 5. Each payment is credited at most once.
        credited_twice = await conn.execute(
            select(transfers.c.reference, func.count())
            .where(transfers.c.kind == DEPOSIT, is_posted)
            .group_by(transfers.c.reference)
            .having(func.count() > 1)
            .limit(_MAX_ROWS)
        )
        for reference, count in credited_twice:
            violations.append(f"payment {reference}: credited {count} times (posted deposit transfers)")

        for check in (_payment_violations, _refund_violations, _dispute_violations, _fee_violations,
                      _settlement_violations, _bank_violations, _case_violations, _fx_violations):
            violations.extend(await check(conn))

    return InvariantReport(ok=not violations, violations=violations, accounts=n_accounts, transfers=n_transfers)


async def assert_invariants(engine: AsyncEngine) -> InvariantReport:
    report = await check_invariants(engine)
    if not report.ok:
        raise AssertionError("ledger invariants violated:\n  " + "\n  ".join(report.violations))
    return report


# ---- the money records against their transfers ----------------------------------------------------------------

_POSTED, _PENDING, _VOIDED = "posted", "pending", "voided"
_FEE_ACCOUNTS = f"house:{FEES}:"  # the prefix of every fee account id (ledger.accounts.fee_account)


def _amount(condition: Any) -> Any:
    """Sum of the joined transfers' amounts that meet `condition` (0 when none)."""
    return func.coalesce(func.sum(case((condition, transfers.c.amount), else_=0)), 0)


async def _payment_violations(conn: AsyncConnection) -> list[str]:
    """Refunds within the capture, the credit within the capture and equal to its posted transfer, and the
    refund columns equal to the payment's refunds at its PSP (the ones that reserved)."""
    p, r = payments.c, refunds.c
    violations = []
    credit = transfers.alias("credit")
    broken = await conn.execute(
        select(p.payment_id, p.captured_minor, p.credited_minor, p.refunded_minor, p.refund_pending_minor,
               credit.c.amount, credit.c.status)
        .outerjoin(credit, credit.c.id == p.credit_transfer_id)
        .where(or_(
            p.refunded_minor + p.refund_pending_minor > p.captured_minor,
            p.credited_minor > p.captured_minor,
            and_(p.credited_minor > 0, or_(credit.c.id.is_(None), credit.c.status != _POSTED,
                                           credit.c.amount != p.credited_minor, credit.c.kind != DEPOSIT,
                                           credit.c.reference != p.payment_id)),
            and_(p.credited_minor == 0, p.credit_transfer_id.is_not(None)),
        ))
        .limit(_MAX_ROWS)
    )
    for payment_id, captured, credited, refunded, pending, credit_amount, credit_status in broken:
        violations.append(f"payment {payment_id}: captured {captured}, credited {credited}, refunded {refunded}, "
                          f"refund pending {pending}; credit transfer {credit_status} {credit_amount}")
    reserved = (
        select(r.payment_id,
               func.sum(case((r.status == "succeeded", r.amount_minor), else_=0)).label("succeeded"),
               func.sum(case((r.status.in_(("pending", "in_review")), r.amount_minor), else_=0)).label("open"))
        .join(payments, and_(p.payment_id == r.payment_id, p.psp == r.psp, p.currency == r.currency))
        .group_by(r.payment_id)
        .subquery("reserved")
    )
    succeeded, open_ = func.coalesce(reserved.c.succeeded, 0), func.coalesce(reserved.c.open, 0)
    drift = await conn.execute(
        select(p.payment_id, p.refunded_minor, p.refund_pending_minor, succeeded, open_)
        .outerjoin(reserved, reserved.c.payment_id == p.payment_id)
        .where(or_(p.refunded_minor != succeeded, p.refund_pending_minor != open_))
        .limit(_MAX_ROWS)
    )
    for payment_id, refunded, pending, exp_refunded, exp_pending in drift:
        violations.append(f"payment {payment_id}: refunded/pending {refunded}/{pending} != its refunds "
                          f"{int(exp_refunded)}/{int(exp_pending)}")
    return violations


async def _refund_violations(conn: AsyncConnection) -> list[str]:
    """A player-funded refund's holds carry its held and shortfall amounts, in the state its status says:
    pending (pending, in review), posted (succeeded), voided (failed); an uncredited refund has none."""
    r, t = refunds.c, transfers.c
    expected = case((r.status == "succeeded", _POSTED), (r.status == "failed", _VOIDED), else_=_PENDING)
    held, shortfall = _amount(t.kind == HOLD_KIND), _amount(t.kind == SHORTFALL_KIND)
    wrong = func.coalesce(func.sum(case((and_(t.id.is_not(None), t.status != expected), 1), else_=0)), 0)
    rows = await conn.execute(
        select(r.refund_id, r.status, r.held_minor, r.shortfall_minor, held, shortfall, wrong)
        .outerjoin(transfers, and_(t.reference == r.refund_id, t.kind.in_((HOLD_KIND, SHORTFALL_KIND))))
        .group_by(r.refund_id, r.status, r.held_minor, r.shortfall_minor)
        .having(or_(held != r.held_minor, shortfall != r.shortfall_minor, wrong > 0))
        .limit(_MAX_ROWS)
    )
    return [f"refund {refund_id} ({status}): held/shortfall {h}/{s}, holds {int(th)}/{int(ts)}, "
            f"{int(n)} hold(s) not {status}'s state" for refund_id, status, h, s, th, ts, n in rows]


async def _dispute_violations(conn: AsyncConnection) -> list[str]:
    """Each dispute's money is in exactly one place: pulled back by the PSP; then either still held from the
    player (opened), charged back (lost: hold posted, chargeback posted) or returned (won: hold voided, returned,
    shortfall reversed). And house:disputes holds exactly minus the open disputes' amounts."""
    d, t = disputes.c, transfers.c
    step_kinds = [f"dispute_{step}" for step in transfer_ids.DISPUTE_STEPS]

    def moved(step: str, status: str = _POSTED) -> Any:
        return _amount(and_(t.kind == f"dispute_{step}", t.status == status))

    def only(state: str, amount: Any) -> Any:
        return case((d.state == state, amount), else_=0)

    expected = {
        moved("pulled"): d.amount_minor,
        moved("shortfall"): d.shortfall_minor,
        moved("hold", _PENDING): only("opened", d.held_minor),
        moved("hold"): only("lost", d.held_minor),
        moved("hold", _VOIDED): only("won", d.held_minor),
        moved("chargeback"): only("lost", d.amount_minor),
        moved("returned"): only("won", d.amount_minor),
        moved("shortfall_reversal"): only("won", d.shortfall_minor),
    }
    key = d.psp + literal(":") + d.dispute_id
    rows = await conn.execute(
        select(d.psp, d.dispute_id, d.state)
        .outerjoin(transfers, and_(t.reference == key, t.kind.in_(step_kinds)))
        .group_by(d.psp, d.dispute_id, d.state, d.amount_minor, d.held_minor, d.shortfall_minor)
        .having(or_(*(actual != wanted for actual, wanted in expected.items())))
        .limit(_MAX_ROWS)
    )
    violations = [f"dispute {psp}:{dispute_id} ({state}): its transfers do not match its state"
                  for psp, dispute_id, state in rows]
    open_ = (select(d.currency, func.sum(d.amount_minor).label("amount")).where(d.state == "opened")
             .group_by(d.currency).subquery("open"))
    open_amount = func.coalesce(open_.c.amount, 0)
    balances = await conn.execute(
        select(accounts.c.id, accounts.c.posted_balance, open_amount)
        .outerjoin(open_, open_.c.currency == accounts.c.currency)
        .where(accounts.c.kind == "house", accounts.c.owner == "disputes",
               accounts.c.posted_balance != -open_amount)
        .limit(_MAX_ROWS)
    )
    violations += [f"{account_id}: posted {posted}, open disputes {int(amount)}" for account_id, posted, amount
                   in balances]
    return violations


async def _fee_violations(conn: AsyncConnection) -> list[str]:
    """Fee transfers run from the PSP's fee account to its clearing account and each has its psp_fees row (and
    the reverse); nothing else touches a fee account."""
    f, t = psp_fees.c, transfers.c
    fee_account = literal(_FEE_ACCOUNTS) + f.psp + literal(":") + f.currency
    clearing = literal("psp:") + f.psp + literal(":") + f.currency
    unmatched = await conn.execute(
        select(t.id, f.transfer_id)
        .select_from(transfers.outerjoin(psp_fees, f.transfer_id == t.id))
        .where(t.kind == FEE, or_(f.transfer_id.is_(None), f.fee_minor != t.amount, f.currency != t.currency,
                                  t.debit_account_id != fee_account, t.credit_account_id != clearing,
                                  t.status != _POSTED))
        .limit(_MAX_ROWS)
    )
    violations = [f"fee transfer {transfer_id}: " + ("no psp_fees row" if row is None else "differs from its "
                  "psp_fees row or runs between other accounts") for transfer_id, row in unmatched]
    orphans = await conn.execute(
        select(f.transfer_id).select_from(psp_fees.outerjoin(transfers, t.id == f.transfer_id))
        .where(or_(t.id.is_(None), t.kind != FEE)).limit(_MAX_ROWS)
    )
    violations += [f"psp_fees {transfer_id}: no fee transfer" for (transfer_id,) in orphans]
    strays = await conn.execute(  # a settlement's fee difference is the one other kind (ledger/reconciliation.py)
        select(t.id).where(t.kind.not_in((FEE, FEE_DIFFERENCE)), or_(t.debit_account_id.like(f"{_FEE_ACCOUNTS}%"),
                                              t.credit_account_id.like(f"{_FEE_ACCOUNTS}%"))).limit(_MAX_ROWS)
    )
    violations += [f"transfer {transfer_id}: touches a fee account but is no fee" for (transfer_id,) in strays]
    return violations


async def _settlement_violations(conn: AsyncConnection) -> list[str]:
    """Each recon_settlements row has its transfers, of its amounts, between its accounts: the net (positive:
    house:bank → clearing), the fee difference (positive: the PSP's fee account → clearing) and a payout's
    paid-out (house:payouts → clearing); and no settlement transfer lacks its row (the counts agree). A row a
    case's resolution wrote belongs to a resolved case. No line is settled twice."""
    s = recon_settlements.c
    clearing = literal("psp:") + s.psp + literal(":") + s.currency
    legs = {  # transfer kind: (its id, the signed amount, the account on the other side of the clearing)
        SETTLEMENT: (s.transfer_id, s.net_minor, literal("house:bank:") + s.currency),
        FEE_DIFFERENCE: (s.transfer_id + literal(":fee_difference"), s.fee_difference_minor,
                         literal(_FEE_ACCOUNTS) + s.psp + literal(":") + s.currency),
        PAID_OUT: (s.transfer_id + literal(":paid_out"), s.paid_out_minor, literal("house:payouts:") + s.currency),
    }
    query = select(s.psp, s.kind, s.item_key).select_from(recon_settlements)
    broken = []
    for kind, (transfer_id, amount, other) in legs.items():
        t = transfers.alias(f"t_{kind}")
        query = query.outerjoin(t, t.c.id == transfer_id)
        toward = and_(t.c.debit_account_id == other, t.c.credit_account_id == clearing)
        away = and_(t.c.debit_account_id == clearing, t.c.credit_account_id == other)
        broken += [
            and_(amount == 0, t.c.id.is_not(None)),
            and_(amount != 0, or_(t.c.id.is_(None), t.c.kind != kind, t.c.status != _POSTED,
                                  t.c.amount != func.abs(amount), and_(amount > 0, ~toward),
                                  and_(amount < 0, ~away))),
        ]
    unresolved = and_(s.case_id.is_not(None), ~exists().where(recon_cases.c.case_id == s.case_id,
                                                              recon_cases.c.state == "resolved"))
    rows = await conn.execute(query.where(or_(*broken, unresolved)).limit(_MAX_ROWS))
    violations = [f"settlement {psp} {kind} {item_key}: its transfers differ from it" for psp, kind, item_key in rows]
    for kind, (_, amount, _) in legs.items():
        rows_with = (await conn.execute(select(func.count()).select_from(recon_settlements)
                                        .where(amount != 0))).scalar_one()
        posted = (await conn.execute(select(func.count()).select_from(transfers)
                                     .where(transfers.c.kind == kind))).scalar_one()
        if rows_with != posted:
            violations.append(f"{posted} {kind} transfers for {rows_with} settlement rows that move one")
    return violations + await _lines_settled_twice(conn)


async def _lines_settled_twice(conn: AsyncConnection) -> list[str]:
    """A report line settles one thing, once: two rows of one line (under its item and under its own key, say)
    would have posted its net to the bank twice. The unique (psp, line_id) index forbids it; this checks it."""
    s = recon_settlements.c
    rows = await conn.execute(select(s.psp, s.line_id, func.count()).where(s.line_id.is_not(None))
                              .group_by(s.psp, s.line_id).having(func.count() > 1).limit(_MAX_ROWS))
    return [f"line {psp} {line_id}: settled {count} times" for psp, line_id, count in rows]


async def _bank_violations(conn: AsyncConnection) -> list[str]:
    """house:bank:<CUR> holds minus what the settlements brought in: nothing else moves it."""
    s = recon_settlements.c
    settled = dict((await conn.execute(select(s.currency, func.sum(s.net_minor)).group_by(s.currency))).all())
    banks = dict((await conn.execute(select(accounts.c.currency, accounts.c.posted_balance).where(
        accounts.c.kind == "house", accounts.c.owner == "bank"))).all())
    return [f"house:bank:{currency}: posted {banks.get(currency, 0)}, settlements net {int(settled.get(currency) or 0)}"
            for currency in sorted(set(settled) | set(banks))
            if banks.get(currency, 0) != -int(settled.get(currency) or 0)]


async def _case_violations(conn: AsyncConnection) -> list[str]:
    """A resolved case's transfers (`recon:<case_id>:…`) exist, reference it, are the ones it lists, and its
    adjustment or write-off moved the amount it states (positive: the clearing debited); an open case has none;
    no adjustment or write-off references anything but a resolved case."""
    c, t = recon_cases.c, transfers.c
    own = literal("recon:") + t.reference + literal(":")
    signed = case((t.debit_account_id.like("psp:%"), t.amount), else_=-t.amount)
    moved = (
        select(t.reference.label("case_id"), func.count().label("transfers"),
               func.sum(case((t.status != _POSTED, 1), else_=0)).label("not_posted"),
               func.sum(case((t.id.in_([own + literal("adjustment"), own + literal("write_off")]), signed),
                             else_=0)).label("stated"))
        .where(t.id.like("recon:%"))
        .group_by(t.reference)
        .subquery("moved")
    )
    listed = case((c.state == "resolved", func.coalesce(func.json_array_length(c.resolution_transfer_ids), 0)),
                  else_=0)
    rows = await conn.execute(
        select(c.case_id, c.state)
        .outerjoin(moved, moved.c.case_id == c.case_id)
        .where(or_(
            func.coalesce(moved.c.transfers, 0) != listed,
            func.coalesce(moved.c.not_posted, 0) > 0,
            and_(c.resolution_action.in_(("adjust", "write_off")),
                 func.coalesce(moved.c.stated, 0) != c.resolution_amount_minor),
        ))
        .limit(_MAX_ROWS)
    )
    violations = [f"case {case_id} ({state}): its transfers differ from its resolution" for case_id, state in rows]
    strays = await conn.execute(
        select(t.id).where(t.kind.in_((ADJUSTMENT, WRITE_OFF_KIND)), ~exists().where(
            recon_cases.c.case_id == t.reference, recon_cases.c.state == "resolved")).limit(_MAX_ROWS))
    violations += [f"transfer {transfer_id}: a reconciliation move of no resolved case" for (transfer_id,) in strays]
    return violations


# ---- currency conversions ---------------------------------------------------------------------------------------


async def _fx_violations(conn: AsyncConnection) -> list[str]:
    """Each fx_conversions row has its legs, posted, of its amounts, between its accounts (ledger/fx.py), its mid
    value its wallet amount and margin; the returns of a converted deposit never give back more than it credited
    and earned, and all of it once the deposit is given back in full; and house:fx / house:fx_margin hold what the
    conversions and their returns explain (_fx_position_violations)."""
    return (await _fx_leg_violations(conn) + await _fx_return_violations(conn)
            + await _fx_position_violations(conn))


def _fx_legs(kind: str) -> dict[str, tuple[Any, Any, Any, Any]]:
    """A conversion's legs by name: (transfer id, debit account, credit account, amount) as SQL expressions."""
    c = fx_conversions.c

    def account(*parts: Any) -> Any:
        expression = literal(parts[0])
        for part in parts[1:]:
            expression = expression + (literal(part) if isinstance(part, str) else part)
        return expression

    fx_from, fx_to = account("house:fx:", c.from_currency), account("house:fx:", c.to_currency)
    player = account("player:", c.player_id, ":", c.to_currency)
    margin = ("margin", account("fx:", c.kind, ":", c.reference, ":margin"), fx_to,
              account("house:fx_margin:", c.to_currency), c.margin_minor)
    if kind == "deposit":
        legs = [("credit", account("deposit:", c.reference, ":credit"), None, fx_from, c.from_minor),
                ("wallet", account("fx:deposit:", c.reference, ":wallet"), fx_to, player, c.to_minor), margin]
    else:
        legs = [("hold", account("payout:", c.reference, ":hold"), player, fx_to, c.to_minor),
                ("paid", account("fx:payout:", c.reference, ":paid"), fx_from,
                 account("house:payouts:", c.from_currency), c.from_minor), margin]
    return {name: (transfer_id, debit, credit, amount) for name, transfer_id, debit, credit, amount in legs}


async def _fx_leg_violations(conn: AsyncConnection) -> list[str]:
    c = fx_conversions.c
    violations = []
    for kind, mid in (("deposit", c.to_minor + c.margin_minor), ("payout", c.to_minor - c.margin_minor)):
        query = select(c.kind, c.reference).select_from(fx_conversions)
        broken = [c.mid_minor != mid]
        for name, (transfer_id, debit, credit, amount) in _fx_legs(kind).items():
            t = transfers.alias(f"fx_{name}")
            query = query.outerjoin(t, t.c.id == transfer_id)
            wrong = or_(t.c.id.is_(None), t.c.status != _POSTED, t.c.amount != amount, t.c.credit_account_id != credit)
            if debit is not None:  # a deposit's credit comes from whichever PSP captured it
                wrong = or_(wrong, t.c.debit_account_id != debit)
            broken += [and_(amount > 0, wrong), and_(amount == 0, t.c.id.is_not(None))]
        rows = await conn.execute(query.where(c.kind == kind, or_(*broken)).limit(_MAX_ROWS))
        violations += [f"fx conversion {kind} {reference}: its legs differ from it" for kind, reference in rows]
    return violations


async def _fx_return_violations(conn: AsyncConnection) -> list[str]:
    """Live (pending or posted) returns of a converted deposit within its wallet amount and margin; a deposit whose
    credit was all refunded or charged back has had exactly both back."""
    c, t, p = fx_conversions.c, transfers.c, payments.c
    live = t.status.in_((_PENDING, _POSTED))
    wallet = _amount(and_(live, t.kind.in_((WALLET_RETURN_KIND, SHORTFALL_RETURN_KIND))))
    margin = _amount(and_(live, t.kind == MARGIN_RETURN_KIND))
    given_back = p.refunded_minor - p.uncredited_refunds_minor + p.charged_back_minor >= p.credited_minor
    rows = await conn.execute(
        select(c.reference)
        .join(payments, p.payment_id == c.reference)
        .outerjoin(transfers, and_(t.reference == c.reference, t.kind.in_(RETURN_KINDS)))
        .where(c.kind == "deposit")
        .group_by(c.reference, c.to_minor, c.margin_minor, p.refunded_minor, p.uncredited_refunds_minor,
                  p.charged_back_minor, p.credited_minor, p.refund_pending_minor, p.disputed_minor)
        .having(or_(wallet > c.to_minor, margin > c.margin_minor,
                    and_(given_back, p.refund_pending_minor == 0, p.disputed_minor == 0,
                         or_(wallet != c.to_minor, margin != c.margin_minor))))
        .limit(_MAX_ROWS)
    )
    return [f"fx conversion deposit {reference}: its refunds and chargebacks gave back other than its share"
            for (reference,) in rows]


async def _fx_position_violations(conn: AsyncConnection) -> list[str]:
    """The rule: house:fx:<CUR> = the conversions (a deposit: + its payment amount in the payment currency, − its
    mid value in the wallet's; a payout: − its payment amount, + its mid value) − what converted deposits gave back
    in the payment currency (succeeded refunds, lost disputes, the shortfall of open ones: from their rows) + what
    came back in the wallet currency (posted returns); house:fx_margin:<CUR> = the conversions' margins − the
    posted margin returns."""
    c, r, d, t = fx_conversions.c, refunds.c, disputes.c, transfers.c
    expected: dict[str, int] = {}
    margins: dict[str, int] = {}

    def add(into: dict[str, int], rows: Any) -> None:
        for currency, amount in rows:
            into[currency] = into.get(currency, 0) + int(amount or 0)

    sign = case((c.kind == "deposit", 1), else_=-1)
    add(expected, await conn.execute(select(c.from_currency, func.sum(sign * c.from_minor)).group_by(c.from_currency)))
    add(expected, await conn.execute(select(c.to_currency, func.sum(-sign * c.mid_minor)).group_by(c.to_currency)))
    add(margins, await conn.execute(select(c.to_currency, func.sum(c.margin_minor)).group_by(c.to_currency)))
    converted = and_(c.kind == "deposit", c.reference == r.payment_id)
    add(expected, await conn.execute(select(r.currency, func.sum(-r.amount_minor)).join(fx_conversions, converted)
                                     .where(r.status == "succeeded", r.funding == "player").group_by(r.currency)))
    out = case((d.state == "lost", d.amount_minor), (d.state == "opened", d.shortfall_minor), else_=0)
    add(expected, await conn.execute(
        select(d.currency, func.sum(-out)).join(fx_conversions, and_(c.kind == "deposit", c.reference == d.payment_id))
        .group_by(d.currency)))
    returned = and_(t.kind.in_(RETURN_KINDS), t.status == _POSTED)
    add(expected, await conn.execute(select(t.currency, func.sum(t.amount)).where(returned).group_by(t.currency)))
    add(margins, await conn.execute(select(t.currency, func.sum(-t.amount))
                                    .where(returned, t.kind == MARGIN_RETURN_KIND).group_by(t.currency)))
    held = dict((await conn.execute(select(accounts.c.currency, accounts.c.posted_balance).where(
        accounts.c.kind == "house", accounts.c.owner == "fx"))).all())
    earned = dict((await conn.execute(select(accounts.c.currency, accounts.c.posted_balance).where(
        accounts.c.kind == "house", accounts.c.owner == "fx_margin"))).all())
    violations = [f"house:fx:{currency}: posted {held.get(currency, 0)}, its conversions and returns explain "
                  f"{expected.get(currency, 0)}" for currency in sorted(set(held) | set(expected))
                  if held.get(currency, 0) != expected.get(currency, 0)]
    violations += [f"house:fx_margin:{currency}: posted {earned.get(currency, 0)}, its conversions and returns "
                   f"explain {margins.get(currency, 0)}" for currency in sorted(set(earned) | set(margins))
                   if earned.get(currency, 0) != margins.get(currency, 0)]
    return violations
