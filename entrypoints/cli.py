"""`payloop` command line: run the embedded stack, its parts one by one, migrations, the ledger check, the demo."""

# Each command imports its own part when it runs, so `payloop api` is a process that never loads the worker or the
# sandbox, and `payloop --help` loads none of them. No cycle hides that way: this module is the top of the graph.

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from entrypoints.bench import cli as bench_cli
from payloop.logs import setup_logging
from payloop.settings import get_settings


# The long-running processes: their lines go through payloop.logs (PAYLOOP_LOG_FORMAT).
_SERVICES = ("api", "worker", "sandbox-psp", "codec-server")
# uvicorn leaves logging to payloop.logs (log_config=None) and writes no access line of its own: that one has the
# query string and the client's address; payloop.logs.AccessLogMiddleware writes one without them.
_UVICORN_LOGS = {"log_config": None, "access_log": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payloop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", aliases=["dev"], help="start the whole product locally; Ctrl-C stops it")
    commands.add_parser("api", help="serve the public HTTP API")
    commands.add_parser("worker", help="run a payments worker")
    commands.add_parser("sandbox-psp", help="serve the sandbox PSPs")
    commands.add_parser("codec-server", help="serve the codec endpoint the Temporal UI and CLI decrypt payloads with")
    commands.add_parser("event-receiver", help="the embedded stack's demo receiver of outbound events (dev mode)")
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("schedules", help="create or update the Temporal Schedules (the daily reconciliation per PSP)")
    demo = commands.add_parser("demo", help="start the stack, make a card and an e-wallet deposit, print a checkout "
                                            "URL, stop (or keep running for the checkout)")
    demo.add_argument("--keep-running", action=argparse.BooleanOptionalAction, default=None,
                      help="keep the stack up after the demo (Ctrl-C stops it), to pay at the printed checkout URL "
                           "(default: when run from a terminal)")
    bench_cli.add_arguments(commands.add_parser("bench", help="load, latency and memory figures; ledger vs pgbench"))
    ledger = commands.add_parser("ledger", help="ledger tools")
    ledger.add_subparsers(dest="ledger_command", required=True).add_parser(
        "check", help="verify the ledger invariants; exit 1 when one is broken"
    )
    args = parser.parse_args(argv)
    settings = get_settings()

    if args.command in ("run", "dev"):
        return _run(settings)
    if args.command in _SERVICES:
        setup_logging(settings.log_format)
    if args.command in ("api", "worker", "codec-server") and (refused := _refusal(settings, args.command)) is not None:
        return refused
    if args.command == "api":
        import uvicorn

        from api.app import create_app
        from entrypoints.server import api_server_options

        uvicorn.run(create_app(settings), **api_server_options(settings), **_UVICORN_LOGS, log_level="info")
        return 0
    if args.command == "worker":
        from workers.payments import run

        _run_until_signal(run(settings))
        return 0
    if args.command == "sandbox-psp":
        import uvicorn

        from psp.sandbox.app import config_from_settings, create_app

        # Idle connections kept 75 s, as a PSP's load balancer does: longer than the connectors' httpx pools keep
        # theirs (5 s), so a PSP call never goes out on a connection the sandbox has just closed.
        uvicorn.run(create_app(config_from_settings(settings)), host=settings.sandbox_psp_host,
                    port=settings.sandbox_psp_port, timeout_keep_alive=75, **_UVICORN_LOGS, log_level="warning")
        return 0
    if args.command == "codec-server":
        import uvicorn

        from api.codec_server import create_codec_app

        uvicorn.run(create_codec_app(settings), host=settings.codec_server_host, port=settings.codec_server_port,
                    **_UVICORN_LOGS, log_level="info")
        return 0
    if args.command == "event-receiver":
        from entrypoints.event_receiver import serve
        from entrypoints.startup import DEV_MODE_SETTING, EXIT_CONFIG

        if not settings.dev_mode:  # plain http on loopback, the first API key's client: a demo, not a service
            print(f"payloop event-receiver: a demo for dev stacks; refusing to start without {DEV_MODE_SETTING}",
                  file=sys.stderr)
            return EXIT_CONFIG
        serve(settings)
        return 0
    if args.command == "migrate":
        from entrypoints.migrate import upgrade

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(upgrade(settings.effective_database_url))
        print("database migrated")
        return 0
    if args.command == "schedules":
        code = asyncio.run(_schedules(settings))
        # A short-lived Temporal client process can abort in interpreter teardown when the SDK's Rust threads
        # outlive it ("PyGILState_Release … finalizing", temporalio/sdk-python#300): its work is done, so skip it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if args.command == "demo":
        from entrypoints.demo import run_demo

        signal.signal(signal.SIGTERM, _interrupt)
        keep_running = sys.stdin.isatty() if args.keep_running is None else args.keep_running
        return run_demo(settings, keep_running=keep_running)
    if args.command == "ledger":
        return asyncio.run(_ledger_check(settings))
    if args.command == "bench":
        return bench_cli.run(args)
    return 2


def _refusal(settings, role: str) -> int | None:  # noqa: ANN001
    """Outside dev mode, built-in or missing settings stop `payloop api` / `worker` before they serve anything."""
    from entrypoints.startup import EXIT_CONFIG, refusal

    message = refusal(settings, role)  # type: ignore[arg-type]
    if message is None:
        return None
    print(message, file=sys.stderr)
    return EXIT_CONFIG


def _run(settings) -> int:  # noqa: ANN001
    from entrypoints.stack import EmbeddedStack

    stack = EmbeddedStack(settings)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        print(f"""payloop is running
  API          {settings.api_url}   (docs: {settings.api_url}/docs)
  Temporal UI  {settings.temporal_ui_url}
  Sandbox PSP  {settings.sandbox_psp_url}
  Checkout     POST /v1/checkout/sessions gives a player's checkout URL (README: Checkout)
  Codec server {settings.codec_server_url}   (sign in at /login to read payloads in the UI; README: Payload encryption)
  Codec token  {settings.codec_server_token.split(',')[0]}
  Dev API key  {settings.api_keys.split(';')[0].split(':')[0]}
  Events       a demo receiver logs every outbound event it verifies: {settings.data_dir / 'logs' / 'event-receiver.log'}
  Logs         {settings.data_dir / 'logs'}
Ctrl-C stops everything.""", flush=True)
        while True:
            stack.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    except RuntimeError as err:
        print(f"payloop: {err}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def _interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


def _run_until_signal(coro) -> None:  # noqa: ANN001
    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())


async def _schedules(settings) -> int:  # noqa: ANN001
    from entrypoints.schedules import AML_SCHEDULE_ID, MONITOR_SCHEDULE_ID, ensure_schedules
    from payloop.temporal import connect

    for schedule_id in await ensure_schedules(await connect(settings), settings):
        if schedule_id == MONITOR_SCHEDULE_ID:
            print(f"schedule {schedule_id}: every {settings.monitor_interval_seconds} s")
            continue
        at_utc = settings.aml_daily_at_utc if schedule_id == AML_SCHEDULE_ID else settings.recon_daily_at_utc
        print(f"schedule {schedule_id}: {at_utc} UTC daily")
    if not settings.monitor_interval_seconds:
        print(f"schedule {MONITOR_SCHEDULE_ID}: off (PAYLOOP_MONITOR_INTERVAL_SECONDS=0)")
    return 0


async def _ledger_check(settings) -> int:  # noqa: ANN001
    from ledger import check_invariants
    from payloop.db import create_engine

    engine = create_engine(settings.effective_database_url)
    try:
        report = await check_invariants(engine)
    finally:
        await engine.dispose()
    print(f"{report.accounts} accounts, {report.transfers} transfers")
    for violation in report.violations:
        print(f"VIOLATION: {violation}")
    print("ledger invariants hold" if report.ok else "ledger invariants BROKEN")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
