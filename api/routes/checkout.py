"""`POST /v1/checkout/sessions`: a platform opens the checkout for one of its players (README: Checkout). The pages
themselves are api/checkout/."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.auth import Principal, require_scope
from api.checkout import i18n
from api.checkout.sessions import CheckoutSessions
from api.errors import Problem, problem_responses
from api.inputs import amount_in_minor_units
from api.schemas import CheckoutSessionRequest, CheckoutSessionResponse
from payloop.db import utcnow
from payloop.money import MoneyError, currency_exponent

router = APIRouter(prefix="/v1/checkout", tags=["checkout"], responses=problem_responses(503))


@router.post("/sessions", status_code=201, response_model=CheckoutSessionResponse, responses=problem_responses(422))
async def create_checkout_session(
    body: CheckoutSessionRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("payments"))],
) -> CheckoutSessionResponse:
    """A checkout URL for `player_id`, valid `PAYLOOP_CHECKOUT_SESSION_MINUTES` (at most 30): send the player's
    browser there (a redirect, or an iframe). The payments it starts are this client's, for this player only; the
    player comes back to `return_url` with `payment_id` / `payout_id` and `status` added to its query. The
    withdrawal page (and the balance) is offered only when the key also has the `wallet` scope. Creating a session
    starts nothing, so no Idempotency-Key is needed."""
    amount_minor = None
    if body.amount is not None:
        if body.currency is None:
            raise Problem(422, "currency_required", "Currency required", "an amount goes with its currency",
                          errors=[{"field": "currency", "code": "missing", "message": "required with amount"}])
        amount_minor = amount_in_minor_units(body.amount, body.currency)
    elif body.currency is not None:
        try:
            currency_exponent(body.currency)
        except MoneyError as err:
            raise Problem(422, err.code, "Invalid currency", str(err),
                          errors=[{"field": "currency", "code": err.code, "message": str(err)}]) from None
    sessions: CheckoutSessions = request.app.state.checkout_sessions
    locale = i18n.supported(body.locale)
    token, session = await sessions.create(
        client_id=principal.client_id, player_id=body.player_id, currency=body.currency, amount_minor=amount_minor,
        country=body.country, locale=locale, return_url=body.return_url,
        may_withdraw="wallet" in principal.scopes, now=utcnow())
    base = request.app.state.settings.checkout_url
    return CheckoutSessionResponse(session_id=session.session_id, url=f"{base}/checkout/{token}",
                                   expires_at=session.expires_at.isoformat(), locale=locale)
