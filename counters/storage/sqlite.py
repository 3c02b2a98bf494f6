"""The SQLite backend's store of one host actor: one SQLite file (`interface.HostStore`).

The contract, which every caller relies on:

- Persisted before acknowledged. `write` runs one transaction and returns only after COMMIT,
  with the journal in WAL mode and ``synchronous=FULL``: the commit is fsync'd before `write`
  returns, so a change the host acknowledges survives a crash of the process or the machine.
- All or nothing. If any part of `write` fails (disk full, read-only file, I/O error), the
  transaction is rolled back and `StorageFailed` is raised: the file holds exactly what it held
  before, and the caller must treat every change of that write as not stored.
- One writer, checked in every commit. Opening the file takes ownership of it: the ``epoch`` in
  its ``meta`` table goes up by one, and this store remembers its own. Every transaction that
  writes reads the epoch inside the transaction, under SQLite's write lock, and a store that
  finds another epoch there has been replaced by a newer writer: it commits nothing and raises
  `Fenced`. (The host also holds an exclusive lock on the file for its lifetime, `storage_dir.py`,
  so that a second writer is refused before it starts; the epoch is what still holds where such
  locks do not, on a network filesystem, say.)
- Numbered migrations. The schema is brought up to date when the file is opened, each step in its
  own transaction and recorded in ``schema_version``, so an older file opens with a newer release.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Set
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..applied_log import AppliedOp
from ..errors import Fenced, StorageFailed, StorageFull
from .interface import Applied, Change, IdsAlreadyRecorded, Oldest, Rows

__all__ = ["MIGRATIONS", "SqliteStore"]

# (version, SQL). Append only: a released step is never edited.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE kv (
            object TEXT NOT NULL,
            key    TEXT NOT NULL,
            value  TEXT NOT NULL,
            PRIMARY KEY (object, key)
        ) WITHOUT ROWID;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        """,
    ),
    (
        2,
        """
        CREATE TABLE applied (
            object  TEXT NOT NULL,
            op_id   TEXT NOT NULL,
            at      REAL NOT NULL,
            request TEXT NOT NULL,
            result  TEXT NOT NULL,
            PRIMARY KEY (object, op_id)
        ) WITHOUT ROWID;
        """,
    ),
    (
        3,
        # Ids in the order they were recorded, found by id: a batch appends its ids at the end
        # of the table instead of one page per object (as keyed by object), which halved the
        # cost of a commit spread over many objects and took the WAL checkpoints out of its
        # tail (docs/benchmarks.md). The oldest ids are forgotten from the front.
        """
        CREATE TABLE applied_ids (
            seq     INTEGER PRIMARY KEY,
            op_id   TEXT NOT NULL,
            object  TEXT NOT NULL,
            at      REAL NOT NULL,
            request TEXT NOT NULL,
            result  TEXT NOT NULL
        );
        INSERT INTO applied_ids (op_id, object, at, request, result)
            SELECT op_id, object, at, request, result FROM applied ORDER BY at;
        DROP TABLE applied;
        CREATE UNIQUE INDEX applied_ids_by_id ON applied_ids (op_id, object);
        """,
    ),
)

_UPSERT = (
    "INSERT INTO kv (object, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (object, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM kv WHERE object = ? AND key = ?"
_RECORD = "INSERT INTO applied_ids (op_id, object, at, request, result) VALUES (?, ?, ?, ?, ?)"
_FIND = "SELECT op_id, object, at, request, result FROM applied_ids WHERE op_id IN"
_IN_LIST = 500  # ids bound in one IN list at most, well under SQLite's limit
# Each in a query of its own: SQLite reads one end of the table for a lone min() or max(),
# and the whole of it for both in one.
_COUNT = "SELECT (SELECT min(seq) FROM applied_ids), (SELECT max(seq) FROM applied_ids)"
# Among the ids numbered [?, ?), the first recorded at or after a time: where forgetting stops.
_OLDEST = "SELECT at FROM applied_ids ORDER BY seq LIMIT 1"
_FIRST_SINCE = (
    "SELECT seq FROM applied_ids WHERE seq >= ? AND seq < ? AND at >= ? ORDER BY seq LIMIT 1"
)

_EPOCH = "SELECT value FROM meta WHERE key = 'epoch'"
_TAKE_OVER = (
    "INSERT INTO meta (key, value) VALUES ('epoch', '1') "
    "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
)
_WRITER = (
    "INSERT INTO meta (key, value) VALUES ('writer', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class SqliteStore:
    """The SQLite file of one host; see the module docstring for its contract."""

    def __init__(
        self, path: Path, host_name: str, writer: str = "", locks: Iterable[int] = ()
    ) -> None:
        """Open (creating, migrating) the file and take ownership of it; `writer` says who we
        are in the file (process, service), for an operator reading it. `locks` are file
        descriptors held for the store's life, closed with it."""
        self.path = path
        self._locks = list(locks)
        # The ids remembered, counted on first use and then kept by our own writes (we are the
        # file's one writer): the host asks at every commit.
        self._remembered: int | None = None
        # When the oldest id remembered was recorded, once known (inf: none): a commit with
        # nothing to forget then costs no query.
        self._oldest_at: float | None = None
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN and COMMIT ourselves, nothing implicit.
            db = self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._migrate()
            self._record_owner(host_name)
            self.epoch = self._take_over(writer)
        except (OSError, sqlite3.Error) as error:
            if db is not None:
                # A half-open connection keeps SQLite's shared memory of the file in this
                # process as it found it (read-only, say), and every later open would inherit it.
                db.close()
            raise StorageFailed(f"cannot open storage {path}: {error}") from None

    def _take_over(self, writer: str) -> str:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(_TAKE_OVER)
            self._db.execute(_WRITER, (writer,))
            (epoch,) = self._db.execute(_EPOCH).fetchone()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return str(epoch)

    def check_owner(self) -> None:
        """Raise Fenced if another store has taken the file over since we opened it.

        For reads: alone it proves nothing once it returns, but a host that answers reads
        from memory learns this way, within a batch, that its memory may be stale.
        """
        with self._failing("read"):
            (epoch,) = self._db.execute(_EPOCH).fetchone()
        if epoch != self.epoch:
            raise self._fenced(epoch)

    def _fenced(self, epoch: str) -> Fenced:
        return Fenced(
            f"storage {self.path} was taken over by a newer writer (epoch {epoch}, ours "
            f"{self.epoch}); nothing of this call was stored"
        )

    def schema_version(self) -> int:
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def load(self, object_name: str) -> dict[str, str]:
        """One object's committed keys, as JSON text."""
        with self._failing("read"):
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE object = ?", (object_name,)
            ).fetchall()
        return dict(rows)

    def find_applied(self, wanted: Set[tuple[str, str]]) -> dict[tuple[str, str], AppliedOp]:
        """The records of those `wanted` (object, op_id) pairs that were applied and remembered.

        By id, a few hundred in one query: the index on (op_id, object) finds each in a few
        page reads, and ids mostly belong to one object only, so the object is checked here.
        """
        ids = list({op_id for _, op_id in wanted})
        found: dict[tuple[str, str], AppliedOp] = {}
        with self._failing("read"):
            for start in range(0, len(ids), _IN_LIST):
                chunk = ids[start : start + _IN_LIST]
                marks = ", ".join("?" * len(chunk))
                for op_id, name, *rest in self._db.execute(f"{_FIND} ({marks})", chunk):
                    if (name, op_id) in wanted:
                        found[name, op_id] = AppliedOp(*rest)
        return found

    def applied_count(self) -> int:
        """How many ids are remembered: exact, or more (ids may be forgotten out of order)."""
        if self._remembered is None:
            with self._failing("read"):
                first, last = self._db.execute(_COUNT).fetchone()
            self._remembered = 0 if first is None else last - first + 1
        return self._remembered

    def write(
        self,
        changes: Iterable[Change],
        applied: Iterable[Applied] = (),
        forget_oldest: Oldest | None = None,
    ) -> None:
        """Apply all of it in one durable transaction, or none of it and raise StorageFailed.

        `forget_oldest` forgets, after recording `applied`, up to that many of the oldest ids
        (none for 0), stopping at the first one recorded at or after the given time.
        """
        upserts, deletes, records = rows = Rows.of(changes, applied)
        if rows.nothing(forget_oldest):
            return
        with self._owned_transaction("write", ", nothing of it was stored"):
            for sql, batch in ((_UPSERT, upserts), (_DELETE, deletes), (_RECORD, records)):
                if batch:
                    self._db.executemany(sql, batch)
            forgotten = 0 if forget_oldest is None else self._forget_oldest(*forget_oldest)
        self._count(len(records) - forgotten)
        if records and self._oldest_at == math.inf:
            self._oldest_at = None  # no longer empty: read it when next needed

    def forget_applied_before(self, at: float) -> int:
        """Forget the oldest ids, up to the first recorded at or after `at`; how many."""
        with self._owned_transaction("sweep"):
            forgotten = self._forget_oldest(self.applied_count(), at)
        self._count(-forgotten)
        return forgotten

    def _count(self, change: int) -> None:
        if self._remembered is not None:
            self._remembered = max(0, self._remembered + change)

    def _forget_oldest(self, count: int, before: float) -> int:
        # Ids are numbered in the order they were recorded, so the oldest are a range at the
        # front of the table: one range delete, and the scan for its end reads only that range.
        if count <= 0:
            return 0
        if self._oldest_at is None:
            oldest = self._db.execute(_OLDEST).fetchone()
            self._oldest_at = math.inf if oldest is None else oldest[0]
        if self._oldest_at >= before:
            return 0  # the common case: nothing old enough, and no query spent finding out
        first, _ = self._db.execute(_COUNT).fetchone()
        if first is None:
            return 0
        young = self._db.execute(_FIRST_SINCE, (first, first + count, before)).fetchone()
        end = young[0] if young else first + count
        self._oldest_at = None  # read again when next needed (also right if this rolls back)
        return self._db.execute("DELETE FROM applied_ids WHERE seq < ?", (end,)).rowcount

    @contextmanager
    def _owned_transaction(self, doing: str, consequence: str = "") -> Iterator[None]:
        """One transaction that commits only if the file is still ours, else Fenced."""
        with self._failing(doing, consequence):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # The fence, inside the transaction: SQLite's write lock, taken by BEGIN
                # IMMEDIATE, keeps the epoch as read until COMMIT. Another writer's epoch means
                # we were replaced and our memory may be stale: store nothing.
                (epoch,) = self._db.execute(_EPOCH).fetchone()
                if epoch != self.epoch:
                    raise self._fenced(epoch)
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _failing(self, doing: str, consequence: str = "") -> Iterator[None]:
        """SQLite's errors, as the StorageFailed every caller handles (StorageFull if full)."""
        try:
            yield
        except sqlite3.Error as error:
            if isinstance(error, sqlite3.IntegrityError) and "applied_ids" in str(error):
                raise IdsAlreadyRecorded(str(error)) from None
            full = isinstance(error, sqlite3.OperationalError) and "full" in str(error)
            kind = StorageFull if full else StorageFailed
            raise kind(f"cannot {doing} storage {self.path}{consequence}: {error}") from None

    def close(self) -> None:
        self._db.close()
        for fd in self._locks:
            os.close(fd)
        self._locks = []

    def _migrate(self) -> None:
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        current = self.schema_version()
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            # executescript would COMMIT on its own; run each statement inside our transaction.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, datetime.now(timezone.utc).isoformat()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _record_owner(self, host_name: str) -> None:
        # Lets an operator (or a later backup tool) tell which host a hashed file belongs to.
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('host', ?) ON CONFLICT (key) DO NOTHING",
            (host_name,),
        )
