"""Schemathesis fuzzing: every operation of the app's own OpenAPI schema, over real HTTP, against the real stack.

Cases come from the schema the API serves (`/openapi.json`, made by `api.app.create_app`): valid ones (positive),
invalid ones (negative), and valid ones with one value swapped for an odd one (NUL, a lone surrogate, a huge
integer...). They are sent with the full-scope API key mostly, and sometimes with no key, a wrong key, another
tenant's key or a key without the operation's scope. Some cases name objects that exist (a credited deposit, a
payout, a game round, a stored webhook), and the schema's examples are mixed in, so handlers get past "not found"
and "invalid amount" and start real deposits, payouts and bets. Runs on both ledger backends (PostgreSQL refuses
things SQLite takes, e.g. NUL in text and integers beyond 32 bits).

Every response must be a non-5xx answer the schema declares (status code, content type, headers, body), invalid
input must be refused with a 4xx, a request to an API-key operation without a valid key must get a 401, and
afterwards the ledger invariants must hold.

Checks left out, and why:
- `positive_data_acceptance`: schema-valid is not always acceptable here, by design: "50.001" is a valid amount
  string but has too many decimals for EUR, a currency matching [A-Z]{3} may be unsupported, a payout may
  exceed the balance (402). Those are 422/402 problems the schema declares, so the conformance checks still
  cover them.
- `max_response_time`: speed is measured by the benchmark command, not by timed tests (DESIGN.md, Testing).

Generation is deterministic (derandomized, no example database, no shrinking) so CI runs the same cases every
time; a failure names the operation and pass and prints a curl command that reproduces it. The cases run in a
thread (blocking HTTP) while the stack keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis

# Imported here, at collection, not lazily inside the test: pytest rewrites a plugin package's modules on first
# import, and CPython 3.11.7's parser can fail that deep inside a running test ("AST constructor recursion depth
# mismatch").
import schemathesis.specs.openapi.schemas
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import (
    API_KEY,
    OTHER_CLIENT_KEY,
    WALLET_ONLY_KEY,
    Stack,
    new_player,
)

# Passes per operation: (name, generation mode, cases, whether one value is swapped for an odd one).
PASSES = [("positive", GenerationMode.POSITIVE, 30, False),
          ("negative", GenerationMode.NEGATIVE, 20, False),
          ("odd", GenerationMode.POSITIVE, 15, True)]
# Values that break code rather than schemas: NUL and control characters (PostgreSQL refuses NUL in text), a lone
# surrogate (not encodable as UTF-8), bidi overrides, long strings, injection-shaped text, out-of-range integers.
ODD_STRINGS = ["\x00", "a\x00b", "\x1b[2J\r\n", "\u202egnp.exe", "\U0001f4b8" * 8, "x" * 5000, "%00%ff",
               "' OR '1'='1", "-1", "1e400", "NaN"]
BODY_ONLY_STRINGS = ["\ud800", "../../etc/passwd"]  # not encodable in a URL; a path the client would resolve
ODD_INTEGERS = [-1, 0, 2**31, 2**63, -(2**63) - 1, 10**30]
MIN_TOTAL_CASES = 1000  # per backend
MIN_OPERATION_CASES = 10  # an operation without input has few distinct cases: one per caller
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]

# Who sends a case: mostly the full-scope key, so cases reach the handlers.
CALLERS = ["ops"] * 7 + ["none", "bad", "other_client", "wallet_only"]
CALLER_HEADERS = {
    "ops": {"Authorization": f"Bearer {API_KEY}"},
    "none": {},
    "bad": {"Authorization": "Bearer not-a-key"},
    "other_client": {"Authorization": f"Bearer {OTHER_CLIENT_KEY}"},
    "wallet_only": {"Authorization": f"Bearer {WALLET_ONLY_KEY}"},
}


@dataclass
class Run:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def fuzz(schema: schemathesis.BaseSchema, base_url: str, known: dict[str, list[Any]]) -> Run:
    """Runs every operation's cases (blocking: called in a thread while the stack serves on the event loop)."""
    run = Run()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        raw = operation.definition.raw
        secured = bool(raw.get("security"))
        has_input = bool(raw.get("parameters")) or "requestBody" in raw
        path_names = [p["name"] for p in raw.get("parameters", []) if p["in"] == "path"]
        for pass_name, mode, max_examples, odd in PASSES:
            if (mode.is_negative or odd) and not has_input:
                continue  # nothing to make invalid or odd
            cases = operation.as_strategy(generation_mode=mode)
            if path_names and all(name in known for name in path_names):
                cases = st.one_of(cases, _naming_known(operation, mode, {n: known[n] for n in path_names}))
            test = _test(cases, max_examples, odd, run, operation.label, secured, base_url, session)
            try:
                test()
            except hypothesis.errors.Unsatisfiable:
                # No invalid value exists for some inputs (e.g. a free-form string in the path); the positive
                # cases still cover the operation, and the per-operation minimum below keeps it honest.
                pass
            except (AssertionError, BaseExceptionGroup, requests.RequestException) as err:
                # A flaky failure is a group: its first occurrence is what to look at.
                causes = [repr(e)[:2000] for e in err.exceptions] if isinstance(err, BaseExceptionGroup) else []
                run.failures.append("\n  ".join([f"{operation.label} [{pass_name}]: {err}", *causes]))
    return run


def _naming_known(operation: schemathesis.APIOperation, mode: GenerationMode,
                  known: dict[str, list[Any]]) -> st.SearchStrategy[schemathesis.Case]:
    """Cases whose path names objects that exist."""
    paths = st.fixed_dictionaries({name: st.sampled_from(values) for name, values in known.items()})
    return paths.flatmap(lambda path: operation.as_strategy(generation_mode=mode, path_parameters=path))


def _swap_one_value(case: schemathesis.Case, pick: int) -> None:
    """Replaces one string or integer in the path, query or body with an odd value (`pick` chooses which)."""
    slots: list[tuple[Any, Any, list[Any]]] = []  # (container, key, odd values that may replace its value)

    def collect(container: Any, in_body: bool) -> None:
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            if isinstance(value, dict | list):
                collect(value, in_body)
            elif isinstance(value, str):
                slots.append((container, key, ODD_STRINGS + (BODY_ONLY_STRINGS if in_body else [])))
            elif isinstance(value, int) and not isinstance(value, bool):
                slots.append((container, key, ODD_INTEGERS))

    for location in (case.path_parameters, case.query):
        if location:
            collect(location, in_body=False)
    if isinstance(case.body, dict | list):
        collect(case.body, in_body=True)
    if slots:
        container, key, values = slots[pick % len(slots)]
        container[key] = values[(pick // len(slots)) % len(values)]


def _test(cases: st.SearchStrategy[schemathesis.Case], max_examples: int, odd: bool, run: Run, label: str,
          secured: bool, base_url: str, session: requests.Session) -> Any:
    @hypothesis.given(case=cases, caller=st.sampled_from(CALLERS), pick=st.integers(0, 10**6))
    @hypothesis.settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck), print_blob=False)
    def test(case: schemathesis.Case, caller: str, pick: int) -> None:
        run.cases[label] += 1
        if odd:
            _swap_one_value(case, pick)
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = headers | CALLER_HEADERS[caller]
        response = case.call(base_url=base_url, session=session, timeout=30)
        run.statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if secured and caller in ("none", "bad"):
            assert response.status_code == 401, f"no valid API key, yet {response.status_code}: {response.text}"
        if response.status_code >= 400:
            assert response.headers["content-type"] == ["application/problem+json"], response.headers
    return test


async def known_objects(stack: Stack) -> dict[str, list[Any]]:
    """Objects that exist, for the cases that name them: a credited deposit, a held payout, a game round, the
    stored webhooks, the PSPs that send webhooks."""
    player = new_player()
    deposit = await stack.deposit(player_id=player, amount="100.00")
    await stack.wait_final(deposit["payment_id"])
    payout = await stack.api.post("/v1/payouts/init", json={"amount": "10.00", "currency": "EUR", "player_id": player,
                                                             "meta": {"sandbox_scenario": "lost"}},
                                  headers={"Idempotency-Key": uuid.uuid4().hex})
    assert payout.status_code == 201, payout.text
    round_id = f"r-{uuid.uuid4().hex[:8]}"
    bet = await stack.api.post("/v1/wallet/debit", json={
        "player_id": player, "currency": "EUR", "amount": "1.00", "transaction_id": f"t-{uuid.uuid4().hex[:8]}",
        "round_id": round_id, "game_id": "slots"})
    assert bet.status_code == 200, bet.text
    webhooks = (await stack.api.get("/v1/ops/webhooks", params={"state": "signalled"})).json()
    assert webhooks, "the deposit's webhook should be stored"
    return {
        "payment_id": [deposit["payment_id"]],
        "payout_id": [payout.json()["payout_id"]],
        "player_id": [player],
        "round_id": [round_id],
        "event_row_id": [w["id"] for w in webhooks],
        "psp": ["card", "ewallet", "paybybank", "crypto"],
    }


async def test_every_operation_survives_fuzzing(stack: Stack) -> None:
    spec = (await stack.api.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec, config=schemathesis.Config())  # defaults, not a discovered file
    known = await known_objects(stack)
    started = time.monotonic()
    run = await asyncio.to_thread(fuzz, schema, stack.settings.api_url, known)
    print(f"\nfuzzed {sum(run.cases.values())} cases over {len(run.cases)} operations "
          f"in {time.monotonic() - started:.1f} s; statuses {sorted(run.statuses.items())}")
    assert not run.failures, "\n\n".join(run.failures)
    operations = {op.ok().label for op in schema.get_all_operations()}
    assert operations == set(run.cases), f"operations without cases: {operations - set(run.cases)}"
    thin = {label: n for label, n in run.cases.items() if n < MIN_OPERATION_CASES}
    assert not thin, f"operations with too few cases: {thin}"
    assert sum(run.cases.values()) >= MIN_TOTAL_CASES
    await stack.check_invariants()
