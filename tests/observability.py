"""The PromQL of the Prometheus rules and the Grafana dashboard in deploy/ (README, Prometheus and Grafana), parsed
with a real PromQL parser: what tests/test_observability_files.py checks as files and tests/e2e/test_metrics.py
against what the API and the worker really export."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "payloop.json"
# Grafana replaces its variables before Prometheus sees a query: the parser gets a duration in their place.
GRAFANA_DURATIONS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Exported by the monitor (issue 15 part 2: the API's gauge, the worker's counters).
INCIDENT_METRICS = ("payloop_incidents_open", "payloop_incidents_opened_total", "payloop_incidents_resolved_total")


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]  # the label names its matchers name, and those an aggregation around it groups by
    where: str  # the rule or panel it is in


def _nodes(expr: Any, kind: type) -> list[Any]:
    found: list[Any] = []
    promql_parser.walk(expr, lambda node: found.append(node) if isinstance(node, kind) else None)
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def query_panels() -> list[dict[str, Any]]:
    """Every panel that shows data (rows are headings)."""
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def grafana_query(expr: str) -> str:
    """A dashboard target's query as Prometheus receives it."""
    return re.sub(r"\$__\w+", lambda found: GRAFANA_DURATIONS[found.group(0)], expr)


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard target."""
    found = [(f"rule {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    for panel in query_panels():
        found += [(f"panel {panel['title']!r} {target['refId']}", grafana_query(target["expr"]))
                  for target in panel["targets"]]
    return found


def selectors(where: str, expr: str) -> list[Selector]:
    """The metric selectors of one expression; raises ValueError when it is no valid PromQL."""
    parsed = promql_parser.parse(expr)
    grouped_by: dict[str, set[str]] = {}
    for aggregation in _nodes(parsed, promql_parser.AggregateExpr):
        modifier = aggregation.modifier
        if modifier is not None and modifier.type == promql_parser.AggModifierType.By:
            for inner in _nodes(aggregation.expr, promql_parser.VectorSelector):
                grouped_by.setdefault(inner.name, set()).update(modifier.labels)
    return [Selector(node.name, frozenset({m.name for m in node.matchers.matchers} | grouped_by.get(node.name, set())),
                     where) for node in _nodes(parsed, promql_parser.VectorSelector)]


def referenced_selectors() -> list[Selector]:
    return [selector for where, expr in expressions() for selector in selectors(where, expr)]
