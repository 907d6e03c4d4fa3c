"""The sandbox FX service: mid rates for the currencies the routing file uses, quotes on them, and a control to
set them (tests change a rate while a payment waits, to see that the payment keeps the rate it locked).

- `POST /fx/quotes {"from": "USD", "to": "EUR"}` → `{from, to, rate, rate_id, source, expires_at}`: `rate` a
  decimal string (units of `to` per unit of `from`), `rate_id` unique per quote, valid QUOTE_TTL.
- `GET /control/fx` → `{"rates": {"USD/EUR": "0.9210", …}}`: the pairs set, and the euro values the rest derive from.
- `POST /control/fx {"rates": {"USD/EUR": "0.9210"}}` sets pairs (merged; strict: known currencies, two distinct,
  positive decimal strings — never JSON numbers); 422 `{"error", "message"}` on anything else.

A pair not set is crossed through the euro values (`EUR_VALUES`), to RATE_PLACES places.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from payloop.money import CURRENCY_EXPONENTS

SOURCE = "sandbox-fx"
QUOTE_TTL = timedelta(seconds=60)
RATE_PLACES = Decimal("0.000001")
# The euro value of one unit of each currency the routing file names (mid rates, roughly those of late 2026).
EUR_VALUES: dict[str, str] = {
    "EUR": "1", "USD": "0.92", "GBP": "1.17", "CHF": "1.05", "SEK": "0.088", "NOK": "0.086", "DKK": "0.134",
    "PLN": "0.23", "CZK": "0.040", "HUF": "0.0025", "RON": "0.20", "CAD": "0.68", "AUD": "0.60", "NZD": "0.55",
    "BRL": "0.17", "MXN": "0.050", "ZAR": "0.050", "INR": "0.011", "TRY": "0.027", "JPY": "0.0061",
    "KRW": "0.00067", "CLP": "0.00098", "ISK": "0.0066", "KWD": "3.00", "BHD": "2.44", "JOD": "1.30",
    "TND": "0.29",
}
_PAIR_RE = re.compile(r"(?P<base>[A-Z]{3})/(?P<quote>[A-Z]{3})")
_RATE_RE = re.compile(r"(0|[1-9][0-9]{0,9})(\.[0-9]{1,10})?")


class _Rates:
    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], Decimal] = {}

    def rate(self, base: str, quote: str) -> Decimal:
        if (base, quote) in self.pairs:
            return self.pairs[(base, quote)]
        if (quote, base) in self.pairs:
            return (1 / self.pairs[(quote, base)]).quantize(RATE_PLACES, ROUND_HALF_UP)
        return (Decimal(EUR_VALUES[base]) / Decimal(EUR_VALUES[quote])).quantize(RATE_PLACES, ROUND_HALF_UP)


def _refused(code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=422)


def _currency(value: Any) -> str | None:
    return value if isinstance(value, str) and value in EUR_VALUES and value in CURRENCY_EXPONENTS else None


def _pairs(body: Any) -> dict[tuple[str, str], Decimal] | str:
    """The pairs of a control body, or why it is refused."""
    if not isinstance(body, dict) or set(body) != {"rates"} or not isinstance(body["rates"], dict):
        return 'expected {"rates": {"USD/EUR": "0.9210", …}}'
    if not body["rates"]:
        return "rates is empty"
    pairs = {}
    for pair, rate in body["rates"].items():
        match = _PAIR_RE.fullmatch(pair)
        if match is None or not (_currency(match["base"]) and _currency(match["quote"])):
            return f"{pair!r}: a pair is BASE/QUOTE of two supported currencies"
        if match["base"] == match["quote"]:
            return f"{pair!r}: a currency has no rate to itself"
        if not isinstance(rate, str) or not _RATE_RE.fullmatch(rate) or Decimal(rate) <= 0:
            return f"{pair!r}: a rate is a positive decimal string such as \"0.9210\""
        pairs[(match["base"], match["quote"])] = Decimal(rate)
    return pairs


def router() -> APIRouter:
    """The routes, with rates of their own (one sandbox service, one table)."""
    rates = _Rates()
    routes = APIRouter(tags=["sandbox fx"])

    @routes.post("/fx/quotes")
    async def quote(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        base, quote_currency = (_currency(body.get(k)) if isinstance(body, dict) else None for k in ("from", "to"))
        if base is None or quote_currency is None or base == quote_currency:
            return _refused("invalid_pair", 'expected {"from": "USD", "to": "EUR"}: two distinct supported '
                                            "currencies")
        expires_at = datetime.now(UTC) + QUOTE_TTL
        return JSONResponse({
            "from": base, "to": quote_currency, "rate": format(rates.rate(base, quote_currency), "f"),
            "rate_id": f"fxq_{secrets.token_hex(12)}", "source": SOURCE, "expires_at": expires_at.isoformat(),
        })

    @routes.get("/control/fx")
    async def get_rates() -> dict[str, Any]:
        return {"rates": {f"{b}/{q}": format(r, "f") for (b, q), r in sorted(rates.pairs.items())},
                "eur_values": EUR_VALUES}

    @routes.post("/control/fx")
    async def set_rates(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        pairs = _pairs(body)
        if isinstance(pairs, str):
            return _refused("invalid_rates", pairs)
        rates.pairs.update(pairs)
        return JSONResponse({"rates": {f"{b}/{q}": format(r, "f") for (b, q), r in sorted(rates.pairs.items())}})

    return routes
