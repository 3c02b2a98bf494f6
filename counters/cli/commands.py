"""The `counters` command: `serve` runs the service; the others use a running one over HTTP.

    counters serve [flags]           Ray, the host actors and the HTTP gateway (`serve.py`)
    counters get NAME...             the counters, a table (--json: a line of JSON each)
    counters incr NAME [AMOUNT]      add (default 1); --min/--max bounds, --if-version
    counters decr NAME [AMOUNT]      subtract, likewise
    counters set NAME VALUE          set the count
    counters delete NAME             forget the counter
    counters list [--prefix P]       the counters that exist, every page
    counters watch NAME...           each value now, then every change, until Ctrl-C
    counters export [--prefix P]     the counters as JSON lines (`transfer.py`)
    counters import FILE             set counters to a file's counts; twice changes nothing
    counters backup PATH             a consistent snapshot of the storage (`storage_commands`)
    counters restore PATH            a backup into new storage
    counters reshard --shards N      a storage dir laid out anew, offline

`serve`: with no ``--address`` it starts a local Ray (dashboard on 127.0.0.1:8265) and stops it
again on Ctrl-C or SIGTERM; with one, it joins that cluster and leaves it running.

The others talk to the gateway at ``--url`` (``COUNTERS_URL``, default http://127.0.0.1:8787)
through `remote.py`, on the standard library alone: they load neither Ray nor aiohttp.

Each subcommand is a `Command` in `COMMANDS`: its name and help, a function that adds its
arguments, and one that runs it and returns the exit code. `main` adds the arguments of the
command asked for only, so that a command's imports (Ray's, the service's settings) load only
when it is the one that runs. A new command is one more `Command` in the list, documented in
the README as `counters NAME` (a test checks).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..values import CounterValue
from .output import as_json, change_line, table, watch_line
from .remote import DEFAULT_URL, CannotConnect, ErrorAnswer, Remote, RemoteConfig
from .storage_commands import (
    BACKUP,
    RESHARD,
    RESTORE,
    backup_arguments,
    backup_command,
    reshard_arguments,
    reshard_command,
    restore_arguments,
    restore_command,
)
from .storage_commands import EXIT_CODES as STORAGE_EXIT_CODES

__all__ = ["COMMANDS", "Command", "main"]

OK = 0
ERROR_ANSWER = 1  # the gateway answered with an error
USAGE = 2  # bad arguments or settings (argparse's own code too)
CANNOT_CONNECT = 3  # no answer from the gateway
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it

EXIT_CODES = """\
exit codes of the commands that use a running service (get ... watch):
  0    done (watch: also when stopped with Ctrl-C)
  1    the gateway answered with an error, printed on stderr (e.g. 409 out_of_bounds)
  2    bad usage: arguments, --url or the token file
  3    cannot connect: no answer from the gateway after 3 attempts
  130  interrupted by Ctrl-C"""


@dataclass(frozen=True)
class Command:
    """A subcommand: `arguments` adds its arguments to its parser, `run` runs it with the
    parsed arguments and returns the exit code."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    epilog: str | None = None


# `counters serve`


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


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    from ..placement import Placement
    from ..settings import Settings

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


def _serve(arguments: argparse.Namespace) -> int:
    from ..settings import Settings

    flags = {name: value for name, value in vars(arguments).items() if name != "command"}
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.load(**flags)
        from .serve import serve  # Ray and aiohttp load only when serving

        return serve(settings)
    except ConfigError as error:
        print(f"counters: {error}", file=sys.stderr)
        return USAGE


# The commands against a running service


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help=f"the gateway (default $COUNTERS_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--auth-token-file",
        metavar="FILE",
        help="file holding the gateway's token, sent as Authorization: Bearer <token> "
        "(default $COUNTERS_AUTH_TOKEN_FILE, the server's own variable)",
    )
    parser.add_argument("--json", action="store_true", help="JSON for scripts, a line each")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="to connect, and for each answer (default 30)",
    )


def _change_arguments(parser: argparse.ArgumentParser, bounds: bool) -> None:
    if bounds:
        parser.add_argument(
            "--min",
            type=int,
            dest="minimum",
            metavar="MIN",
            help="refuse (409) a change leaving less",
        )
        parser.add_argument(
            "--max",
            type=int,
            dest="maximum",
            metavar="MAX",
            help="refuse (409) a change leaving more",
        )
    parser.add_argument(
        "--if-version",
        type=int,
        metavar="VERSION",
        help="change only a counter still at this version, else 412 (sent as If-Match)",
    )
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the change's Idempotency-Key (default a fresh one): the same key again is "
        "applied at most once, e.g. after exit code 3",
    )
    _connection_arguments(parser)


def _get_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME")
    _connection_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("amount", type=int, nargs="?", default=1, metavar="AMOUNT")
    _change_arguments(parser, bounds=True)


def _set_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("value", type=int, metavar="VALUE")
    _change_arguments(parser, bounds=False)


def _delete_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME")
    _change_arguments(parser, bounds=False)


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="", help="only names that start with this")
    parser.add_argument(
        "--page-size",
        type=_page_size,
        metavar="N",
        help="counters asked for at a time, 1 to 1000 (default the gateway's, 100)",
    )
    _connection_arguments(parser)


def _page_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= 1000:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to 1000, not {text!r}")
    return size


def _get(remote: Remote, arguments: argparse.Namespace) -> None:
    values = remote.get(arguments.names)
    lines = [as_json(v) for v in values] if arguments.json else table(values)
    print("\n".join(lines))


def _incr(remote: Remote, arguments: argparse.Namespace) -> None:
    _show_change(
        arguments, remote.increment(arguments.name, arguments.amount, **_bounds(arguments))
    )


def _decr(remote: Remote, arguments: argparse.Namespace) -> None:
    _show_change(
        arguments, remote.decrement(arguments.name, arguments.amount, **_bounds(arguments))
    )


def _set(remote: Remote, arguments: argparse.Namespace) -> None:
    replaced = remote.set(arguments.name, arguments.value, **_condition(arguments))
    print(as_json(replaced) if arguments.json else change_line(replaced.current))


def _delete(remote: Remote, arguments: argparse.Namespace) -> None:
    replaced = remote.delete(arguments.name, **_condition(arguments))
    print(as_json(replaced) if arguments.json else change_line(replaced.current))


def _list(remote: Remote, arguments: argparse.Namespace) -> None:
    values = remote.list(arguments.prefix, arguments.page_size)
    if arguments.json:  # a line as each page comes
        for value in values:
            print(as_json(value))
        return
    found = list(values)  # a table: its widths need every row
    if found:
        print("\n".join(table(found)))


def _watch(remote: Remote, arguments: argparse.Namespace) -> None:
    def lost(reason: str) -> None:
        print(f"counters: the stream broke ({reason}); resuming", file=sys.stderr, flush=True)

    show = as_json if arguments.json else watch_line
    try:
        for value in remote.watch(arguments.names, on_lost=lost):
            print(show(value), flush=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="", help="only names that start with this")
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="write here (default the standard output)"
    )
    _connection_arguments(parser)


def _export(remote: Remote, arguments: argparse.Namespace) -> None:
    from .progress import progress_bar
    from .transfer import export_counters

    if arguments.output is None:
        export_counters(remote, sys.stdout, arguments.prefix)
        return
    try:
        out = open(arguments.output, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise ConfigError(f"cannot write {arguments.output}: {error.strerror}") from None
    with out, progress_bar("exporting") as bar:
        count = export_counters(remote, out, arguments.prefix, bar)
    print(f"exported {count} counters to {arguments.output}", file=sys.stderr)


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="JSON lines, as export writes; - for stdin")
    _connection_arguments(parser)


def _import(remote: Remote, arguments: argparse.Namespace) -> None:
    from .progress import progress_bar
    from .transfer import import_counters, parse_export

    if arguments.file == "-":
        counters = parse_export(sys.stdin, "standard input")
    else:
        try:
            with open(arguments.file, encoding="utf-8") as lines:
                counters = parse_export(lines, arguments.file)
        except OSError as error:
            raise ConfigError(f"cannot read {arguments.file}: {error.strerror}") from None
    with progress_bar("importing", len(counters)) as bar:
        summary = import_counters(remote, counters, bar)
    if arguments.json:
        print(json.dumps(vars(summary)))
    else:
        print(f"set {summary.set} counters, {summary.unchanged} already at their count")
    if summary.conflicts:
        raise ConflictingChanges(summary.conflicts)


class ConflictingChanges(Exception):
    """Counters others kept changing while an import set them."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            f"{len(names)} counter(s) changed by others at every attempt, not set: "
            + ", ".join(repr(name) for name in names[:10])
        )


def _show_change(arguments: argparse.Namespace, value: CounterValue) -> None:
    print(as_json(value) if arguments.json else change_line(value))


def _condition(arguments: argparse.Namespace) -> dict[str, Any]:
    return {"if_version": arguments.if_version, "key": arguments.idempotency_key}


def _bounds(arguments: argparse.Namespace) -> dict[str, Any]:
    return {"minimum": arguments.minimum, "maximum": arguments.maximum, **_condition(arguments)}


def _remote(
    body: Callable[[Remote, argparse.Namespace], None],
) -> Callable[[argparse.Namespace], int]:
    """`body` run against the gateway, its failures as exit codes and a line on stderr."""

    def run(arguments: argparse.Namespace) -> int:
        with _quiet_broken_pipe():
            code = _run_remote(body, arguments)
            sys.stdout.flush()  # while a closed pipe still ends us quietly
            return code

    return run


def _run_remote(
    body: Callable[[Remote, argparse.Namespace], None], arguments: argparse.Namespace
) -> int:
    try:
        config = RemoteConfig.load(
            url=arguments.url,
            auth_token_file=arguments.auth_token_file,
            timeout=arguments.timeout,
        )
    except ConfigError as error:
        print(f"counters: {error}", file=sys.stderr)
        return USAGE
    try:
        with Remote(config) as remote:
            body(remote, arguments)
    except ConfigError as error:  # e.g. an import's bad file: nothing was changed
        print(f"counters: {error}", file=sys.stderr)
        return USAGE
    except ConflictingChanges as error:
        print(f"counters: {error}", file=sys.stderr)
        return ERROR_ANSWER
    except ErrorAnswer as error:
        _complain(arguments, error.code, _explain(error, config), error.status, error.key)
        return ERROR_ANSWER
    except CannotConnect as error:
        _complain(arguments, "cannot_connect", str(error), None, error.key)
        return CANNOT_CONNECT
    except KeyboardInterrupt:
        return INTERRUPTED
    return OK


@contextlib.contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """SIGPIPE's default meanwhile: `counters list | head` ends quietly, as `ls` would, not
    with a BrokenPipeError (Python ignores the signal)."""
    if not hasattr(signal, "SIGPIPE") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGPIPE, previous)


def _explain(error: ErrorAnswer, config: RemoteConfig) -> str:
    """The gateway's message, and what to do about it where we know better."""
    if error.status == 401 and config.token is None:
        return (
            f"{error.message} ({error.status} {error.code}); give it with --auth-token-file "
            "FILE (or COUNTERS_AUTH_TOKEN_FILE)"
        )
    if error.status == 401:
        return f"the gateway refused the token ({error.status} {error.code})"
    return str(error)


def _complain(
    arguments: argparse.Namespace, code: str, message: str, status: int | None, key: str | None
) -> None:
    if arguments.json:
        shown: dict[str, object] = {"error": code, "message": message}
        if status is not None:
            shown["status"] = status
        if key is not None:
            shown["idempotency_key"] = key
        print(json.dumps(shown), file=sys.stderr)
        return
    if key is not None and (status is None or status >= 500):
        message += (
            "; the change may or may not have been applied: run the same command with "
            f"--idempotency-key {key} to apply it at most once"
        )
    print(f"counters: {message}", file=sys.stderr)


def _command(
    name: str,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None],
    body: Callable[[Remote, argparse.Namespace], None],
) -> Command:
    return Command(name, help, arguments, _remote(body), epilog=EXIT_CODES)


COMMANDS: list[Command] = [
    Command(
        "serve",
        "run the HTTP gateway (and a local Ray unless --address is given)",
        _serve_arguments,
        _serve,
        description="Every flag can also be set as COUNTERS_<FLAG> (e.g. COUNTERS_PORT=9000).",
    ),
    _command("get", "read counters: a table, or a line of JSON each", _get_arguments, _get),
    _command("incr", "add AMOUNT (default 1) to a counter", _add_arguments, _incr),
    _command("decr", "subtract AMOUNT (default 1) from a counter", _add_arguments, _decr),
    _command("set", "set a counter to VALUE", _set_arguments, _set),
    _command("delete", "forget a counter (it reads 0)", _delete_arguments, _delete),
    _command("list", "the counters that exist, in name order", _list_arguments, _list),
    _command(
        "watch",
        "each counter's value now, then every change, until Ctrl-C",
        _get_arguments,
        _watch,
    ),
    _command("export", "the counters that exist, as JSON lines", _export_arguments, _export),
    _command(
        "import",
        "set counters to the counts of an export (a second time changes nothing)",
        _import_arguments,
        _import,
    ),
    Command(
        *BACKUP,
        backup_arguments,
        backup_command,
        description=BACKUP[1] + ". --force: replace an existing file.",
        epilog=STORAGE_EXIT_CODES,
    ),
    Command(
        *RESTORE,
        restore_arguments,
        restore_command,
        description=RESTORE[1] + ". --force: replace every counter there, deleting "
        "those the backup does not hold.",
        epilog=STORAGE_EXIT_CODES,
    ),
    Command(
        *RESHARD,
        reshard_arguments,
        reshard_command,
        description=RESHARD[1] + ": copied into a new dir, checked, put in its place; the "
        "old dir is kept beside it.",
        epilog=STORAGE_EXIT_CODES,
    ),
]


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, the arguments of that command alone (the others are listed,
    and their arguments, with whatever they import, are left out)."""
    parser = argparse.ArgumentParser(
        prog="counters",
        description="Durable, named counters as actors on Ray.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if only is None or only == command.name:
            command.arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    asked = argv[0] if argv and not argv[0].startswith("-") else ""
    arguments = _parser(only=asked).parse_args(argv)
    command = next(c for c in COMMANDS if c.name == arguments.command)
    return command.run(arguments)
