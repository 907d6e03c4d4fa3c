"""Trust boundaries over a real stack: card numbers are refused before anything is stored or started, and what
Temporal stores of a payment is ciphertext (search attributes aside), while the API reads everything."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from google.protobuf.message import Message
from temporalio.api.enums.v1 import EventType
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from payloop.codec import ENCODING
from tests.e2e.conftest import Stack, eventually, new_player
from tests.e2e.test_payouts import assert_settled, funded_player, payout, wait_payout
from workflows.types import DepositInput

CARD_IN_URL = "https://casino.example/back?email=jane.doe%40example.com&pan=4111111111111111&token=x"


def deposit_body(player: str, return_url: str, **meta: str) -> dict[str, Any]:
    return {"amount": "20.00", "currency": "EUR", "method": "ewallet", "player_id": player, "return_url": return_url,
            "meta": {"country": "DE", **meta}}


def assert_card_refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "card_number_not_allowed"
    assert [e["field"] for e in problem["errors"] if e["code"] == "card_number_not_allowed"] == [field]
    for echoed in ("4111", "jane.doe", "casino.example"):  # the value (and what came with it) is not sent back
        assert echoed not in response.text, echoed


async def test_a_card_number_in_the_return_url_is_refused_and_nothing_is_claimed_or_started(stack: Stack) -> None:
    player, key = new_player(), uuid.uuid4().hex
    refused = await stack.api.post("/v1/payments/init", json=deposit_body(player, CARD_IN_URL),
                                   headers={"Idempotency-Key": key})
    assert_card_refused(refused, "return_url")
    # The key was not claimed: the same key with a clean body starts the payment (a claimed key would be a 422
    # idempotency_key_reused), and that payment is the player's only workflow.
    accepted = await stack.api.post("/v1/payments/init", headers={"Idempotency-Key": key},
                                    json=deposit_body(player, "https://casino.example/back?order=4111111111111112"))
    assert accepted.status_code == 201, accepted.text  # a Luhn-invalid 16-digit run is not a card number
    await stack.wait_final(accepted.json()["payment_id"])
    workflows = await eventually(
        lambda: _workflow_ids(stack.client, f"PlayerId = '{player}'"), lambda ids: len(ids) >= 1)
    assert workflows == [f"deposit-{accepted.json()['payment_id']}"]
    await stack.check_invariants()


async def test_a_card_number_in_meta_device_is_refused(stack: Stack) -> None:
    response = await stack.api.post("/v1/payments/init", headers={"Idempotency-Key": uuid.uuid4().hex},
                                    json=deposit_body(new_player(), "https://casino.example/back",
                                                      device="Mozilla/5.0 card 4111 1111 1111 1111"))
    assert_card_refused(response, "meta.device")


async def test_a_card_number_in_a_kyc_note_changes_nothing(stack: Stack) -> None:
    player = new_player()
    refused = await stack.api.put(f"/v1/ops/players/{player}/kyc",
                                  json={"status": "verified", "note": "card 4111-1111-1111-1111 seen on call"})
    assert_card_refused(refused, "note")
    assert (await stack.api.get(f"/v1/players/{player}")).json()["kyc_status"] == "unverified"
    audit = await stack.api.get("/v1/ops/audit", params={"subject": f"player:{player}"})
    assert audit.json()["entries"] == []


async def test_card_numbers_in_payout_cancel_and_review_reasons_are_refused_before_the_workflow_hears(
    stack: Stack,
) -> None:
    player = await funded_player(stack, kyc=None)
    started = await payout(stack, player)
    payout_id = started["payout_id"]
    await wait_payout(stack, payout_id, {"kyc_required"})
    cancel = await stack.api.post(f"/v1/payouts/{payout_id}/cancel", json={"reason": "refund to 4111111111111111"})
    assert_card_refused(cancel, "reason")
    # Not in review: a valid decision would be a 409, so this 422 shows the body was refused first.
    review = await stack.api.post(f"/v1/ops/payouts/{payout_id}/review",
                                  json={"decision": "reject", "reviewer": "4111-1111-1111-1111"})
    assert_card_refused(review, "reviewer")
    assert (await wait_payout(stack, payout_id, {"kyc_required"}))["status"] == "kyc_required"  # still waiting
    done = await stack.api.post(f"/v1/payouts/{payout_id}/cancel", json={"reason": "player asked"})
    assert done.status_code == 200 and done.json()["status"] == "cancelled", done.text
    await assert_settled(stack, done.json())


async def test_temporal_stores_a_deposit_encrypted_and_the_api_still_reads_it(stack: Stack) -> None:
    player = new_player()
    return_url = f"https://casino.example/back?order=o-{uuid.uuid4().hex}"
    response = await stack.api.post("/v1/payments/init", headers={"Idempotency-Key": uuid.uuid4().hex},
                                    json=deposit_body(player, return_url))
    assert response.status_code == 201, response.text
    payment_id = response.json()["payment_id"]
    view = await stack.wait_final(payment_id)
    assert view["status"] == "credited" and view["player_id"] == player  # the API reads through the codec

    # A client without the codec: what Temporal's database, its backups and anyone without a key see.
    target = stack.client.service_client.config.target_host
    plain = await Client.connect(target, namespace=stack.settings.temporal_namespace)
    history = await plain.get_workflow_handle(f"deposit-{payment_id}").fetch_history()
    payloads = [p for event in history.events for p in _payloads(event)]
    # The SDK core's own bookkeeping is not a payload of ours and is stored plain: of each local activity (sequence
    # number, attempt, activity type, times; the activity's result beside it is ours, and encrypted) and of each
    # patch (its id).
    recorded = [e.marker_recorded_event_attributes for e in history.events
                if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    local_activities = [m.details["data"].payloads[0] for m in recorded if m.marker_name == "core_local_activity"]
    patches = [m.details["patch-data"].payloads[0] for m in recorded if m.marker_name == "core_patch"]
    assert len(local_activities) + len(patches) == len(recorded), [m.marker_name for m in recorded]
    bookkeeping = local_activities + patches
    markers = [json.loads(p.data) for p in local_activities]
    assert all({"seq", "attempt", "activity_type"} <= marker.keys() for marker in markers)
    assert {json.loads(p.data)["id"] for p in patches} == {"deposit-psp-search-attribute", "fx-conversion"}
    assert {"screen_deposit", "route_deposit", "credit_deposit"} <= {marker["activity_type"] for marker in markers}
    ours = [p for p in payloads if p not in bookkeeping]
    assert len(ours) >= 8, "inputs, activity results, update answer, memo, result"
    assert {p.metadata["encoding"] for p in ours} == {ENCODING}
    assert {p.metadata["encryption-key-id"] for p in ours} == {b"e2e-2"}
    outside_search_attributes = b"".join(_without_search_attributes(e).SerializeToString() for e in history.events)
    everything = b"".join(e.SerializeToString() for e in history.events)
    assert return_url.encode() not in everything
    assert player.encode() not in outside_search_attributes
    assert player.encode() in everything  # only in the PlayerId search attribute (opaque ids; see README)

    started = history.events[0].workflow_execution_started_event_attributes.input.payloads
    try:
        await plain.data_converter.decode(started, [DepositInput])
        raise AssertionError("a client without the codec read the deposit's input")
    except KeyError as err:
        assert "binary/encrypted" in str(err)
    [deposit_input] = await stack.client.data_converter.decode(started, [DepositInput])
    assert (deposit_input.player_id, deposit_input.return_url) == (player, return_url)


async def test_failure_messages_in_the_history_are_encrypted_too(stack: Stack) -> None:
    declined = await stack.deposit(method="card", scenario="decline", expect=402)
    history = await stack.client.get_workflow_handle(f"deposit-{declined['payment_id']}").fetch_history()
    failures = [e.activity_task_failed_event_attributes.failure for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED]
    assert failures, "a declined create is a failed activity"
    for failure in failures:
        assert failure.message == "Encoded failure" and failure.encoded_attributes.metadata["encoding"] == ENCODING
        error = await stack.client.data_converter.decode_failure(failure)  # the codec's client reads it
        assert isinstance(error, ApplicationError) and error.message == "the payment was declined"
        assert error.details[0] == declined["decline_code"]


async def _workflow_ids(client: Client, query: str) -> list[str]:
    return [w.id async for w in client.list_workflows(query)]


def _payloads(message: Message) -> Iterator[Payload]:
    """Every Payload in a history event, search attributes left out (Temporal indexes those in clear text)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.name == "search_attributes":
            continue
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            for entry in value.values():
                if isinstance(entry, Message):
                    yield from _payloads(entry)
        elif _repeated(field):
            for item in value:
                yield from _payloads(item)
        else:
            yield from _payloads(value)


def _repeated(field: Any) -> bool:
    # protobuf 6+ says is_repeated; older versions only have the label.
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED


def _without_search_attributes(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    _clear_search_attributes(copy)
    return copy


def _clear_search_attributes(message: Message) -> None:
    for field, value in message.ListFields():
        if field.name == "search_attributes":
            message.ClearField(field.name)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for item in (value if _repeated(field) else [value]):
                _clear_search_attributes(item)
