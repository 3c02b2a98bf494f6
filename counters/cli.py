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


_FLAGS: list[tuple[str, type, str]] = [
    ("host", str, "address the gateway listens on"),
    ("port", int, "gateway port"),
    ("storage_dir", str, "where the SQLite files live"),
    ("database", str, "PostgreSQL URL to keep counters in instead (postgresql://...)"),
    ("address", str, "Ray cluster to join, e.g. 'auto' or HOST:6379; none: start a local Ray"),
    ("namespace", str, "Ray namespace of the host actors"),
    ("placement", str, "an actor per name, or names hashed onto shards"),
    (
        "shards",
        int,
        "host actors with sharded placement (default: the storage dir's own count; for a new "
        "one, a host per two CPUs, 1 to 8)",
    ),
    ("dashboard_port", int, "Ray dashboard port of a local Ray, 0 for none"),
    ("host_resource", str, "custom Ray resource a node must have to run host actors"),
    ("max_batch", int, "operations one host call carries at most"),
    ("max_in_flight", int, "calls in flight to one host from one gateway"),
    ("direct_channel", bool, "send batches to hosts on this node by a Unix socket, not Ray calls"),
    ("max_queue", int, "operations waiting for one host before callers get 503"),
    ("max_watchers", int, "live-update streams (GET /watch) one gateway serves at once"),
    (
        "max_watch_backlog",
        int,
        "changes waiting for one slow watcher before it is dropped (it may resume)",
    ),
    ("deadline", float, "seconds a request may take, retries included"),
    ("idle_timeout", float, "seconds an unused object stays in memory (and a per-name actor up)"),
    ("max_actors_per_node", int, "live per-name actors at most; idle ones stop first"),
    ("max_objects_per_host", int, "objects a host keeps in memory at most"),
    ("id_retention", float, "seconds an operation id is remembered"),
    ("max_ids_per_host", int, "operation ids a host remembers on disk (past the retry window)"),
    ("access_log", bool, "log every request (costs throughput)"),
    (
        "auth_token_file",
        str,
        "file holding the token every HTTP request but /healthz must bear "
        "(Authorization: Bearer <token>)",
    ),
    ("insecure", bool, "serve on an address beyond loopback without a token"),
]


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
    for name, kind, text in _FLAGS:
        default = getattr(defaults, name)
        if isinstance(default, Placement):
            default = default.value
        shown = f" (default {default})" if default is not None else ""
        if kind is bool:
            serve.add_argument(
                "--" + name.replace("_", "-"),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text + shown,
            )
            continue
        serve.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            choices=[p.value for p in Placement] if name == "placement" else None,
            help=text + shown,
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = vars(_parser().parse_args(argv))
    command = arguments.pop("command")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.load(**arguments)
        if command == "serve":
            from .serve import serve  # Ray and aiohttp load only when serving

            return serve(settings)
    except ConfigError as error:
        print(f"counters: {error}", file=sys.stderr)
        return 2
    return 2
