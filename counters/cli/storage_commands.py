"""The commands that work on a service's storage itself: `backup`, `restore`, `reshard`.

    counters backup PATH         a consistent snapshot, while the service serves
    counters restore PATH        into new storage (--force: over counters already there)
    counters reshard --shards N  a storage dir laid out on N shards, offline

Storage is named as `counters serve` names it: ``--storage-dir`` (``COUNTERS_STORAGE_DIR``,
default ``.counters``) or ``--database`` (``COUNTERS_DATABASE``). A storage dir is read and
written on its own node. The work is `backup.py`'s; here are arguments, progress and
exit codes: 0 done, 1 the storage failed (its message on stderr), 2 bad usage or a refusal
(a file or counters that would be overwritten, a storage dir in use).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, CountersError

if TYPE_CHECKING:
    from ..storage import Storage

__all__ = [
    "BACKUP",
    "RESHARD",
    "RESTORE",
    "backup_arguments",
    "backup_command",
    "reshard_arguments",
    "reshard_command",
    "restore_arguments",
    "restore_command",
]

CLASS_NAME = "Counter"  # the object class `counters serve` hosts
EXIT_CODES = """\
exit codes:
  0    done
  1    the storage, or a file or folder given, failed (the message on stderr)
  2    bad usage, or refused: a file or counters would be overwritten (--force), or the
       storage is in use by a running service"""


def _storage_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--storage-dir",
        metavar="DIR",
        help="the SQLite storage dir (default $COUNTERS_STORAGE_DIR, else .counters)",
    )
    where.add_argument(
        "--database",
        metavar="URL",
        help="a PostgreSQL database instead, postgresql://... (default $COUNTERS_DATABASE)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace what is there (see the description)"
    )


def _storage(arguments: argparse.Namespace) -> Storage:
    from ..settings import Settings  # psycopg loads with it: only for these commands

    flags = {"storage_dir": arguments.storage_dir, "database": arguments.database}
    return Settings.load(**{k: v for k, v in flags.items() if v is not None}).storage()


def _run(work: Callable[[], str]) -> int:
    """`work`'s line on stdout, or its failure on stderr, as an exit code."""
    try:
        print(work())
    except ConfigError as error:
        print(f"counters: {error}", file=sys.stderr)
        return 2
    except CountersError as error:
        print(f"counters: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a path we were given: a missing folder, a full disk
        where = f" {error.filename}" if error.filename else ""
        print(f"counters: cannot write or read{where}: {error.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="the backup file to write")
    _storage_arguments(parser)


def backup_command(arguments: argparse.Namespace) -> int:
    from .backup import backup
    from .progress import progress_bar

    def work() -> str:
        storage = _storage(arguments)
        with progress_bar("backing up") as progress:
            count = backup(storage, arguments.path, CLASS_NAME, arguments.force, progress)
        return f"backed up {count} counters from the {storage.describe()} to {arguments.path}"

    return _run(work)


def restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="the backup file to read")
    _storage_arguments(parser)
    parser.add_argument(
        "--placement",
        choices=["sharded", "per-name"],
        default="sharded",
        help="how the restored counters are laid out (default sharded)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="shards of a sharded layout (default the storage's own count, else a host per "
        "two CPUs, 1 to 8)",
    )


def restore_command(arguments: argparse.Namespace) -> int:
    from ..placement import Placement, default_shards
    from .backup import read_backup, restore
    from .progress import progress_bar

    def work() -> str:
        storage = _storage(arguments)
        placement = Placement(arguments.placement)
        shards = (
            arguments.shards
            or storage.recorded_shards(CLASS_NAME)
            or default_shards(os.cpu_count())
        )
        if placement is Placement.PER_NAME:
            shards = 1
        header, objects = read_backup(arguments.path)
        with progress_bar("restoring", header["objects"]) as progress:
            count = restore(
                (header, objects), storage, placement, shards, arguments.force, progress
            )
        laid_out = f"{shards} shard(s)" if placement is Placement.SHARDED else "per name"
        return (
            f"restored {count} counters, backed up from the {header['source']} at "
            f"{header['taken_at']}, into the {storage.describe()}, {laid_out}"
        )

    return _run(work)


def reshard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=int, required=True, metavar="N", help="the new count")
    parser.add_argument(
        "--storage-dir",
        metavar="DIR",
        help="the SQLite storage dir (default $COUNTERS_STORAGE_DIR, else .counters)",
    )


def reshard_command(arguments: argparse.Namespace) -> int:
    from ..settings import Settings
    from .backup import reshard
    from .progress import progress_bar

    def work() -> str:
        flags = {} if arguments.storage_dir is None else {"storage_dir": arguments.storage_dir}
        settings = Settings.load(**flags)
        if settings.database:
            raise ConfigError(
                "reshard lays out a SQLite storage dir; with PostgreSQL, restore a backup "
                "into a new database with --shards"
            )
        with progress_bar("resharding") as progress:
            old = reshard(settings.storage_path, arguments.shards, progress)
        return (
            f"{settings.storage_path} now has {arguments.shards} shard(s); the dir as it was "
            f"is kept at {old} (remove it once satisfied)"
        )

    return _run(work)


BACKUP = ("backup", "a consistent snapshot of the storage, taken while the service serves")
RESTORE = ("restore", "a backup into new storage (refuses counters there unless --force)")
RESHARD = ("reshard", "lay a SQLite storage dir out on --shards N, with the service stopped")
