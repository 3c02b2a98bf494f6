"""``counters serve``: Ray, the host actors and the HTTP gateway in one command.

With no ``--address`` it starts a local Ray (dashboard on 127.0.0.1:8265) and stops it again on
Ctrl-C or SIGTERM; with one, it joins that cluster and leaves it running.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import ConfigError
from .placement import Placement
from .settings import Settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="counters", description="Durable, named counters as actors on Ray."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the HTTP gateway (and a local Ray unless --address is given)",
        description="Every flag can also be set as COUNTERS_<FLAG> (e.g. COUNTERS_PORT=9000).",
    )
    defaults = Settings()
    flag = serve.add_argument
    flag("--host", help=f"address the gateway listens on (default {defaults.host})")
    flag("--port", type=int, help=f"gateway port (default {defaults.port})")
    flag("--storage-dir", help=f"where SQLite files live (default {defaults.storage_dir})")
    flag("--address", help="Ray cluster to join, e.g. 'auto' or HOST:6379 (default: start one)")
    flag("--namespace", help=f"Ray namespace of the host actors (default {defaults.namespace})")
    flag(
        "--placement",
        choices=[p.value for p in Placement],
        help=f"an actor per name, or names hashed onto shards (default {defaults.placement.value})",
    )
    flag(
        "--shards", type=int, help=f"host actors with sharded placement (default {defaults.shards})"
    )
    flag(
        "--dashboard-port",
        type=int,
        help=f"Ray dashboard port of a local Ray, 0 for none (default {defaults.dashboard_port})",
    )
    flag("--host-resource", help="custom Ray resource a node must have to run host actors")
    flag("--max-batch", type=int, help=f"operations per host call (default {defaults.max_batch})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = vars(_parser().parse_args(argv))
    command = arguments.pop("command")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.load(**arguments)
    except ConfigError as error:
        print(f"counters: {error}", file=sys.stderr)
        return 2
    if command == "serve":
        from .serve import serve  # Ray and aiohttp load only when serving

        return serve(settings)
    return 2
