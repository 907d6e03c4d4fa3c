"""The card acquirers (`card`, `card_b`) tell the card a payment was made with — its BIN country and fingerprint — in
their wire format (`card: {country, fingerprint}`), on create and look-up answers and in webhooks; the connector
reads them into PspPayment. Test cards are chosen by `CreatePaymentRequest.sandbox_card` (merchant metadata)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import httpx
import pytest

from psp.base import CreatePaymentRequest, PspError, PspRequestRejected
from psp.http_connector import HttpPspConnector
from psp.sandbox.cards import card_of
from psp.sandbox.formats import SandboxError
from psp.sandbox_connector import SandboxConnector
from psp.scenarios import SANDBOX_CARDS
from tests.psp.psp_testkit import (
    PSP_METHOD,
    RunningSandbox,
    WebhookReceiver,
    payment_request,
    verified,
    wait_for_webhooks,
)


def _paying_with(card: str | None, scenario: str | None = None, **changes: Any) -> CreatePaymentRequest:
    return dataclasses.replace(payment_request(scenario), sandbox_card=card, **changes)


def _fp(text: str) -> str:
    return "fp_" + hashlib.sha256(text.encode()).hexdigest()[:24]


# -- the sandbox's cards (pure) ----------------------------------------------------------------------------------


def test_named_cards_have_fixed_fingerprints_and_their_bin_country() -> None:
    assert {"visa_de", "visa_gb", "mc_fi", "visa_es", "visa_br", "mc_ng", "visa_kp"} <= set(SANDBOX_CARDS)
    gb = card_of({"sandbox_card": "visa_gb"}, "player_1", "DE")
    assert (gb.bin_country, gb.fingerprint) == ("GB", _fp("visa_gb"))
    assert card_of({"sandbox_card": "visa_gb"}, "player_2", None) == gb  # whoever pays with it
    fingerprints = {card_of({"sandbox_card": name}, "p", None).fingerprint for name in SANDBOX_CARDS}
    assert len(fingerprints) == len(SANDBOX_CARDS)


def test_without_a_name_the_player_pays_with_their_own_card() -> None:
    own = card_of({}, "player_1", "FI")
    assert own.bin_country == "FI" and own.fingerprint.startswith("fp_")
    assert card_of({}, "player_1", None).bin_country == "DE"  # no country: DE
    assert card_of({}, "player_1", "SE").fingerprint == own.fingerprint  # the same card in every payment
    assert card_of({}, "player_2", "FI").fingerprint != own.fingerprint
    # A player named like a test card still has a card of their own.
    assert card_of({}, "visa_gb", None).fingerprint != _fp("visa_gb")


def test_an_unknown_card_is_a_422() -> None:
    with pytest.raises(SandboxError) as refused:
        card_of({"sandbox_card": "amex_zz"}, "player_1", None)
    assert (refused.value.status, refused.value.code) == (422, "unknown_test_card")


# -- the wire --------------------------------------------------------------------------------------------------


async def test_the_connector_sends_the_card_as_merchant_metadata() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    connector = SandboxConnector("card", frozenset({"card"}), "http://psp.test/card", http)
    for card in ("visa_gb", None):
        with pytest.raises(PspError):
            await connector.create_payment(_paying_with(card, "challenge"))
    assert [json.loads(r.content)["metadata"] for r in seen] == [
        {"sandbox_scenario": "challenge", "sandbox_card": "visa_gb"}, {"sandbox_scenario": "challenge"},
    ]


@pytest.mark.parametrize("psp", ["card", "card_b"])
async def test_answers_and_webhooks_carry_the_card(
    psp: str, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox,
    receiver: WebhookReceiver,
) -> None:
    req = _paying_with("mc_fi")

    created = await every_psp[psp].create_payment(req)

    assert (created.bin_country, created.instrument) == ("FI", _fp("mc_fi"))
    raw = (await http.get(f"{sandbox.url}/{psp}/v1/payments/{req.payment_id}")).json()
    assert raw["card"] == {"country": "FI", "fingerprint": _fp("mc_fi")}
    await wait_for_webhooks(receiver, req.payment_id)
    [webhook] = receiver.for_payment(req.payment_id)
    assert webhook.json["card"] == {"country": "FI", "fingerprint": _fp("mc_fi")}
    assert [e.status for e in verified(every_psp[psp], receiver, req.payment_id)] == ["captured"]
    looked_up = await every_psp[psp].get_payment(req.payment_id)
    assert (looked_up.status, looked_up.bin_country, looked_up.instrument) == ("captured", "FI", _fp("mc_fi"))


async def test_one_card_has_one_fingerprint_at_both_acquirers_and_for_every_player(
    card: SandboxConnector, card_b: SandboxConnector
) -> None:
    at_card = await card.create_payment(_paying_with("visa_kp", "lost"))
    at_card_b = await card_b.create_payment(_paying_with("visa_kp", "lost", player_id="player_2"))
    assert at_card.instrument == at_card_b.instrument == _fp("visa_kp")
    assert at_card.bin_country == at_card_b.bin_country == "KP"


async def test_a_players_own_card_is_issued_in_the_payments_country(card: SandboxConnector) -> None:
    first = await card.create_payment(_paying_with(None, "lost", country="ES"))
    again = await card.create_payment(_paying_with(None, "lost", country=None))
    other = await card.create_payment(_paying_with(None, "lost", player_id="player_2"))
    assert (first.bin_country, again.bin_country) == ("ES", "DE")
    assert first.instrument == again.instrument != other.instrument
    assert first.instrument and first.instrument.startswith("fp_")


async def test_a_declined_or_challenged_payment_still_names_its_card(card: SandboxConnector) -> None:
    challenged = await card.create_payment(_paying_with("visa_br", "challenge"))
    assert (challenged.status, challenged.bin_country) == ("requires_action", "BR")
    declined = _paying_with("mc_ng", "decline")
    with pytest.raises(PspError):
        await card.create_payment(declined)
    assert (await card.get_payment(declined.payment_id)).bin_country == "NG"


@pytest.mark.parametrize("psp", ["card", "card_b"])
async def test_an_unknown_card_is_refused_before_anything_is_created(
    psp: str, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = _paying_with("amex_zz")

    with pytest.raises(PspRequestRejected) as rejected:
        await every_psp[psp].create_payment(req)

    assert rejected.value.code == "unknown_test_card"
    response = await http.get(f"{sandbox.url}/{psp}/v1/payments/{req.payment_id}")
    assert response.status_code == 404
    # The same payment with a known card goes through afterwards (nothing was stored under its id).
    assert (await every_psp[psp].create_payment(dataclasses.replace(req, sandbox_card="visa_es"))).bin_country == "ES"


async def test_an_idempotency_key_reused_with_another_card_is_refused(
    http: httpx.AsyncClient, sandbox: RunningSandbox, card: SandboxConnector
) -> None:
    body = card.payment_body(_paying_with("visa_de", "lost"))
    headers = {"Idempotency-Key": body["merchant_reference"]}
    first = await http.post(f"{sandbox.url}/card/v1/payments", json=body, headers=headers)
    assert first.status_code == 201 and first.json()["card"]["country"] == "DE"
    body["metadata"]["sandbox_card"] = "visa_gb"
    again = await http.post(f"{sandbox.url}/card/v1/payments", json=body, headers=headers)
    assert (again.status_code, again.json()["error"]["code"]) == (422, "idempotency_key_reused")


@pytest.mark.parametrize("psp", ["ewallet", "paybybank", "crypto"])
async def test_other_families_tell_no_card(
    psp: str, every_psp: dict[str, HttpPspConnector], http: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    req = _paying_with("visa_gb", "lost", method=PSP_METHOD[psp])

    created = await every_psp[psp].create_payment(req)

    assert (created.bin_country, created.instrument) == (None, None)
    raw = (await http.get(f"{sandbox.url}/{psp}/v1/payments/{req.payment_id}")).json()
    assert "card" not in json.dumps(raw)
    assert (await every_psp[psp].get_payment(req.payment_id)).instrument is None


@pytest.mark.parametrize(
    "card",
    [
        "GB",  # not an object
        {"country": "gb", "fingerprint": "fp_1"},
        {"country": "GBR", "fingerprint": "fp_1"},
        {"country": "GB"},
        {"country": "GB", "fingerprint": ""},
        {"country": "GB", "fingerprint": "fp 1"},
        {"country": "GB", "fingerprint": "f" * 129},
    ],
)
async def test_a_malformed_card_is_a_bad_psp_response(
    card: Any, http: httpx.AsyncClient, sandbox: RunningSandbox, card_b: SandboxConnector
) -> None:
    req = _paying_with("visa_gb", "lost")
    await card_b.create_payment(req)
    good = (await http.get(f"{sandbox.url}/card_b/v1/payments/{req.payment_id}")).json()

    def answering(body: dict[str, Any]) -> SandboxConnector:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200, json=body)))
        return SandboxConnector("card_b", frozenset({"card"}), "http://psp.test/card_b", client)

    with pytest.raises(PspError) as raised:
        await answering(good | {"card": card}).get_payment(req.payment_id)
    assert type(raised.value) is PspError and raised.value.code == "bad_psp_response"
    assert (await answering(good).get_payment(req.payment_id)).bin_country == "GB"
    assert (await answering({k: v for k, v in good.items() if k != "card"}).get_payment(req.payment_id)).instrument \
        is None


def test_the_deposit_activities_view_carries_the_card() -> None:
    from activities.deposit import _view
    from psp.base import PspPayment

    payment = PspPayment("card", "pay_1", "card_1", "captured", 5000, "EUR", bin_country="GB",
                         instrument=_fp("visa_gb"))
    view = _view(payment)
    assert (view.bin_country, view.instrument) == ("GB", _fp("visa_gb"))
    assert _view(dataclasses.replace(payment, bin_country=None, instrument=None)).instrument is None
