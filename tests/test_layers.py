"""The layers of ../shared/DESIGN.md ("who may import whom"), checked on the source.

Every `.py` file of the product packages is parsed with `ast`, and every import in it counts: at the top of the
module, inside a function, under `if TYPE_CHECKING:`, anywhere. A failure lists each offending import as
file:line, so a new arrow is either fixed or argued for here, never hidden in a function.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NOT_PRODUCT = {"tests", "docs", "build", "dist"}

# Which project modules each top-level package may import. A name allows that module and everything under it
# ("payloop" allows payloop.db; "workflows.types" allows only workflows.types and its submodules).
EVERYTHING = ("payloop", "ledger", "psp", "players", "risk", "incidents", "fx", "events", "workflows",
              "activities", "api", "workers", "entrypoints")
ALLOWED: dict[str, tuple[str, ...]] = {
    # The foundation: settings, money, database engine, Temporal client helpers, alerts, the PSP decision words.
    "payloop": ("payloop",),
    # Domain packages.
    "ledger": ("ledger", "payloop"),
    "psp": ("psp", "payloop"),
    "players": ("players", "payloop", "ledger"),
    "risk": ("risk", "payloop", "ledger"),
    # The monitor's detection reads payments (ledger), alerts (payloop) and PSP health and webhooks (psp).
    "incidents": ("incidents", "payloop", "ledger", "psp"),
    # Currency conversion: the rate source protocol, its providers, the conversion arithmetic (foundation only).
    "fx": ("fx", "payloop"),
    # Outbound events: the outbox is written in the ledger's transactions (its records are the events' data).
    "events": ("events", "payloop", "ledger"),
    # Deterministic workflow code: its own modules, and of the foundation only the pure vocabulary module.
    "workflows": ("workflows", "payloop.psp_decision"),
    "activities": ("activities", "ledger", "psp", "players", "risk", "incidents", "fx", "events", "payloop",
                   "workflows.types"),
    "api": ("api", "payloop", "ledger", "psp", "players", "risk", "incidents", "fx", "events", "workflows"),
    # The worker wires workflows to activities and builds what the activities are given (ledger, PSP
    # connectors, routing, player store); it serves no HTTP, so no api.
    "workers": ("workers", "workflows", "activities", "payloop", "ledger", "psp", "players", "risk", "incidents",
                "fx", "events"),
    # CLI, embedded stack, demo, migrations, benchmark: the top.
    "entrypoints": EVERYTHING,
}
# Allowed by the table above, forbidden all the same.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # The sandbox PSP is a service of its own (a stand-in for the providers), not a library of the API.
    "api": ("psp.sandbox",),
}
# Third-party packages kept out of some modules.
BENCH_EXTRA = ("matplotlib", "psutil", "tqdm", "pyinstrument")  # pyproject's bench extra: `payloop bench` only
IO_LIBRARIES = ("sqlalchemy", "httpx", "asyncpg", "aiosqlite", "fastapi", "starlette", "uvicorn", "alembic")


@dataclass(frozen=True)
class ThirdPartyRule:
    name: str
    banned: tuple[str, ...]
    why: str
    applies: Callable[[str], bool]  # to an importing module


THIRD_PARTY_RULES = [
    ThirdPartyRule(
        "bench-extra", BENCH_EXTRA,
        "the bench extra is for entrypoints/bench only: the service and `payloop --help` run without it "
        "(entrypoints/bench/cli.py is loaded by every `payloop` command)",
        lambda module: not module.startswith("entrypoints.bench.") or module == "entrypoints.bench.cli",
    ),
    ThirdPartyRule("workflows-no-io", IO_LIBRARIES, "workflows never import anything that does I/O",
                   lambda module: module.split(".")[0] == "workflows"),
]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. "api.routes.payments"
    target: str  # the imported project module (or third-party module name)
    path: Path
    line: int
    statement: str

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.statement}"


def _top_level_packages() -> list[str]:
    return sorted(
        d.name for d in ROOT.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name not in NOT_PRODUCT and any(d.rglob("*.py"))
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files() -> dict[str, Path]:
    files = {}
    for package in _top_level_packages():
        for path in sorted((ROOT / package).rglob("*.py")):
            files[_module_name(path)] = path
    return files


FILES = _files()
MODULES = set(FILES)
PROJECT = set(_top_level_packages())


def _resolve(name: str) -> str:
    """The project module an import of `name` loads: the longest known module it names (or `name` itself)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return name


def _imports(module: str, path: Path) -> list[Import]:
    source = path.read_text()
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        statement = " ".join((ast.get_source_segment(source, node) or "").split())
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, path, node.lineno, statement))
        else:
            if node.level:  # relative: from the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix == "__future__":
                continue
            for alias in node.names:
                # `from a import b`: b is a module when a file says so, else a name defined in a.
                submodule = f"{prefix}.{alias.name}"
                found.append(Import(module, submodule if submodule in MODULES else prefix, path, node.lineno,
                                    statement))
    return found


IMPORTS: list[Import] = [imp for module, path in FILES.items() for imp in _imports(module, path)]


def _project(imp: Import) -> bool:
    return imp.target.split(".")[0] in PROJECT


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _report(offences: list[Import], what: str) -> str:
    lines = "\n  ".join(sorted({imp.where() for imp in offences}))
    return f"{what}:\n  {lines}"


def test_every_top_level_package_has_its_arrows() -> None:
    """A new top-level package gets its line in ALLOWED (and in DESIGN.md's table) before it gets code."""
    assert set(_top_level_packages()) <= set(ALLOWED), set(_top_level_packages()) - set(ALLOWED)
    assert len(IMPORTS) > 300  # the parser found the imports: a broken walk must not pass as "no offences"


@pytest.mark.parametrize("package", sorted(set(ALLOWED) - {"entrypoints"}))
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    allowed, forbidden = ALLOWED[package], FORBIDDEN.get(package, ())
    offences = [
        imp for imp in IMPORTS
        if imp.source.split(".")[0] == package and _project(imp)
        and (not _under(_resolve(imp.target), allowed) or _under(_resolve(imp.target), forbidden))
    ]
    if offences:
        rule = f"{package}/ may import {', '.join(allowed)}" + (f" but not {', '.join(forbidden)}" if forbidden else "")
        pytest.fail(_report(offences, rule + "; these imports break that"), pytrace=False)


@pytest.mark.parametrize("rule", THIRD_PARTY_RULES, ids=lambda rule: rule.name)
def test_third_party_packages_stay_where_they_belong(rule: ThirdPartyRule) -> None:
    offences = [imp for imp in IMPORTS if rule.applies(imp.source) and _under(imp.target, rule.banned)]
    if offences:
        pytest.fail(_report(offences, f"{', '.join(rule.banned)} may not be imported here ({rule.why})"),
                    pytrace=False)


def _cycles(edges: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle(component: list[str], edges: dict[str, dict[str, list[Import]]]) -> list[str]:
    """One shortest cycle through the component's first node: [a, b, …, a]."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(edges.get(node, {})):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if succ in members and succ not in parent and succ != start:
                parent[succ] = node
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")


def _cycle_report(cycles: list[list[str]], edges: dict[str, dict[str, list[Import]]]) -> str:
    parts = []
    for component in cycles:
        cycle = _shortest_cycle(component, edges)
        lines = [f"{' -> '.join(cycle)}" + (f"   (all of {', '.join(component)} are in cycles)"
                                            if len(component) > len(cycle) - 1 else "")]
        for a, b in zip(cycle, cycle[1:]):
            imports = sorted({imp.where() for imp in edges[a][b]})
            more = f" (+{len(imports) - 3} more)" if len(imports) > 3 else ""
            lines.append(f"  {a} -> {b}:" + "".join(f"\n    {where}" for where in imports[:3]) + more)
        parts.append("\n".join(lines))
    return "import cycles:\n" + "\n".join(parts)


def test_no_import_cycles_between_top_level_packages() -> None:
    edges: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for imp in IMPORTS:
        source, target = imp.source.split(".")[0], imp.target.split(".")[0]
        if _project(imp) and source != target:
            edges[source][target].append(imp)
    if cycles := _cycles(edges):
        pytest.fail(_cycle_report(cycles, edges), pytrace=False)


def test_no_import_cycles_between_modules() -> None:
    """Not even inside a package, and not even through an import inside a function: a cycle is broken by moving
    what both sides need into a module both import, not hidden by importing late."""
    edges: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for imp in IMPORTS:
        target = _resolve(imp.target)
        if _project(imp) and target != imp.source and target in MODULES:
            edges[imp.source][target].append(imp)
    if cycles := _cycles(edges):
        pytest.fail(_cycle_report(cycles, edges), pytrace=False)
