"""Which host actor serves which object name, and which file that host keeps its data in.

Pure functions, no I/O. The hash is BLAKE2b, fixed for all time: Python's `hash()` changes from
process to process, and a name that moved to another shard would lose its value.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

__all__ = ["Layout", "Placement", "default_shards", "host_file_name", "host_name", "shard_of"]

MAX_DEFAULT_SHARDS = 8


class Placement(str, enum.Enum):
    """How object names map onto host actors."""

    SHARDED = "sharded"  # names hashed onto N hosts, each hosting many objects
    PER_NAME = "per-name"  # one host actor per object, named after it


@dataclass(frozen=True)
class Layout:
    """How a storage directory is laid out; it must never change under existing data."""

    class_name: str
    placement: Placement
    shards: int

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1, got {self.shards}")

    def host_for(self, object_name: str) -> str:
        """The name of the host actor that serves `object_name`."""
        return host_name(self, object_name)


def default_shards(cpus: int | None) -> int:
    """How many shards a new storage dir gets unless told: a host per two CPUs, 1 to 8.

    A host is one process writing one file; the gateway, the clients and Ray want the other
    half of the machine. On two cores a second host only competes with the gateway for them
    (measured with two hosts against one: spread increments 15 % slower, their p99 40 % higher;
    docs/benchmarks.md), and one gateway cannot keep more than a few hosts busy.
    """
    return max(1, min(MAX_DEFAULT_SHARDS, (cpus or 1) // 2))


def shard_of(object_name: str, shards: int) -> int:
    """The shard, in ``range(shards)``, that `object_name` hashes onto."""
    digest = hashlib.blake2b(object_name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def host_name(layout: Layout, object_name: str) -> str:
    """The Ray actor name of the host for `object_name`.

    Per-name hosts read ``Counter/A``; shards read ``Counter.shard-03-of-16``. The separators
    differ, so the two kinds can never be confused.
    """
    if layout.placement is Placement.PER_NAME:
        return f"{layout.class_name}/{object_name}"
    width = len(str(layout.shards - 1))
    index = shard_of(object_name, layout.shards)
    return f"{layout.class_name}.shard-{index:0{width}d}-of-{layout.shards}"


def host_file_name(host: str) -> str:
    """The database file name for a host: a hash, so user input never reaches a path."""
    return hashlib.blake2b(host.encode("utf-8"), digest_size=16).hexdigest() + ".sqlite3"
