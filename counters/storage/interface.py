"""What a host needs of durable storage: one small interface, a backend per database.

A `Storage` is a value (a directory, a database address) that pickles into a host actor; there
the host asks it once for its `HostStore`, which holds the connection, the locks and the epoch
for as long as the host lives.

The contract every backend keeps, and the shared tests hold each to:

- Persisted before acknowledged. `HostStore.write` returns only after its transaction is
  durably committed, so a change the host acknowledges survives a crash of the process or the
  machine.
- All or nothing. If any part of `write` fails, nothing of it is stored and `StorageFailed` is
  raised (`StorageFull` when out of space). If the outcome of the commit itself cannot be known
  (the connection broke during COMMIT), it raises `OutcomeUnknown`; either way the host drops
  what it cached, and the client resends with the same operation ids.
- One writer, checked in every commit. Opening a host's store takes ownership of that host's
  data by raising its epoch; every transaction that writes checks, inside the transaction, that
  the epoch is still its own, and otherwise stores nothing and raises `Fenced`.
- Operation ids are recorded in the same transaction as the change they made, and never twice:
  a `write` with an id recorded before for its object stores nothing and raises
  `IdsAlreadyRecorded`, which the host answers by looking the batch's ids up.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterable, Iterator, Set
from typing import Any, NamedTuple, Protocol

from ..applied_log import AppliedOp
from ..object_storage import DELETED
from ..placement import Layout

__all__ = [
    "Applied",
    "Change",
    "HostStore",
    "IdsAlreadyRecorded",
    "Oldest",
    "Rows",
    "ServiceId",
    "Storage",
    "StoredObject",
    "merged_objects",
    "objects_of",
    "scan_rows",
]

SCAN_BATCH = 500  # rows per query of a scan

Change = tuple[str, str, Any]  # (object, key, JSON text or DELETED)
Applied = tuple[str, str, AppliedOp]  # (object, op_id, what it did)
Oldest = tuple[int, float]  # (at most this many of the oldest ids, those recorded before this)


class IdsAlreadyRecorded(Exception):
    """A write's operation id was recorded before, for its object; nothing was stored.

    Between a store and its host only: the host then runs the batch again, knowing its ids.
    """


class Rows(NamedTuple):
    """What one `write` stores, as rows: the backends' common first step."""

    upserts: list[tuple[str, str, str]]  # (object, key, JSON text)
    deletes: list[tuple[str, str]]  # (object, key)
    records: list[tuple[str, str, float, str, str]]  # (op_id, object, at, request, result)

    @classmethod
    def of(cls, changes: Iterable[Change], applied: Iterable[Applied]) -> Rows:
        upserts: list[tuple[str, str, str]] = []
        deletes: list[tuple[str, str]] = []
        for object_name, key, text in changes:
            if text is DELETED:
                deletes.append((object_name, key))
            else:
                upserts.append((object_name, key, text))
        records = [(op_id, name, a.at, a.request, a.result) for name, op_id, a in applied]
        return cls(upserts, deletes, records)

    def nothing(self, forget_oldest: Oldest | None) -> bool:
        """Nothing to store and nothing to forget: no transaction needed."""
        forgets = forget_oldest is not None and forget_oldest[0] > 0
        return not (self.upserts or self.deletes or self.records or forgets)


class ServiceId(NamedTuple):
    """Which service a host belongs to: a random id per service, and words for people."""

    id: str
    description: str


class HostStore(Protocol):
    """The storage of one host, owned by it from opening to `close`."""

    epoch: str

    def load(self, object_name: str) -> dict[str, str]:
        """One object's committed keys, as JSON text."""
        ...

    def find_applied(self, wanted: Set[tuple[str, str]]) -> dict[tuple[str, str], AppliedOp]:
        """The records of those (object, op_id) pairs that were applied and remembered."""
        ...

    def applied_count(self) -> int:
        """How many ids the host remembers: exact, or more."""
        ...

    def write(
        self,
        changes: Iterable[Change],
        applied: Iterable[Applied] = (),
        forget_oldest: Oldest | None = None,
    ) -> None:
        """All of it in one durable transaction, or none of it (see the module's contract)."""
        ...

    def forget_applied_before(self, at: float) -> int:
        """Forget the oldest ids, up to the first recorded at or after `at`; how many."""
        ...

    def check_owner(self) -> None:
        """Raise Fenced if another store has taken the host's data over since we opened."""
        ...

    def close(self) -> None:
        """Let go of the connection and of every lock."""
        ...


class Storage(Protocol):
    """A backend: where every host of a service keeps its data."""

    def open_host(self, host: str, layout: Layout, service: ServiceId) -> HostStore:
        """Bind `layout`, claim the storage for `service`, and take `host`'s data over."""
        ...

    def recorded_shards(self, class_name: str) -> int | None:
        """The shard count the storage was laid out with for `class_name`, if any."""
        ...

    def refuse_if_in_use(self, service: ServiceId) -> None:
        """Raise StorageDirInUse if a live host of another service uses this storage."""
        ...

    def hold(self, service: ServiceId) -> Callable[[], None]:
        """Claim the storage for `service` until the function returned is called, as a host
        does for its life (StorageDirInUse if another service holds it): a gateway holds it,
        so that the storage stays its service's between hosts."""
        ...

    def describe(self) -> str:
        """Where the data is, for logs and errors (no password)."""
        ...

    def scan(self, prefix: str, after: str) -> Generator[tuple[str, dict[str, str]]]:
        """Every stored object whose name starts with `prefix` and sorts after `after`, in name
        order (by code point), with its committed keys, across every host: what a listing
        reads. It reads only what is committed, and so acknowledged, and takes no lock a host
        needs. From any process that reaches the storage (a SQLite dir: on its node). Close
        the iterator when done: it holds a connection."""
        ...

    def clear(self) -> None:
        """Forget every stored object, every remembered id and the layout: a restore that
        replaces everything. The caller holds the storage (`hold`), so no host writes meanwhile;
        epochs only grow, so a host that opened the data before is fenced."""
        ...

    def snapshot(self) -> Generator[StoredObject]:
        """Every stored object with its committed keys and the ids it remembers, as of one
        commit: of the whole database (PostgreSQL), or of each host's file (SQLite; a name
        lives in one file, so each object is as of one moment, and what was acknowledged
        before the snapshot began is in it). Read-only, never in a host's way; what a backup
        reads. Close the iterator when done."""
        ...


Row = tuple[str, str, str]  # (object, key, JSON text)
IdRow = tuple[str, str, float, str, str]  # (object, op_id, at, request, result)


class StoredObject(NamedTuple):
    """One object as a snapshot holds it: its keys, and the ids of operations it applied
    that are still remembered, in the order they were recorded."""

    name: str
    state: dict[str, str]  # key -> JSON text
    applied: list[tuple[str, AppliedOp]]  # (op_id, what it did)


def merged_objects(rows: Iterator[Row], ids: Iterator[IdRow]) -> Iterator[StoredObject]:
    """`rows` in (object, key) order and `ids` in object order, by code point, as objects."""
    row = next(rows, None)
    id_row = next(ids, None)
    while row is not None or id_row is not None:
        name = min(r[0] for r in (row, id_row) if r is not None)
        state: dict[str, str] = {}
        while row is not None and row[0] == name:
            state[row[1]] = row[2]
            row = next(rows, None)
        applied: list[tuple[str, AppliedOp]] = []
        while id_row is not None and id_row[0] == name:
            applied.append((id_row[1], AppliedOp(id_row[2], id_row[3], id_row[4])))
            id_row = next(ids, None)
        yield StoredObject(name, state, applied)


def scan_rows(fetch: Callable[[tuple[str, str] | None], list[Row]], prefix: str) -> Iterator[Row]:
    """The rows a scan reads, a batch at a time: `fetch(None)` gives the first SCAN_BATCH
    rows in (object, key) order, `fetch(last)` those after the row `last`. Stops at the first
    name past the prefix (names are in order: none after it can match)."""
    position: tuple[str, str] | None = None
    while True:
        rows = fetch(position)
        for row in rows:
            if not row[0].startswith(prefix):
                return
            yield row
        if len(rows) < SCAN_BATCH:
            return
        position = (rows[-1][0], rows[-1][1])


def objects_of(rows: Iterable[Row]) -> Iterator[tuple[str, dict[str, str]]]:
    """Rows in (object, key) order, as (object, {key: JSON text}), an object at a time."""
    for name, group in itertools.groupby(rows, key=lambda row: row[0]):
        yield name, {key: value for _, key, value in group}
