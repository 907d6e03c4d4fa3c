"""Money invariants, checked with a handful of aggregate queries (nothing is loaded row by row)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Integer, and_, case, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.models import ledger_accounts as accounts
from ledger.models import ledger_transfers as transfers

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
            .where(transfers.c.kind == "deposit", is_posted)
            .group_by(transfers.c.reference)
            .having(func.count() > 1)
            .limit(_MAX_ROWS)
        )
        for reference, count in credited_twice:
            violations.append(f"payment {reference}: credited {count} times (posted deposit transfers)")

    return InvariantReport(ok=not violations, violations=violations, accounts=n_accounts, transfers=n_transfers)


async def assert_invariants(engine: AsyncEngine) -> InvariantReport:
    report = await check_invariants(engine)
    if not report.ok:
        raise AssertionError("ledger invariants violated:\n  " + "\n  ".join(report.violations))
    return report
