"""The risk engine end to end, on SQLite and PostgreSQL: the shipped rules (risk/rules.yaml) on real deposits and
payouts through the API, the worker and the sandbox PSPs — each default rule on its pattern, a clean player
untouched, shadow rules recorded and never acted on, the KYC gates per market, risk-based routing, the AML
scenarios and their cases, the report. Every test ends with the ledger invariants."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from decimal import Decimal
from typing import Any

import httpx

from api.app import create_app
from entrypoints.schedules import AML_SCHEDULE_ID, MONITOR_SCHEDULE_ID, ensure_schedules
from tests.e2e.conftest import API_KEY, Stack, eventually, free_port, new_player, serve
from tests.e2e.test_money_after_payment import open_dispute, resolve_dispute, wait_dispute
from tests.e2e.test_payouts import funded_player, payout, set_kyc, wait_payout
from workflows.types import AmlSweepResult

# Addresses from the shipped sandbox table (risk/ip_countries.csv); the test stack trusts its loopback proxy.
IP_GB = "86.130.0.1"
IP_DE = "217.0.0.5"
IP_KP = "175.45.176.1"


async def deposit(stack: Stack, player: str, *, amount: str = "50.00", method: str = "card", currency: str = "EUR",
                  country: str | None = "DE", ip: str | None = None, device: str | None = "",
                  card: str | None = None, expect: int | None = 201) -> Any:
    """A deposit through the API; `device` "" is a device of its own (no other player shares it), None none."""
    meta: dict[str, Any] = {}
    if country:
        meta["country"] = country
    if device is not None:
        meta["device_id"] = device or f"dev-{uuid.uuid4().hex[:12]}"
    if card:
        meta["sandbox_card"] = card
    body = {"amount": amount, "currency": currency, "method": method, "player_id": player,
            "return_url": "https://casino.example/return", "meta": meta}
    headers = {"Idempotency-Key": uuid.uuid4().hex, **({"X-Forwarded-For": ip} if ip else {})}
    response = await stack.api.post("/v1/payments/init", json=body, headers=headers)
    if expect is not None:
        assert response.status_code == expect, response.text
    return response.json() if expect == 201 else response


async def credited(stack: Stack, player: str, **kwargs: Any) -> dict[str, Any]:
    init = await deposit(stack, player, **kwargs)
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited", (payment["review_reason"], payment["risk"])
    return payment


async def cases(stack: Stack, **params: str) -> list[dict[str, Any]]:
    response = await stack.api.get("/v1/ops/risk/cases", params=params)
    assert response.status_code == 200, response.text
    return response.json()["cases"]


async def case_of(stack: Stack, player: str, kind: str) -> dict[str, Any]:
    found = await eventually(lambda: cases(stack, player_id=player, kind=kind), bool, timeout=20)
    return found[0]


def hit_rules(decision: dict[str, Any], key: str = "hits") -> set[str]:
    return {hit["rule"] for hit in decision[key]}


async def test_a_clean_deposit_is_low_risk_and_ops_see_each_stage(stack: Stack) -> None:
    player = new_player()
    payment = await credited(stack, player)
    assert payment["risk_level"] == "low"
    stages = {decision["stage"]: decision for decision in payment["risk"]}
    # Before the PSP, then again on the card the PSP answered with (its BIN country and fingerprint).
    assert set(stages) == {"pre", "instrument"}, payment["risk"]
    for decision in stages.values():
        assert (decision["action"], decision["score"], decision["hits"], decision["shadow_hits"]) == \
            ("allow", 0, [], []), decision
    assert await cases(stack, player_id=player) == []
    await stack.check_invariants()


async def test_a_shadow_rule_is_recorded_and_not_acted_on(stack: Stack) -> None:
    payment = await credited(stack, new_player(), device=None)  # no device id: the shadow rule's pattern
    pre = next(d for d in payment["risk"] if d["stage"] == "pre")
    assert hit_rules(pre, "shadow_hits") == {"no_device_id"} and pre["hits"] == []
    assert (pre["action"], pre["score"], payment["risk_level"]) == ("allow", 0, "low")
    await stack.check_invariants()


async def test_a_sanctioned_ip_country_is_denied_without_saying_which_rule(stack: Stack) -> None:
    player = new_player()
    refused = await deposit(stack, player, ip=IP_KP, expect=422)
    problem = refused.json()
    assert problem["code"] == "risk_denied" and "sanctioned" not in refused.text, problem
    ops = await stack.payment(problem["payment_id"])
    assert ops["status"] == "rejected" and ops["risk_level"] == "high"
    [pre] = ops["risk"]
    assert pre["action"] == "deny" and "sanctioned_ip_country" in hit_rules(pre)
    # A spoofed header from a peer that is not a trusted proxy counts for nothing: see the next test.
    assert await stack.balance(player) == "0.00"
    await stack.check_invariants()


async def test_forwarded_for_from_a_peer_that_is_no_trusted_proxy_counts_for_nothing(stack: Stack) -> None:
    """The same API, with only 192.0.2.1 as its trusted proxy: a sanctioned address in X-Forwarded-For from us is
    the client's own word, and the peer (loopback) has no country."""
    settings = stack.settings.model_copy(update={"api_port": free_port(), "trusted_proxies": "192.0.2.1/32"})
    app = create_app(settings, engine=stack.engine, temporal=stack.client)
    async with (serve(app, settings.api_port, forwarded_allow_ips=settings.trusted_proxy_cidrs),
                httpx.AsyncClient(base_url=settings.api_url, headers={"Authorization": f"Bearer {API_KEY}"},
                                  timeout=30) as api):
        response = await api.post("/v1/payments/init", json={
            "amount": "50.00", "currency": "EUR", "method": "ewallet", "player_id": new_player(),
            "return_url": "https://casino.example/return", "meta": {"country": "DE", "device_id": "dev-spoof"}},
            headers={"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": IP_KP})
    assert response.status_code == 201, response.text
    payment = await stack.wait_final(response.json()["payment_id"])
    assert payment["status"] == "credited" and payment["risk_level"] == "low"
    [pre] = payment["risk"]
    assert pre["hits"] == [] and pre["action"] == "allow"
    await stack.check_invariants()


async def test_ip_country_differs_adds_its_score(stack: Stack) -> None:
    payment = await credited(stack, new_player(), ip=IP_GB, country="DE")
    pre = next(d for d in payment["risk"] if d["stage"] == "pre")
    assert hit_rules(pre) == {"ip_country_differs"} and pre["score"] == 20 and pre["action"] == "allow"
    same = await credited(stack, new_player(), ip=IP_DE, country="DE")
    assert next(d for d in same["risk"] if d["stage"] == "pre")["hits"] == []
    await stack.check_invariants()


async def test_bin_country_differs_scores_the_card_stage(stack: Stack) -> None:
    payment = await credited(stack, new_player(), card="visa_gb", country="DE")
    card = next(d for d in payment["risk"] if d["stage"] == "instrument")
    assert hit_rules(card) == {"bin_country_differs"} and card["action"] == "allow"
    await stack.check_invariants()


async def test_a_step_up_on_the_card_holds_the_capture_while_kyc_is_not_verified(stack: Stack) -> None:
    """Before the PSP: 20 (IP country). On the card: + 25 (BIN country) = 45, step-up KYC — but the player is at
    the PSP already, so the capture waits for a person rather than for KYC."""
    init = await deposit(stack, new_player(), ip=IP_GB, country="DE", card="visa_us")  # each test its own card
    payment = await stack.wait_final(init["payment_id"])
    assert (payment["status"], payment["review_reason"]) == ("in_review", "risk_review"), payment
    stages = {d["stage"]: d for d in payment["risk"]}
    assert (stages["pre"]["action"], stages["instrument"]["action"]) == ("allow", "step_up_kyc")
    assert hit_rules(stages["instrument"]) == {"ip_country_differs", "bin_country_differs"}
    verified = new_player()
    await set_kyc(stack, verified, "verified")
    await credited(stack, verified, ip=IP_GB, country="DE", card="visa_br")  # verified: nothing to hold
    await stack.check_invariants()


async def test_a_device_shared_by_three_players_steps_up_kyc(stack: Stack) -> None:
    device = f"dev-shared-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        await credited(stack, new_player(), method="ewallet", device=device)
    init = await deposit(stack, new_player(), method="ewallet", device=device)
    assert init["status"] == "kyc_required", init
    waiting = await stack.payment(init["payment_id"])
    assert waiting["failure_code"] == "risk_step_up" and hit_rules(waiting["risk"][0]) == {"shared_device"}
    await stack.check_invariants()


async def test_velocity_rules_fire_on_their_counts(stack: Stack) -> None:
    """30 card deposits by one verified player from one device, card and address; the 31st has every velocity rule
    on it: player (≥ 10 in the hour), device (≥ 15 in a day), IP (≥ 30 in the hour) before the PSP, and the card
    (≥ 10 in a day) on it."""
    player, device, ip = new_player(), f"dev-{uuid.uuid4().hex[:8]}", "217.0.0.77"
    await set_kyc(stack, player, "verified")
    for _ in range(3):
        started = await asyncio.gather(*(deposit(stack, player, device=device, ip=ip, card="mc_de")
                                         for _ in range(10)))
        await asyncio.gather(*(stack.wait_final(init["payment_id"]) for init in started))
    init = await deposit(stack, player, device=device, ip=ip, card="mc_de")
    payment = await stack.wait_final(init["payment_id"])
    stages = {d["stage"]: d for d in payment["risk"]}
    assert hit_rules(stages["pre"]) == {"player_velocity", "device_velocity", "ip_velocity"}, stages["pre"]
    assert hit_rules(stages["instrument"]) == {"player_velocity", "device_velocity", "ip_velocity",
                                               "instrument_velocity"}, stages["instrument"]
    assert stages["instrument"]["action"] == "deny" and payment["review_reason"] == "risk_review"
    await stack.check_invariants()


async def test_new_account_large_deposit_with_another_ip_country_steps_up_kyc(stack: Stack) -> None:
    """20 (IP country) + 30 (new account, €1,000) = 50: step-up KYC. The deposit waits, then goes on once the
    player is verified."""
    player = new_player()
    init = await deposit(stack, player, amount="1000.00", method="ewallet", ip=IP_GB, country="DE")
    assert init["status"] == "kyc_required" and init.get("redirect_url") is None, init
    waiting = await stack.payment(init["payment_id"])
    assert waiting["failure_code"] == "risk_step_up" and waiting["risk_level"] == "medium"
    await set_kyc(stack, player, "verified")
    payment = await stack.wait_final(init["payment_id"])
    assert payment["status"] == "credited" and await stack.balance(player) == "1000.00"
    await stack.check_invariants()


async def test_gb_requires_kyc_before_the_first_deposit(stack: Stack) -> None:
    player = new_player()
    init = await deposit(stack, player, method="ewallet", country="GB")
    assert init["status"] == "kyc_required"
    assert (await stack.payment(init["payment_id"]))["failure_code"] == "kyc_required"
    await set_kyc(stack, player, "verified")
    assert (await stack.wait_final(init["payment_id"]))["status"] == "credited"
    # Verified: the next one goes straight through.
    await credited(stack, player, method="ewallet", country="GB")
    await stack.check_invariants()


async def test_a_deposit_waiting_for_kyc_expires(stack: Stack) -> None:
    init = await deposit(stack, new_player(), method="ewallet", country="GB")
    assert init["status"] == "kyc_required"
    expired = await eventually(lambda: stack.payment(init["payment_id"]), lambda p: p["status"] == "expired",
                               timeout=30)
    assert expired["failure_code"] == "kyc_timeout"
    await stack.check_invariants()


async def test_unlisted_markets_require_kyc_past_the_threshold(stack: Stack) -> None:
    player = new_player()
    await credited(stack, player, amount="1500.00", method="ewallet", country="FI")
    # 1,500 + 600 reaches €2,000 of lifetime deposits: verified KYC first.
    init = await deposit(stack, player, amount="600.00", method="ewallet", country="FI")
    assert init["status"] == "kyc_required"
    assert (await stack.payment(init["payment_id"]))["failure_code"] == "kyc_required"
    await stack.check_invariants()


async def test_rejected_kyc_denies_deposits(stack: Stack) -> None:
    player = new_player()
    await set_kyc(stack, player, "rejected")
    refused = await deposit(stack, player, expect=422)
    assert refused.json()["code"] == "kyc_rejected"
    await stack.check_invariants()


async def test_chargeback_history_is_high_risk_reviewed_and_routed_by_risk(stack: Stack) -> None:
    """A lost chargeback scores 60: high risk, so the routing file's `high-risk-cards` rule keeps the card on
    `card` (no failover to card_b while it is down), and a capture waits for a person."""
    player = new_player()
    disputed = await credited(stack, player, card="visa_es")
    dispute_id = await open_dispute(stack, disputed["payment_id"], "50.00", psp=disputed["psp"])
    await wait_dispute(stack, dispute_id, "opened")
    await resolve_dispute(stack, dispute_id, "lost", psp=disputed["psp"])
    await wait_dispute(stack, dispute_id, "lost")

    await stack.psp_mode("card", "down")
    try:
        refused = await deposit(stack, player, expect=None)
        low_risk = await deposit(stack, new_player())
    finally:
        await stack.psp_mode("card", "up")
    assert refused.status_code == 502 and refused.json()["code"] in ("psp_unavailable", "method_unavailable")
    assert low_risk["psp"] == "card_b"  # the same deposit, low risk, fails over

    init = await deposit(stack, player, card="visa_es")
    payment = await stack.wait_final(init["payment_id"])
    assert (payment["status"], payment["review_reason"], payment["risk_level"]) == \
        ("in_review", "risk_review", "high"), payment
    assert "chargeback_history" in hit_rules(next(d for d in payment["risk"] if d["stage"] == "pre"))
    balance_before = Decimal(await stack.balance(player))
    approved = await stack.api.post(f"/v1/ops/payments/{init['payment_id']}/review",
                                    json={"decision": "approve", "reviewer": "risk-1"})
    assert approved.status_code in (200, 202), approved.text
    done = await eventually(lambda: stack.payment(init["payment_id"]), lambda p: p["status"] == "credited")
    assert done["reviewed_by"].endswith("/risk-1")
    assert Decimal(await stack.balance(player)) == balance_before + Decimal("50.00")
    await stack.check_invariants()


async def test_a_shared_card_is_held_for_review_and_opens_an_aml_case(stack: Stack) -> None:
    """A second player paying with the same card: the card stage holds the capture for a person; approved, the
    deposit is credited and the AML scenario opens a case for the shared card."""
    first, second = new_player(), new_player()
    await credited(stack, first, card="mc_ng", country="NG")
    init = await deposit(stack, second, card="mc_ng", country="NG")
    payment = await stack.wait_final(init["payment_id"])
    assert (payment["status"], payment["review_reason"], payment["risk_level"]) == \
        ("in_review", "risk_review", "high"), payment
    card = next(d for d in payment["risk"] if d["stage"] == "instrument")
    assert hit_rules(card) == {"shared_instrument"} and card["action"] == "review"
    assert await stack.balance(second) == "0.00"  # nothing credited while a person looks
    approved = await stack.api.post(f"/v1/ops/payments/{init['payment_id']}/review",
                                    json={"decision": "approve", "reviewer": "risk-1"})
    assert approved.status_code in (200, 202), approved.text
    await eventually(lambda: stack.payment(init["payment_id"]), lambda p: p["status"] == "credited")
    assert await stack.balance(second) == "50.00"
    case = await case_of(stack, second, "shared_instrument")
    assert case["state"] == "open"
    await stack.check_invariants()


async def test_a_rejected_risk_review_refunds_the_capture(stack: Stack) -> None:
    first, second = new_player(), new_player()
    await credited(stack, first, card="visa_se", country="SE")
    init = await deposit(stack, second, card="visa_se", country="SE")
    assert (await stack.wait_final(init["payment_id"]))["review_reason"] == "risk_review"
    rejected = await stack.api.post(f"/v1/ops/payments/{init['payment_id']}/review",
                                    json={"decision": "reject", "reviewer": "risk-1"})
    assert rejected.status_code in (200, 202), rejected.text
    await eventually(lambda: stack.payment(init["payment_id"]), lambda p: p["status"] == "refunded", timeout=30)
    assert await stack.balance(second) == "0.00"
    await stack.check_invariants()


async def test_cdd_threshold_opens_a_case_and_the_next_payout_waits_for_review(stack: Stack) -> None:
    player = new_player()
    await set_kyc(stack, player, "verified")
    await credited(stack, player, amount="2000.00", method="ewallet")
    case = await case_of(stack, player, "cdd_threshold")
    assert case["player_id"] == player and case["state"] == "open"
    started = await payout(stack, player, "100.00", country=None)
    waiting = await wait_payout(stack, started["payout_id"], {"in_review"})
    assert waiting["review_reason"] == "aml_case_open"
    await stack.api.post(f"/v1/ops/payouts/{started['payout_id']}/review",
                         json={"decision": "reject", "reviewer": "mlro"})
    await wait_payout(stack, started["payout_id"])
    await stack.check_invariants()


async def test_structuring_just_below_the_threshold_opens_a_case(stack: Stack) -> None:
    player = new_player()
    await set_kyc(stack, player, "verified")
    for _ in range(3):
        await credited(stack, player, amount="1900.00", method="ewallet")
    case = await case_of(stack, player, "structuring")
    detail = (await stack.api.get(f"/v1/ops/risk/cases/{case['case_id']}")).json()
    assert len(detail["payments"]) >= 3 and all(p["temporal_ui_url"] for p in detail["payments"]), detail
    await stack.check_invariants()


async def test_rapid_in_out_sends_the_payout_to_review(stack: Stack) -> None:
    player = await funded_player(stack, wagered=False)  # deposited, played nothing, verified
    started = await payout(stack, player, "40.00", country=None)
    waiting = await wait_payout(stack, started["payout_id"], {"in_review"})
    assert waiting["review_reason"] == "aml_case_open"
    case = await case_of(stack, player, "rapid_in_out")
    assert started["payout_id"] in str(case)
    await stack.api.post(f"/v1/ops/payouts/{started['payout_id']}/review",
                         json={"decision": "approve", "reviewer": "mlro"})
    assert (await wait_payout(stack, started["payout_id"]))["status"] == "paid"
    await stack.check_invariants()


async def test_a_payout_by_a_method_never_deposited_with_opens_a_case_and_holds_the_next(stack: Stack) -> None:
    """Crypto pays out from 10.00: a 5.00 payout of a player who deposited only crypto goes by the fallback
    e-wallet — a route the player's money never came by."""
    player = await funded_player(stack, "50.00", kyc=None, method="crypto")  # played through: no rapid_in_out
    first = await wait_payout(stack, (await payout(stack, player, "5.00", country="DE"))["payout_id"])
    assert (first["status"], first["psp"]) == ("paid", "ewallet"), first
    case = await case_of(stack, player, "unusual_route")
    assert case["subject_ids"] == [first["payout_id"]] and case["facts"] == {"methods": ["ewallet"]}, case
    second = await payout(stack, player, "20.00", country="DE")  # by crypto again, but a case is open
    waiting = await wait_payout(stack, second["payout_id"], {"in_review"})
    assert waiting["review_reason"] == "aml_case_open"
    await stack.api.post(f"/v1/ops/payouts/{second['payout_id']}/review",
                         json={"decision": "approve", "reviewer": "mlro"})
    assert (await wait_payout(stack, second["payout_id"]))["status"] == "paid"
    await stack.check_invariants()


async def test_a_clean_player_opens_no_case_and_pays_out_without_kyc(stack: Stack) -> None:
    player = await funded_player(stack, kyc=None)  # played it through; an unlisted market needs no KYC to pay out
    started = await payout(stack, player, "40.00", country="DE")
    done = await wait_payout(stack, started["payout_id"])
    assert done["status"] == "paid" and done["risk_level"] == "low", done
    assert await cases(stack, player_id=player) == []
    await stack.check_invariants()


async def test_a_payout_from_a_sanctioned_ip_is_rejected(stack: Stack) -> None:
    player = await funded_player(stack)
    response = await stack.api.post("/v1/payouts/init", json={
        "amount": "10.00", "currency": "EUR", "player_id": player, "meta": {"country": "DE"}},
        headers={"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": IP_KP})
    assert response.status_code == 201, response.text
    done = await wait_payout(stack, response.json()["payout_id"])
    assert (done["status"], done["failure_code"]) == ("rejected", "risk_denied")
    assert await stack.balance(player) == "100.00"
    await stack.check_invariants()


async def test_a_case_is_decided_once_audited_and_reported(stack: Stack) -> None:
    player = new_player()
    await set_kyc(stack, player, "verified")
    await credited(stack, player, amount="2500.00", method="ewallet")
    case = await case_of(stack, player, "cdd_threshold")
    url = f"/v1/ops/risk/cases/{case['case_id']}"
    escalated = await stack.api.post(f"{url}/decide", json={"decision": "escalate", "note": "to the MLRO"},
                                     headers={"Idempotency-Key": uuid.uuid4().hex})
    assert escalated.status_code == 200 and escalated.json()["state"] == "escalated", escalated.text
    reported = await stack.api.post(f"{url}/decide", json={"decision": "report", "note": "STR filed"},
                                    headers={"Idempotency-Key": uuid.uuid4().hex})
    assert reported.status_code == 200 and reported.json()["state"] == "reported", reported.text
    again = await stack.api.post(f"{url}/decide", json={"decision": "clear", "note": "no"},
                                 headers={"Idempotency-Key": uuid.uuid4().hex})
    assert again.status_code == 409 and again.json()["code"] == "case_already_decided"
    report = (await stack.api.get(f"{url}/report", params={"format": "json"})).json()
    assert report["subject"]["player_id"] == player and report["scenario"]["kind"] == "cdd_threshold"
    assert any(t["amount"] == "2500.00" for t in report["transactions"]), report
    as_csv = await stack.api.get(f"{url}/report", params={"format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert any("2500.00" in row for row in csv.reader(io.StringIO(as_csv.text)))
    audit = (await stack.api.get("/v1/ops/audit", params={"subject": f"risk_case:{case['case_id']}"})).json()
    assert "escalate" in str(audit) and "report" in str(audit)
    await stack.check_invariants()


async def test_limits_count_every_currency(stack: Stack) -> None:
    player = new_player()
    response = await stack.api.put(f"/v1/players/{player}/deposit-limits",
                                   json={"currency": "EUR", "period": "day", "amount": "100.00"})
    assert response.status_code in (200, 201), response.text
    await credited(stack, player, amount="60.00", method="ewallet")
    refused = await deposit(stack, player, amount="60.00", currency="USD", method="ewallet", expect=422)
    assert refused.json()["code"] == "deposit_limit_exceeded"
    await stack.check_invariants()


async def test_the_daily_aml_recheck_runs(stack: Stack) -> None:
    ids = await ensure_schedules(stack.client, stack.settings, [])
    assert AML_SCHEDULE_ID in ids
    handle = stack.client.get_schedule_handle(AML_SCHEDULE_ID)
    try:
        await handle.trigger()
        description = await eventually(handle.describe, lambda d: len(d.info.recent_actions) > 0, timeout=20)
        run = description.info.recent_actions[-1].action
        sweep = stack.client.get_workflow_handle(run.workflow_id, run_id=run.first_execution_run_id,
                                                 result_type=AmlSweepResult)
        assert (await sweep.result()).players_checked >= 1  # the players of the tests before this one
    finally:
        await handle.delete()
        await stack.client.get_schedule_handle(MONITOR_SCHEDULE_ID).delete()
