"""The monitor's thresholds file (`incidents/thresholds.yaml`, or the file PAYLOOP_INCIDENTS_FILE names): the window
and the thresholds and SLAs of each incident class. Read with the routing file's exact YAML loader
(payloop/yaml_files.py): every error names the file, the line and the field; every key has a default."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from payloop.yaml_files import ConfigFileError, parse_mapping, read_file

SHIPPED_FILE = "thresholds.yaml"  # inside the `incidents` package

# A rate as a decimal string, "0" to "1" (the loader keeps decimals as strings: no floats).
Rate = Annotated[str, StringConstraints(pattern=r"^(0(\.[0-9]{1,4})?|1(\.0{1,4})?)$")]
Seconds = Annotated[StrictInt, Field(ge=1, le=30 * 86400)]


class IncidentsConfigError(ConfigFileError):
    what = "incidents thresholds file"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FailedDeposits(_Model):
    min_samples: StrictInt = Field(default=10, ge=1)
    failure_rate: Rate = "0.5"


class DelayedWithdrawals(_Model):
    sla_seconds: Seconds = 3600


class CallbackErrors(_Model):
    min_count: StrictInt = Field(default=5, ge=1)
    min_rate: Rate = "0.2"


class CurrencyMismatch(_Model):
    hold_seconds: Seconds = 3600


class TransactionTimeout(_Model):
    sla_seconds: Seconds = 900


class GatewayDowntime(_Model):
    error_rate: Rate = "0.5"
    min_samples: StrictInt = Field(default=5, ge=1)


class Thresholds(_Model):
    window_seconds: Seconds = 300
    affected_ids_max: StrictInt = Field(default=200, ge=1, le=10_000)
    affected_ids_kept_max: StrictInt = Field(default=1000, ge=1, le=10_000)
    timeline_update_seconds: Seconds = 900
    failed_deposits: FailedDeposits = FailedDeposits()
    delayed_withdrawals: DelayedWithdrawals = DelayedWithdrawals()
    callback_errors: CallbackErrors = CallbackErrors()
    currency_mismatch: CurrencyMismatch = CurrencyMismatch()
    transaction_timeout: TransactionTimeout = TransactionTimeout()
    gateway_downtime: GatewayDowntime = GatewayDowntime()


def rate(text: str) -> Decimal:
    return Decimal(text)


def default_path() -> Path:
    return Path(str(resources.files("incidents").joinpath(SHIPPED_FILE)))


def parse_thresholds(text: str, source: str = "<string>") -> Thresholds:
    document = parse_mapping(text, source, IncidentsConfigError, "`window_seconds:` and one section per class")
    try:
        return Thresholds.model_validate(document.data)
    except ValidationError as err:
        raise IncidentsConfigError(source, document.validation_issues(err)) from None


def load_thresholds_file(path: str | Path) -> Thresholds:
    path = Path(path)
    return parse_thresholds(read_file(path, IncidentsConfigError), source=str(path))


def load_thresholds(settings: Any) -> Thresholds:
    """The file named by settings.incidents_file (PAYLOOP_INCIDENTS_FILE), else the shipped thresholds.yaml."""
    return load_thresholds_file(getattr(settings, "incidents_file", None) or default_path())
