"""Seeding for the reconciliation benchmark (`payloop bench recon`): N captured and credited deposits of one day at
one PSP, each with its capture fee, written in bulk as the ledger would have written them one by one (a payments
row, its psp_fees row, the credit and fee transfers), named as the sandbox PSP's synthetic settlement lines name
them (`POST /control/{psp}/settlement {"synthetic": …}`), so its report settles exactly them. The ledger's invariants
hold on the result."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import insert

from ledger import transfer_ids
from ledger.accounts import fee_account, player_account, psp_clearing_account
from ledger.fees import FEE
from ledger.models import payments, psp_fees
from ledger.payments import DEPOSIT
from ledger.service import Ledger, TransferRequest
from payloop.settlement import CAPTURE

_BATCH = 2_000


def bench_payment_id(prefix: str, n: int) -> str:
    """As the sandbox names its synthetic settlement lines' merchant references (`<prefix><n>`), and their PSP
    references `<prefix>ref_<n>`."""
    return f"{prefix}{n}"


async def seed_captures_for_benchmark(
    ledger: Ledger, *, psp: str, day: date, count: int, method: str = "card", currency: str = "EUR",
    amount_minor: int = 5_000, fee_minor: int = 100, players: int = 1_000, prefix: str = "bench",
) -> None:
    """`count` deposits captured on `day` at `psp`, spread over the day, credited to `players` players; one
    transaction per batch of 2,000."""
    start = datetime.combine(day, time(), UTC)
    step_us = max(1, 86_400_000_000 // max(count, 1) - 1)
    for first in range(0, count, _BATCH):
        numbers = range(first, min(first + _BATCH, count))
        rows = [_payment_row(prefix, n, psp=psp, method=method, currency=currency, amount_minor=amount_minor,
                             fee_minor=fee_minor, player=f"{prefix}_p{n % players}",
                             at=start + timedelta(microseconds=n * step_us)) for n in numbers]
        fees = [{"transfer_id": transfer_ids.fee(CAPTURE, row["payment_id"]), "operation": CAPTURE,
                 "reference": row["payment_id"], "psp": psp, "method": method, "currency": currency,
                 "fee_minor": fee_minor, "booked_at": row["captured_at"]} for row in rows] if fee_minor else []
        requests = [req for row in rows for req in _transfers(row, fee_minor)]

        async def tx(conn: Any, rows: list[dict[str, Any]] = rows, fees: list[dict[str, Any]] = fees,
                     requests: list[TransferRequest] = requests) -> None:
            await conn.execute(insert(payments), rows)
            if fees:
                await conn.execute(insert(psp_fees), fees)
            await ledger.post_transfers_in(conn, requests)

        await ledger.transaction(tx)


def _payment_row(prefix: str, n: int, *, psp: str, method: str, currency: str, amount_minor: int, fee_minor: int,
                 player: str, at: datetime) -> dict[str, Any]:
    payment_id = bench_payment_id(prefix, n)
    return {
        "payment_id": payment_id, "client_id": "bench", "player_id": player, "method": method,
        "currency": currency, "amount_minor": amount_minor, "country": None, "status": "credited", "psp": psp,
        "psp_reference": f"{prefix}ref_{n}", "failure_code": None, "review_reason": None, "created_at": at,
        "updated_at": at, "captured_minor": amount_minor, "credited_minor": amount_minor,
        "credit_transfer_id": transfer_ids.deposit_credit(payment_id), "refunded_minor": 0,
        "refund_pending_minor": 0, "uncredited_refunds_minor": 0, "disputed_minor": 0, "charged_back_minor": 0,
        "fees_minor": fee_minor, "captured_at": at,
    }


def _transfers(row: dict[str, Any], fee_minor: int) -> list[TransferRequest]:
    """The credit and the capture fee, as credit_deposit books them."""
    payment_id, psp, currency = row["payment_id"], row["psp"], row["currency"]
    clearing = psp_clearing_account(psp, currency)
    credit = TransferRequest(row["credit_transfer_id"], clearing, player_account(row["player_id"], currency),
                             row["credited_minor"], currency, DEPOSIT, payment_id)
    if not fee_minor:
        return [credit]
    return [credit, TransferRequest(transfer_ids.fee(CAPTURE, payment_id), fee_account(psp, currency), clearing,
                                    fee_minor, currency, FEE, payment_id, {"operation": CAPTURE})]
