"""docker-compose.yml cannot run here (no Docker engine), so its wiring is checked as data."""

from __future__ import annotations

from pathlib import Path

import yaml

from payloop.settings import Settings
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ("api", "worker", "sandbox-psp", "migrate")


def test_every_product_part_is_a_service() -> None:
    assert {"postgresql", "temporal", "temporal-ui", "temporal-setup", *APP_SERVICES} <= SERVICES.keys()


def test_every_service_has_an_image_or_a_build_and_known_dependencies() -> None:
    for name, service in SERVICES.items():
        assert ("image" in service) != ("build" in service), f"{name}: exactly one of image/build"
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"


def test_app_services_build_the_dockerfile_and_run_a_payloop_command() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("payloop", "workflows", "activities", "api", "workers", "ledger", "psp", "players", "entrypoints"):
        assert f"COPY {package} ./{package}" in dockerfile
    for name in APP_SERVICES:
        command = SERVICES[name]["command"]
        assert command[0] == "payloop" and command[1] in {"api", "worker", "sandbox-psp", "migrate"}


def test_app_environment_points_at_the_compose_services() -> None:
    known = set(Settings.model_fields)
    for name in APP_SERVICES:
        env = SERVICES[name]["environment"]
        for key in env:
            assert key.startswith("PAYLOOP_") and key.removeprefix("PAYLOOP_").lower() in known, f"{name}: {key}"
        assert "@postgresql:5432/" in env["PAYLOOP_DATABASE_URL"]
        assert env["PAYLOOP_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["PAYLOOP_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert SERVICES["api"]["environment"]["PAYLOOP_SANDBOX_WEBHOOK_URL"].startswith("http://api:8000/")
    assert SERVICES["worker"]["environment"]["PAYLOOP_SANDBOX_PSP_BASE_URL"] == "http://sandbox-psp:8100"


def test_ports_and_startup_order() -> None:
    assert "8000:8000" in SERVICES["api"]["ports"]
    assert "8080:8080" in SERVICES["temporal-ui"]["ports"]
    assert "7233:7233" in SERVICES["temporal"]["ports"]
    assert SERVICES["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"
    for name in ("api", "worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["temporal-setup"]["condition"] == "service_completed_successfully"


def test_search_attributes_are_registered() -> None:
    setup = " ".join(SERVICES["temporal-setup"]["command"])
    for key in SEARCH_ATTRIBUTES:
        assert f"--name {key.name} --type {'Int' if key.name.endswith('Minor') else 'Keyword'}" in setup
