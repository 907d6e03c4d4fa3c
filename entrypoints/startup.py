"""Dev mode versus production at start-up.

`payloop api` and `payloop worker` started on their own (as docker-compose and any deployment start them) refuse
to run on a built-in or missing setting they depend on: the built-in API key is in the README, the built-in
webhook secret too, and the default ledger is a SQLite file inside whatever container happens to run the process.
`refusal()` names every such setting at once, so one restart fixes them all.

Dev mode (`PAYLOOP_DEV_MODE`) allows them. Only the embedded stack (`payloop run`, `payloop demo`, `payloop
bench`) sets it, for its own child processes, together with a fresh secret for every PSP (`dev_environment()`),
so even a dev stack never verifies one PSP's webhooks with another's secret.
"""

from __future__ import annotations

import base64
import secrets
from collections import defaultdict
from collections.abc import Mapping
from typing import Literal

from api.auth import parse_api_keys
from api.checkout.sessions import signing_keys
from api.codec_server import parse_tokens
from payloop.codec import CodecKeyError, KeyRing, uses_builtin_keys
from payloop.settings import DEV_CHECKOUT_SIGNING_KEY, DEV_CODEC_SERVER_TOKEN, Settings, parse_retry_schedule
from payloop.temporal import TemporalSettingsError, connection_options
from psp.registry import webhook_secret_names
from psp.routing import RoutingConfig, load_routing
from psp.signatures import SHARED_SECRET_SETTING, parse_secrets, secret_setting, setting_value

Role = Literal["api", "worker", "codec-server"]
DEV_MODE_SETTING = "PAYLOOP_DEV_MODE"
# sysexits.h EX_CONFIG: the process refused its configuration (not a crash; restarting will not help).
EXIT_CONFIG = 78
EVENT_RETRY_MIN_SECONDS = 24 * 3600
BUILT_IN_API_KEYS = frozenset(parse_api_keys(str(Settings.model_fields["api_keys"].default)))
BUILT_IN_WEBHOOK_SECRETS = frozenset(parse_secrets(str(Settings.model_fields["sandbox_webhook_secret"].default)))


def refusal(settings: Settings, role: Role) -> str | None:
    """Why `payloop <role>` must not start with these settings, naming every setting to fix; None when it may
    start. Temporal settings that cannot work are refused in dev mode too; built-in values only outside it."""
    problems = temporal_problems(settings)
    production = [] if settings.dev_mode else startup_problems(settings, role)
    if not problems and not production:
        return None
    lines = [f"payloop {role}: refusing to start. Set:"]
    lines += [f"  {name}: {why}" for name, why in problems + production]
    if production:
        lines.append(f"Built-in values are allowed only in dev mode: `payloop run` and `payloop demo` set "
                     f"{DEV_MODE_SETTING} for the processes they start.")
    return "\n".join(lines)


def temporal_problems(settings: Settings) -> list[tuple[str, str]]:
    """The Temporal TLS / API key settings that cannot work (the client would fail in its TLS handshake)."""
    try:
        connection_options(settings)
    except TemporalSettingsError as err:
        return [(err.setting, err.problem)]
    return []


def startup_problems(settings: Settings, role: Role) -> list[tuple[str, str]]:
    """(setting, why) for every built-in or missing setting `role` depends on. The worker holds no API keys and
    verifies no webhooks, so it is not made to carry those secrets."""
    problems: list[tuple[str, str]] = _codec_problems(settings, role)
    if role == "codec-server":
        return problems
    if not settings.database_url:
        problems.append(("PAYLOOP_DATABASE_URL", "unset, the ledger would be a SQLite file in "
                         f"{settings.data_dir.resolve()} on this machine only"))
    if role == "worker":
        problems += _event_delivery_problems(settings)
    if role == "api":
        problems += _api_key_problems(settings)
        problems += _webhook_secret_problems(settings, load_routing(settings))
        problems += _checkout_problems(settings)
    return problems


def _event_delivery_problems(settings: Settings) -> list[tuple[str, str]]:
    """Outbound events are retried for at least a day (a platform down over a night still gets them); a shorter
    schedule is for tests and dev stacks."""
    retried_seconds = sum(parse_retry_schedule(settings.events_retry_schedule_seconds))
    if retried_seconds < EVENT_RETRY_MIN_SECONDS:
        return [("PAYLOOP_EVENTS_RETRY_SCHEDULE_SECONDS", f"retries for {retried_seconds / 3600:.1f} h in all; at "
                 f"least {EVENT_RETRY_MIN_SECONDS // 3600} h are needed")]
    return []


def _checkout_problems(settings: Settings) -> list[tuple[str, str]]:
    """The checkout URLs' signing keys — with the built-in one (in this repository) anyone could sign a checkout
    session for any player of any client — and the sandbox's scenarios, which are for dev stacks and tests."""
    keys = signing_keys(settings.checkout_signing_keys)
    problems: list[tuple[str, str]] = []
    if settings.checkout_sandbox_scenarios:
        problems.append(("PAYLOOP_CHECKOUT_SANDBOX_SCENARIOS", "on: players would choose how the sandbox PSPs behave"))
    if not keys:
        problems.append(("PAYLOOP_CHECKOUT_SIGNING_KEYS", "no key is set (32 or more random characters; "
                         "\"new,old\" while rotating)"))
    elif DEV_CHECKOUT_SIGNING_KEY in keys:
        problems.append(("PAYLOOP_CHECKOUT_SIGNING_KEYS", "holds the built-in key: anyone could sign checkout URLs"))
    elif any(len(key) < 32 for key in keys):
        problems.append(("PAYLOOP_CHECKOUT_SIGNING_KEYS", "a key shorter than 32 characters is guessable"))
    return problems


def _codec_problems(settings: Settings, role: Role) -> list[tuple[str, str]]:
    """Every process that encrypts or decrypts payloads needs a key ring of its own: the built-in one is in this
    repository, so histories sealed with it are readable by anyone."""
    problems: list[tuple[str, str]] = []
    if uses_builtin_keys(settings.codec_keys):
        problems.append(("PAYLOOP_CODEC_KEYS", "unset or holding the built-in dev key: histories would be readable "
                         "by anyone (id:base64-32-byte-key,…; the first encrypts)"))
    else:
        try:
            KeyRing.parse(settings.codec_keys)
        except CodecKeyError as err:
            problems.append(("PAYLOOP_CODEC_KEYS", str(err)))
    if role == "codec-server":
        try:
            if DEV_CODEC_SERVER_TOKEN in parse_tokens(settings.codec_server_token):
                problems.append(("PAYLOOP_CODEC_SERVER_TOKEN", "the built-in token: anyone could decrypt payloads"))
        except ValueError as err:
            problems.append(("PAYLOOP_CODEC_SERVER_TOKEN", str(err)))
    return problems


def _api_key_problems(settings: Settings) -> list[tuple[str, str]]:
    try:
        keys = parse_api_keys(settings.api_keys)
    except ValueError as err:
        return [("PAYLOOP_API_KEYS", str(err))]
    if not keys:
        return [("PAYLOOP_API_KEYS", "no API key is set (key:client_id:scope,scope;…)")]
    if built_in := sorted(BUILT_IN_API_KEYS & keys.keys()):
        return [("PAYLOOP_API_KEYS", f"holds the built-in key {', '.join(built_in)}, published in the README")]
    return []


def _webhook_secret_problems(settings: Settings, routing: RoutingConfig) -> list[tuple[str, str]]:
    """Every PSP of the routing file (and every provider it does not list, whose webhooks are verified all the
    same) needs a secret of its own: not built in, not missing, not shared with another PSP — a shared secret
    lets one PSP's genuine delivery pass for the other's."""
    problems: list[tuple[str, str]] = []
    names = webhook_secret_names(routing) | {psp.name: psp.webhook_secret for psp in routing.psps}
    holders: dict[str, list[str]] = defaultdict(list)  # secret -> the PSPs verifying with it
    for psp, name in names.items():
        own = setting_value(settings, name)
        from_fallback = name == SHARED_SECRET_SETTING or not own.strip(" ,")
        try:
            psp_secrets = parse_secrets(secret_setting(settings, psp, name))
        except ValueError:
            problems.append((name, f"{psp}'s webhook secret is not set"))
            continue
        if BUILT_IN_WEBHOOK_SECRETS & set(psp_secrets):
            where = f"the built-in {SHARED_SECRET_SETTING} (its fallback)" if from_fallback else "a built-in secret"
            problems.append((name, f"{psp} would verify its webhooks with {where}"))
            continue
        for secret in psp_secrets:
            holders[secret].append(psp)
    shared_by: dict[str, set[str]] = defaultdict(set)
    for psps in holders.values():
        if len(psps) > 1:
            for psp in psps:
                shared_by[psp].update(p for p in psps if p != psp)
    for psp, others in shared_by.items():
        problems.append((names[psp], f"{psp} shares its webhook secret with {', '.join(sorted(others))}; "
                                     "give each PSP its own"))
    return problems


def dev_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the embedded stack's processes: dev mode on, and for every PSP without a secret of its
    own, a fresh random one (the sandbox signs and the API verifies with it), distinct per PSP and per run; the
    same for the checkout's signing key."""
    env = dict(environ)
    env[DEV_MODE_SETTING] = "true"
    # The checkout of a dev stack: URLs signed with a key of this run, and the sandbox's scenarios on its forms.
    env.setdefault("PAYLOOP_CHECKOUT_SIGNING_KEYS", secrets.token_urlsafe(32))
    env.setdefault("PAYLOOP_CHECKOUT_SANDBOX_SCENARIOS", "true")
    for name in webhook_secret_names(load_routing(settings)).values():
        if name != SHARED_SECRET_SETTING and not setting_value(settings, name).strip(" ,"):
            # Standard Webhooks form (whsec_ + base64), which every sandbox scheme accepts.
            env[name] = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return env
