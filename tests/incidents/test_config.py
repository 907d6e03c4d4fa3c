"""incidents/config.py: the shipped file, defaults for keys left out, errors with the file's line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from incidents.config import IncidentsConfigError, Thresholds, load_thresholds, parse_thresholds
from payloop.settings import Settings


def test_the_shipped_file_states_every_default() -> None:
    assert load_thresholds(Settings()) == Thresholds()
    assert parse_thresholds("window_seconds: 60\n") == Thresholds(window_seconds=60)


def test_the_setting_names_another_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("transaction_timeout:\n  sla_seconds: 120\n")
    assert load_thresholds(Settings(incidents_file=path)).transaction_timeout.sla_seconds == 120


@pytest.mark.parametrize(("text", "where"), [
    ("window_seconds: 300\nfailed_deposits:\n  failure_rate: 0.5.1\n", ":3: failed_deposits.failure_rate:"),
    ("window_seconds: 300\n\ncallback_errors:\n  min_count: 0\n", ":4: callback_errors.min_count:"),
    ("window_seconds: 300\ngateway_downtime:\n  error_rat: \"0.5\"\n", ":3: gateway_downtime.error_rat:"),
    ("window_seconds: 300\nwindow_seconds: 60\n", ":2: window_seconds: duplicate key"),
    ("window_seconds: [\n", ":2: (file): not valid YAML"),
    ("- 1\n", ":1: (file): the file must be a mapping"),
])
def test_errors_name_the_line_and_the_field(text: str, where: str) -> None:
    with pytest.raises(IncidentsConfigError) as err:
        parse_thresholds(text, "t.yaml")
    assert "t.yaml" + where in str(err.value)


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(IncidentsConfigError, match="cannot read the file"):
        load_thresholds(Settings(incidents_file=tmp_path / "missing.yaml"))
