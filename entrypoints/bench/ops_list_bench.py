"""`payloop bench ops-list`: the ops console's payments list (ledger.list_payments) over 100,000 stored payments.

For each backend asked (a SQLite file, and a scratch PostgreSQL database created next to the URL given and dropped
after), a fresh migrated database is filled by bulk insert with realistic payments: `players` players, the four
sandbox method families and their PSPs, statuses weighted like production (most credited, some failed, expired,
rejected, pending, a few in review with their review reasons), created over 90 days, the credited ones with their
capture, credit and fee. Then every filter alone (and none) is timed, `runs` times after warm-ups: its first page,
and a deep page (the keyset cursor `deep` rows into that filter's list). The target: every p95 ≤ 200 ms.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from entrypoints.bench.stats import summary_ms
from entrypoints.migrate import upgrade
from ledger import PaymentFilter, list_payments
from ledger.models import payments
from payloop.db import create_engine

TARGET_MS = 200
# method family -> the PSPs that serve it (psp/routing), with the share of deposits each family has.
METHODS = {"card": (("card", "card_b"), 55), "ewallet": (("ewallet",), 25), "bank_transfer": (("paybybank",), 12),
           "crypto": (("crypto",), 8)}
STATUSES = {"credited": 70, "failed": 12, "expired": 5, "rejected": 2, "pending": 3, "requires_action": 2,
            "authorized": 1, "in_review": 5}
REVIEW_REASONS = ("psp_status_unknown", "amount_mismatch", "reference_mismatch", "captured_at_left_psp",
                  "ledger_error")
AMOUNTS_MINOR = (1000, 2000, 2500, 5000, 10_000, 20_000, 50_000)


@dataclass
class OpsListBenchOptions:
    database_url: str | None  # PostgreSQL to bench beside SQLite (a scratch database is created there), or None
    payments: int = 100_000
    players: int = 5_000
    runs: int = 30
    deep: int = 5_000  # rows into a filter's list where the deep page starts
    sqlite_dir: Path | None = None  # where the SQLite file goes (default: a temporary folder)


async def run_ops_list_bench(options: OpsListBenchOptions) -> dict[str, Any]:
    results: dict[str, Any] = {"payments": options.payments, "players": options.players, "runs": options.runs,
                               "deep_rows": options.deep, "target_p95_ms": TARGET_MS}
    with tempfile.TemporaryDirectory(dir=options.sqlite_dir) as folder:
        results["sqlite"] = await _bench(f"sqlite+aiosqlite:///{Path(folder) / 'ops-list.db'}", options)
    if options.database_url:
        results["postgresql"] = await _on_scratch_postgresql(options.database_url, options)
    results["all_within_target"] = all(
        case[page]["p95_ms"] <= TARGET_MS
        for backend in ("sqlite", "postgresql") if backend in results
        for case in results[backend]["cases"].values() for page in ("first_page", "deep_page") if case.get(page)
    )
    return results


async def _on_scratch_postgresql(url: str, options: OpsListBenchOptions) -> dict[str, Any]:
    scratch = f"payloop_opslist_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{scratch}"'))
    try:
        return await _bench(make_url(url).set(database=scratch).render_as_string(hide_password=False), options)
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        await admin.dispose()


async def _bench(url: str, options: OpsListBenchOptions) -> dict[str, Any]:
    await upgrade(url)
    engine = create_engine(url, pool_size=2)
    try:
        started = time.perf_counter()
        rows = _payments(options)
        await _bulk_insert(engine, rows)
        fill_s = time.perf_counter() - started
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:  # fresh statistics, as autovacuum would have them
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE payments"))
        else:
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
        cases = {name: await _time_case(engine, payment_filter, options)
                 for name, payment_filter in _filters(rows).items()}
    finally:
        await engine.dispose()
    return {"backend": engine.dialect.name, "fill_s": round(fill_s, 1), "cases": cases}


def _payments(options: OpsListBenchOptions) -> list[dict[str, Any]]:
    rng = random.Random(20261205)
    start = datetime(2026, 9, 6, tzinfo=UTC)
    span_s = 90 * 24 * 3600
    methods = list(METHODS)
    statuses = list(STATUSES)
    rows = []
    for n in range(options.payments):
        method = rng.choices(methods, weights=[METHODS[m][1] for m in methods])[0]
        status = rng.choices(statuses, weights=list(STATUSES.values()))[0]
        amount = rng.choice(AMOUNTS_MINOR)
        created = start + timedelta(seconds=rng.randrange(span_s), microseconds=rng.randrange(1_000_000))
        credited = status == "credited"
        rows.append({
            "payment_id": f"pay_{n:07d}_{rng.getrandbits(32):08x}", "client_id": "casino",
            "player_id": f"player{rng.randrange(options.players):05d}", "method": method, "currency": "EUR",
            "amount_minor": amount, "country": rng.choice(("DE", "SE", "FI", "GB", "NL", None)), "status": status,
            "psp": rng.choice(METHODS[method][0]) if status not in ("pending",) else None,
            "psp_reference": f"psp_{n}" if status not in ("pending",) else None,
            "failure_code": "declined" if status == "failed" else None,
            "review_reason": rng.choice(REVIEW_REASONS) if status == "in_review" else None,
            "created_at": created, "updated_at": created + timedelta(seconds=rng.randrange(1, 600)),
            "captured_minor": amount if credited else 0, "credited_minor": amount if credited else 0,
            "credit_transfer_id": f"deposit:pay_{n}:credit" if credited else None,
            "refunded_minor": 0, "refund_pending_minor": 0, "disputed_minor": 0, "charged_back_minor": 0,
            "fees_minor": amount * 2 // 100 if credited else 0,
        })
    return rows


async def _bulk_insert(engine: AsyncEngine, rows: list[dict[str, Any]], chunk: int = 5_000) -> None:
    for first in range(0, len(rows), chunk):
        async with engine.begin() as conn:
            await conn.execute(insert(payments), rows[first:first + chunk])


def _filters(rows: list[dict[str, Any]]) -> dict[str, PaymentFilter]:
    """None, and each filter alone with a value of its own: a common one and, for status, a rare one too."""
    busiest_player = max(_counts(rows, "player_id").items(), key=lambda item: item[1])[0]
    return {
        "unfiltered": PaymentFilter(),
        "status=credited": PaymentFilter(status="credited"),
        "status=in_review": PaymentFilter(status="in_review"),
        f"player_id={busiest_player}": PaymentFilter(player_id=busiest_player),
        "psp=card_b": PaymentFilter(psp="card_b"),
        "method=crypto": PaymentFilter(method="crypto"),
        "review_reason=psp_status_unknown": PaymentFilter(review_reason="psp_status_unknown"),
        "created last 7 days": PaymentFilter(created_from=datetime(2026, 11, 28, tzinfo=UTC)),
    }


def _counts(rows: list[dict[str, Any]], column: str) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for row in rows:
        counts[row[column]] = counts.get(row[column], 0) + 1
    return counts


async def _time_case(engine: AsyncEngine, payment_filter: PaymentFilter, options: OpsListBenchOptions) -> dict:
    matching, cursor_rows, cursor = await _cursor(engine, payment_filter, options.deep)
    result: dict[str, Any] = {"matching_rows": matching,
                              "first_page": await _timed(engine, payment_filter, None, options.runs)}
    result["deep_page"] = await _timed(engine, payment_filter, cursor, options.runs) if cursor else None
    result["deep_cursor_rows"] = cursor_rows
    return result


async def _cursor(engine: AsyncEngine, payment_filter: PaymentFilter, deep: int) -> tuple[int, int, str | None]:
    """How many payments the filter matches, and the keyset cursor `deep` rows into its list (or a page before its
    end when it is shorter), found by OFFSET outside the timing."""
    query = select(payments.c.payment_id).order_by(payments.c.created_at.desc(), payments.c.payment_id.desc())
    for name in ("status", "player_id", "psp", "method", "review_reason"):
        if (value := getattr(payment_filter, name)) is not None:
            query = query.where(payments.c[name] == value)
    if payment_filter.created_from is not None:
        query = query.where(payments.c.created_at >= payment_filter.created_from)
    async with engine.connect() as conn:
        matching = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
        offset = min(deep, matching - 50)
        if offset < 50:
            return matching, 0, None
        return matching, offset, (await conn.execute(query.offset(offset).limit(1))).scalar_one()


async def _timed(engine: AsyncEngine, payment_filter: PaymentFilter, before: str | None, runs: int) -> dict:
    for _ in range(3):  # warm-ups: pool, statement cache, pages in memory
        await list_payments(engine, payment_filter, limit=50, before=before)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        page = await list_payments(engine, payment_filter, limit=50, before=before)
        seconds.append(time.perf_counter() - started)
    return summary_ms(seconds) | {"rows": len(page)}


def main(options: OpsListBenchOptions) -> dict[str, Any]:
    return asyncio.run(run_ops_list_bench(options))
