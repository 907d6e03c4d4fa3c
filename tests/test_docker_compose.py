"""docker-compose.yml cannot run here (no Docker engine), so its wiring is checked as data."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from api.codec_server import origin_of
from payloop.settings import Settings
from psp.routing import load_routing
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ("api", "worker", "sandbox-psp", "migrate", "codec-server", "schedules")


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
        assert command[0] == "payloop" and command[1] in {"api", "worker", "sandbox-psp", "migrate", "codec-server", "schedules"}


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


def _host_ip(port: str | int | dict) -> str:
    """The host address a `ports:` entry publishes on ("0.0.0.0" when it names none: every interface)."""
    if isinstance(port, dict):  # long syntax
        return str(port.get("host_ip", "0.0.0.0"))
    parts = str(port).rsplit(":", 2)
    return parts[0] if len(parts) == 3 else "0.0.0.0"


def test_ports_and_startup_order() -> None:
    assert "8000:8000" in SERVICES["api"]["ports"]
    assert "127.0.0.1:8080:8080" in SERVICES["temporal-ui"]["ports"]
    assert SERVICES["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"
    for name in ("api", "worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["temporal-setup"]["condition"] == "service_completed_successfully"


def test_the_daily_reconciliation_schedules_are_created_once_temporal_is_set_up() -> None:
    schedules = SERVICES["schedules"]
    assert schedules["command"] == ["payloop", "schedules"]
    assert schedules["depends_on"]["temporal-setup"]["condition"] == "service_completed_successfully"
    assert schedules["restart"] == "on-failure"  # a one-shot that retries until the Temporal frontend answers


def test_search_attributes_are_registered() -> None:
    setup = " ".join(SERVICES["temporal-setup"]["command"])
    for key in SEARCH_ATTRIBUTES:
        assert f"--name {key.name} --type {'Int' if key.name.endswith('Minor') else 'Keyword'}" in setup


def test_temporal_and_the_databases_are_no_public_doors() -> None:
    """Temporal's frontend and UI take no credentials (whoever reaches them can start, signal and terminate
    payments), PostgreSQL holds the ledger: the frontend stays on the compose network, the UI and PostgreSQL are
    published on 127.0.0.1 at most, never on every interface."""
    assert "ports" not in SERVICES["temporal"]
    for name in ("temporal", "temporal-ui", "postgresql"):
        for port in SERVICES[name].get("ports", []):
            assert _host_ip(port) == "127.0.0.1", f"{name} publishes {port} on every interface"


SECRET_NAME = re.compile(r"SECRET|KEY|PASSWORD|PWD")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?+])?([^}]*)\}")


def _environment_values() -> list[tuple[str, str, str]]:
    found = []
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        items = env.items() if isinstance(env, dict) else (entry.partition("=")[::2] for entry in env)
        found += [(name, key, str(value)) for key, value in items]
    return found


def test_secrets_have_no_fallback_so_compose_refuses_to_start_without_them() -> None:
    secrets = 0
    for service, key, value in _environment_values():
        for variable, operator, _rest in INTERPOLATION.findall(value):
            if SECRET_NAME.search(variable):
                secrets += 1
                assert operator == ":?", f"{service}: {key} falls back to a built-in {variable}"
        if SECRET_NAME.search(key) and "${" not in value:
            raise AssertionError(f"{service}: {key} is written into the file")
    assert secrets


def test_every_psp_has_its_own_webhook_secret_and_nothing_runs_in_dev_mode() -> None:
    psps = [psp.name for psp in load_routing(Settings()).psps]
    for name in ("api", "worker", "sandbox-psp"):
        env = SERVICES[name]["environment"]
        assert "PAYLOOP_DEV_MODE" not in env and "PAYLOOP_SANDBOX_WEBHOOK_SECRET" not in env
        for psp in psps:
            assert f"PAYLOOP_WEBHOOK_SECRET_{psp.upper()}" in env, (name, psp)


def test_payloads_are_encrypted_with_a_ring_compose_will_not_start_without() -> None:
    talking_to_temporal = ("api", "worker", "codec-server", "schedules")
    rings = {SERVICES[name]["environment"]["PAYLOOP_CODEC_KEYS"] for name in talking_to_temporal}
    assert len(rings) == 1, "the API, the workers and the codec server share one key ring"
    assert rings.pop().startswith("${PAYLOOP_CODEC_KEYS:?"), "no built-in default: unset is an error"
    for name in ("migrate", "sandbox-psp"):  # they never see a payload
        assert "PAYLOOP_CODEC_KEYS" not in SERVICES[name]["environment"], name


def test_only_the_api_signs_checkout_urls_with_a_key_compose_will_not_start_without() -> None:
    api = SERVICES["api"]["environment"]
    assert api["PAYLOOP_CHECKOUT_SIGNING_KEYS"].startswith("${PAYLOOP_CHECKOUT_SIGNING_KEYS:?")
    assert api["PAYLOOP_CHECKOUT_PUBLIC_URL"] == "http://localhost:8000"  # the URL published for port 8000
    for name, service in SERVICES.items():
        if name != "api":
            assert "PAYLOOP_CHECKOUT_SIGNING_KEYS" not in service.get("environment", {}), name


def test_the_ui_decodes_payloads_through_the_codec_server() -> None:
    codec, ui = SERVICES["codec-server"], SERVICES["temporal-ui"]
    env = codec["environment"]
    assert codec["command"] == ["payloop", "codec-server"]
    assert env["PAYLOOP_CODEC_SERVER_HOST"] == "0.0.0.0"
    assert f"127.0.0.1:{env['PAYLOOP_CODEC_SERVER_PORT']}:{env['PAYLOOP_CODEC_SERVER_PORT']}" in codec["ports"]
    assert env["PAYLOOP_CODEC_SERVER_TOKEN"].startswith("${PAYLOOP_CODEC_SERVER_TOKEN:?")
    # The browser calls the endpoint the UI is given: the codec server's published address.
    endpoint = ui["environment"]["TEMPORAL_CODEC_ENDPOINT"]
    assert endpoint == env["PAYLOOP_CODEC_SERVER_PUBLIC_URL"] == f"http://localhost:{env['PAYLOOP_CODEC_SERVER_PORT']}"
    # It signs in with a cookie, which the UI sends only with credentials included, and only to the same site.
    assert ui["environment"]["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"
    ui_url = env["PAYLOOP_TEMPORAL_UI_URL"]
    assert origin_of(ui_url) == f"http://localhost:{ui['ports'][0].split(':')[-2]}"  # CORS grants the UI's origin
    assert urlsplit(ui_url).hostname == urlsplit(endpoint).hostname
