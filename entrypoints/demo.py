"""`payloop demo`: the product end to end in one command, through the public HTTP API only."""

from __future__ import annotations

import time
import uuid

import httpx

from payloop.settings import Settings
from entrypoints.stack import EmbeddedStack

FINAL = {"credited", "failed", "rejected", "expired", "in_review"}


def run_demo(settings: Settings, *, keep_running: bool = False) -> int:
    """The demo; with `keep_running`, the stack stays up afterwards (until Ctrl-C) for the printed checkout URL."""
    stack = EmbeddedStack(settings)
    started = time.monotonic()
    try:
        print("starting the embedded stack…", flush=True)
        stack.start()
        api_key = settings.api_keys.split(";")[0].split(":")[0]
        player_id = f"demo-{uuid.uuid4().hex[:8]}"
        with httpx.Client(base_url=settings.api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as api:
            for method, amount in (("card", "50.00"), ("ewallet", "25.00")):
                payment = _deposit(api, player_id, method, amount)
                print(f"{method:8} deposit {amount} EUR  {payment['payment_id']}  status={payment['status']}")
                print(f"         Temporal UI: {payment['temporal_ui_url']}")
            balance = api.get(f"/v1/wallet/{player_id}/balance").json()
            for entry in balance["balances"]:
                print(f"wallet of {player_id}: available {entry['available']} {entry['currency']}")
            run = _reconcile_today(api, "ewallet")
            found = ", ".join(f"{name} {total['count']}" for name, total in run["classes"].items())
            print(f"reconciled today's ewallet settlement report: {found}  (run {run['run_id']}; daily runs: "
                  f"Temporal UI → Schedules)")
            checkout = _open_checkout(api, settings)
        print(f"demo finished in {time.monotonic() - started:.1f} s")
        print(f"checkout for player {checkout['player_id']}, every sandbox method, valid until "
              f"{checkout['expires_at']}:\n  {checkout['url']}")
        if not keep_running:
            print("(the stack stops now: `payloop demo --keep-running` keeps it up to pay there)")
            return 0
        print("The stack stays up for the checkout; Ctrl-C stops it.", flush=True)
        while True:
            stack.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    except (RuntimeError, httpx.HTTPError) as err:
        print(f"demo failed: {err}")
        return 1
    finally:
        stack.stop()


def _reconcile_today(api: httpx.Client, psp: str) -> dict:
    """Today's settlement report of `psp` so far, matched to the ledger (ops do this with any day). As of now: a run
    of its own each time, even when an earlier demo reconciled today already."""
    now = time.gmtime()
    response = api.post("/v1/ops/recon/runs", json={"psp": psp, "date": time.strftime("%Y-%m-%d", now),
                                                    "as_of": time.strftime("%Y-%m-%dT%H:%M:%SZ", now)})
    if response.status_code not in (200, 202):
        raise RuntimeError(f"reconciliation answered {response.status_code}: {response.text}")
    deadline = time.monotonic() + 30
    while True:
        run = api.get(f"/v1/ops/recon/runs/{response.json()['run_id']}").json()
        if run["state"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _open_checkout(api: httpx.Client, settings: Settings) -> dict:
    """A checkout session for a new demo player (as a casino opens one for its player), checked to open. Back from
    it, the player lands on the Temporal UI's list of workflows: every payment made there is one of them."""
    player_id = f"demo-{uuid.uuid4().hex[:8]}"
    response = api.post("/v1/checkout/sessions", json={
        "player_id": player_id, "currency": "EUR", "country": "DE",
        "return_url": f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows"})
    if response.status_code != 201:
        raise RuntimeError(f"checkout session answered {response.status_code}: {response.text}")
    session = response.json()
    page = httpx.get(session["url"], timeout=30)
    if page.status_code != 200:
        raise RuntimeError(f"the checkout page answered {page.status_code}")
    return session | {"player_id": player_id}


def _deposit(api: httpx.Client, player_id: str, method: str, amount: str) -> dict:
    response = api.post(
        "/v1/payments/init",
        headers={"Idempotency-Key": uuid.uuid4().hex},
        json={"amount": amount, "currency": "EUR", "method": method, "player_id": player_id,
              "return_url": "https://casino.example/cashier/return", "meta": {"country": "DE"}},
    )
    if response.status_code != 201:
        raise RuntimeError(f"init answered {response.status_code}: {response.text}")
    payment_id = response.json()["payment_id"]
    deadline = time.monotonic() + 30
    while True:
        payment = api.get(f"/v1/payments/{payment_id}").json()
        if payment["status"] in FINAL or time.monotonic() > deadline:
            return payment
        time.sleep(0.1)
