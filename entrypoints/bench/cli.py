"""Arguments of `payloop bench` (traffic run), `payloop bench ledger`, `payloop bench probe`,
`payloop bench ops-list` and `payloop bench recon`, and the check that the bench extra is installed.

Kept free of the bench's own imports: `payloop --help` must not load matplotlib or the SDK's worker, and works
without the extra (`pip install 'payloop[bench]'`), which only `payloop bench` needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_OUT = Path(".payloop/bench")
# The import names of the bench extra (pyproject.toml, [project.optional-dependencies] bench) that the bench's
# modules import: the service never needs them.
BENCH_EXTRA = frozenset({"matplotlib", "psutil", "tqdm", "pyinstrument"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Drive deposits, game rounds and payouts through the public API of the embedded stack "
                          "(default) or a running one, then a bare skeleton workflow of the same shape on the same "
                          "Temporal server; write JSON and a latency plot.")
    _traffic_arguments(parser)
    sub = parser.add_subparsers(dest="bench_command")
    ledger = sub.add_parser("ledger", help="the Ledger on PostgreSQL vs pgbench tpcb-like, and a hot player")
    ledger.add_argument("--database-url", default=None,
                        help="PostgreSQL (postgresql+asyncpg://…); a scratch database is created there and dropped "
                             "(default: PAYLOOP_DATABASE_URL, else PAYLOOP_TEST_DATABASE_URL)")
    ledger.add_argument("--clients", type=int, default=8, help="concurrent clients, for both (default 8)")
    ledger.add_argument("--seconds", type=float, default=10.0, help="duration of each run (default 10)")
    ledger.add_argument("--pgbench-scale", type=int, default=1,
                        help="pgbench -i scale; 1 = one branch row, hot like our PSP clearing account")
    ledger.add_argument("--hot-debits", type=int, default=100, help="concurrent debits of one player (100)")
    ledger.add_argument("--profile", action="store_true", help="profile the ledger run with pyinstrument")
    ledger.add_argument("--out", type=Path, default=DEFAULT_OUT)
    probe = sub.add_parser("probe", help="latency of bare workflows per shape under dev-server and worker "
                                         "variants (where the per-activity wait comes from)")
    probe.add_argument("--shapes", default=",a,aa,aaa,aaaaa,lll,aaa|a",
                       help="comma-separated shapes: a = activity, l = local activity, | = update/signal")
    probe.add_argument("--runs", type=int, default=20, help="timed runs per shape (after 3 warm-ups)")
    probe.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ops_list = sub.add_parser("ops-list", help="the ops console's payments list over 100,000 stored payments, "
                                               "every filter's first and a deep page, on SQLite and PostgreSQL")
    ops_list.add_argument("--database-url", default=None,
                          help="PostgreSQL (postgresql+asyncpg://…) to bench beside SQLite; a scratch database is "
                               "created there and dropped (default: PAYLOOP_TEST_DATABASE_URL; none: SQLite only)")
    ops_list.add_argument("--payments", type=int, default=100_000, help="payments stored (default 100,000)")
    ops_list.add_argument("--runs", type=int, default=30, help="timed runs per page (after 3 warm-ups)")
    ops_list.add_argument("--deep", type=int, default=5_000, help="rows into a list where its deep page starts")
    ops_list.add_argument("--out", type=Path, default=DEFAULT_OUT)
    recon = sub.add_parser("recon", help="one PSP's day of settled captures reconciled on PostgreSQL: lines/s and "
                                         "the RSS it takes")
    recon.add_argument("--database-url", default=None,
                       help="PostgreSQL (postgresql+asyncpg://…); a scratch database is created there and dropped "
                            "(default: PAYLOOP_DATABASE_URL, else PAYLOOP_TEST_DATABASE_URL)")
    recon.add_argument("--lines", type=int, default=100_000, help="report lines, one per captured deposit (100,000)")
    recon.add_argument("--out", type=Path, default=DEFAULT_OUT)


def _traffic_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deposits", type=int, default=200, help="deposits in the max phase (default 200)")
    parser.add_argument("--payouts", type=int, default=50, help="payouts (default 50)")
    parser.add_argument("--rounds", type=int, default=500, help="game rounds, bet + win (default 500)")
    parser.add_argument("--concurrency", type=int, default=50, help="items in flight (default 50)")
    parser.add_argument("--rate", type=float, default=None,
                        help="open loop for the max phase: deposits started per second (default: closed loop)")
    parser.add_argument("--low-load", type=int, default=20, help="deposits one at a time first (default 20)")
    parser.add_argument("--no-half-load", dest="half_load", action="store_false",
                        help="skip the phase at half the max throughput")
    parser.add_argument("--methods", default="card,ewallet,bank_transfer,crypto",
                        help="deposit methods, used in turn (default: all four sandbox families)")
    parser.add_argument("--no-skeleton", dest="skeleton", action="store_false", help="skip the skeleton")
    parser.add_argument("--skeleton-shape", default=None,
                        help="e.g. 'aaa|a' or 'lla|a' (default: the shape of a warm-up card deposit's history)")
    parser.add_argument("--skeleton-signal-delay", type=float, default=0.05,
                        help="seconds between the skeleton's update answer and its signal (the sandbox's settle "
                             "delay, 0.05)")
    parser.add_argument("--api-url", default=None, help="bench a running stack at this API URL instead")
    parser.add_argument("--api-key", default=os.environ.get("PAYLOOP_BENCH_API_KEY", "dev-key-change-me"),
                        help="its API key (scopes payments, wallet, ops; env PAYLOOP_BENCH_API_KEY)")
    parser.add_argument("--temporal-address", default="127.0.0.1:7233", help="its Temporal frontend")
    parser.add_argument("--namespace", default="default", help="its Temporal namespace")
    parser.add_argument("--database-url", default=None,
                        help="embedded stack: run the ledger on PostgreSQL (a scratch database is created there "
                             "and dropped); also where --ledger runs")
    parser.add_argument("--hold", type=int, default=0,
                        help="also hold this many card deposits in flight at once (stopped at a 3DS challenge) "
                             "while RSS is sampled, e.g. 1000")
    parser.add_argument("--ledger", action="store_true", help="also run the ledger micro-benchmark")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a payment may take (default 120)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where JSON and PNG go (.payloop/bench)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        # The one import inside a function here: the bench's modules import the bench extra at their top, so a
        # missing extra shows on this line, when the command runs, and not when `payloop` parses its arguments.
        from entrypoints.bench import commands
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if missing not in BENCH_EXTRA:
            raise
        print(f"payloop bench needs the bench extra ({missing} is not installed): pip install 'payloop[bench]' "
              "(in a checkout: pip install -e '.[bench]', or make install)", file=sys.stderr)
        return 2
    return commands.run(args)
