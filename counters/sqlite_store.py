"""Durable storage of one host actor: one SQLite file.

The contract, which every caller relies on:

- Persisted before acknowledged. `write` runs one transaction and returns only after COMMIT,
  with the journal in WAL mode and ``synchronous=FULL``: the commit is fsync'd before `write`
  returns, so a change the host acknowledges survives a crash of the process or the machine.
- All or nothing. If any part of `write` fails (disk full, read-only file, I/O error), the
  transaction is rolled back and `StorageFailed` is raised: the file holds exactly what it held
  before, and the caller must treat every change of that write as not stored.
- One writer. Only the host actor that owns the file opens it; Ray's serial execution of that
  actor is what makes it the single writer.
- Operation ids are written twice over. A batch appends its ids to ``applied_recent``, a table in
  insertion order, so a batch over a thousand counters writes a few pages rather than one per
  counter (as ``applied``, clustered by counter, would). When it holds ``fold_at`` rows, they are
  moved to ``applied`` in one transaction, sorted by counter. The recent ids are also kept in
  memory, loaded when the file is opened, so `load` finds an object's ids without an index on
  ``applied_recent``. Memory follows the disk: it changes only after a COMMIT.
- Numbered migrations. The schema is brought up to date when the file is opened, each step in its
  own transaction and recorded in ``schema_version``, so an older file opens with a newer release.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .applied_log import AppliedOp
from .errors import StorageFailed, StorageFull
from .object_storage import DELETED

__all__ = ["FOLD_AT", "MIGRATIONS", "SqliteStore"]

log = logging.getLogger(__name__)

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
        """
        CREATE TABLE applied_recent (
            seq     INTEGER PRIMARY KEY,
            object  TEXT NOT NULL,
            op_id   TEXT NOT NULL,
            at      REAL NOT NULL,
            request TEXT NOT NULL,
            result  TEXT NOT NULL
        );
        """,
    ),
)

_UPSERT = (
    "INSERT INTO kv (object, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (object, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM kv WHERE object = ? AND key = ?"
_RECORD = (
    "INSERT INTO applied_recent (seq, object, op_id, at, request, result) VALUES (?, ?, ?, ?, ?, ?)"
)
_FORGET = "DELETE FROM applied WHERE object = ? AND op_id = ?"
_FORGET_RECENT = "DELETE FROM applied_recent WHERE seq = ?"
_FOLD = (
    "INSERT INTO applied (object, op_id, at, request, result) "
    "SELECT object, op_id, at, request, result FROM applied_recent ORDER BY object, op_id"
)
FOLD_AT = 20_000  # recent ids kept before they move to the per-counter table

Change = tuple[str, str, Any]  # (object, key, JSON text or DELETED)
Applied = tuple[str, str, AppliedOp]  # (object, op_id, what it did)
Forgotten = tuple[str, str]  # (object, op_id)


class SqliteStore:
    """The SQLite file of one host; see the module docstring for its contract."""

    def __init__(self, path: Path, host_name: str, fold_at: int | None = None) -> None:
        self.path = path
        self.fold_at = fold_at or FOLD_AT
        # The rows of applied_recent: object -> op_id -> (seq, what it did).
        self._recent: dict[str, dict[str, tuple[int, AppliedOp]]] = {}
        self._recent_rows = 0
        self._next_seq = 1
        self._fold_again_at = self.fold_at
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN and COMMIT ourselves, nothing implicit.
            db = self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._migrate()
            self._record_owner(host_name)
            self._load_recent()
        except (OSError, sqlite3.Error) as error:
            if db is not None:
                # A half-open connection keeps SQLite's shared memory of the file in this
                # process as it found it (read-only, say), and every later open would inherit it.
                db.close()
            raise StorageFailed(f"cannot open storage {path}: {error}") from None

    def schema_version(self) -> int:
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def load(self, object_name: str) -> tuple[dict[str, str], list[tuple[str, AppliedOp]]]:
        """One object's committed keys (as JSON text) and the operation ids it applied."""
        try:
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE object = ?", (object_name,)
            ).fetchall()
            applied = self._db.execute(
                "SELECT op_id, at, request, result FROM applied WHERE object = ?", (object_name,)
            ).fetchall()
        except sqlite3.Error as error:
            raise StorageFailed(f"cannot read storage {self.path}: {error}") from None
        ids = [(op_id, AppliedOp(*rest)) for op_id, *rest in applied]
        ids += [(op_id, op) for op_id, (_, op) in self._recent.get(object_name, {}).items()]
        return dict(rows), ids

    def write(
        self,
        changes: Iterable[Change],
        applied: Iterable[Applied] = (),
        forgotten: Iterable[Forgotten] = (),
    ) -> None:
        """Apply all of it in one durable transaction, or none of it and raise StorageFailed."""
        upserts: list[tuple[str, str, str]] = []
        deletes: list[tuple[str, str]] = []
        for object_name, key, text in changes:
            if text is DELETED:
                deletes.append((object_name, key))
            else:
                upserts.append((object_name, key, text))
        forgotten = list(forgotten)  # read twice: for the transaction, then for memory
        seq = self._next_seq
        records = []
        for name, op_id, a in applied:
            records.append((seq, name, op_id, a.at, a.request, a.result))
            seq += 1
        forgets: list[tuple[str, str]] = []
        forgets_recent: list[tuple[int]] = []
        for name, op_id in forgotten:
            recent = self._recent.get(name, {}).get(op_id)
            if recent is None:
                forgets.append((name, op_id))
            else:
                forgets_recent.append((recent[0],))
        if not (upserts or deletes or records or forgets or forgets_recent):
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in (
                    (_UPSERT, upserts),
                    (_DELETE, deletes),
                    (_FORGET, forgets),
                    (_FORGET_RECENT, forgets_recent),
                    (_RECORD, records),
                ):
                    if rows:
                        self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            full = isinstance(error, sqlite3.OperationalError) and "full" in str(error)
            kind = StorageFull if full else StorageFailed
            raise kind(
                f"storage {self.path} refused the write, nothing of it was stored: {error}"
            ) from None
        # Committed: now memory may follow.
        self._next_seq = seq
        for name, op_id in forgotten:
            ids = self._recent.get(name)
            if ids is not None and ids.pop(op_id, None) is not None:
                self._recent_rows -= 1
                if not ids:
                    del self._recent[name]
        for row in records:
            self._remember(row)
        if self._recent_rows >= self._fold_again_at:
            self._fold()

    def _fold(self) -> None:
        """Move the recent ids to the per-counter table; on failure, keep them and go on."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(_FOLD)
                self._db.execute("DELETE FROM applied_recent")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            # The ids are safe where they are; a full disk, say, gets another try later.
            log.warning("storage %s: cannot fold recent operation ids yet: %s", self.path, error)
            self._fold_again_at = self._recent_rows + self.fold_at
            return
        self._recent.clear()
        self._recent_rows = 0
        self._fold_again_at = self.fold_at

    def _load_recent(self) -> None:
        rows = self._db.execute(
            "SELECT seq, object, op_id, at, request, result FROM applied_recent ORDER BY seq"
        ).fetchall()
        for row in rows:
            self._remember(row)
        self._next_seq = rows[-1][0] + 1 if rows else 1

    def _remember(self, row: tuple[int, str, str, float, str, str]) -> None:
        seq, name, op_id, at, request, result = row
        self._recent.setdefault(name, {})[op_id] = (seq, AppliedOp(at, request, result))
        self._recent_rows += 1

    def forget_applied_before(self, at: float) -> int:
        """Forget every recorded operation id older than `at`; how many were forgotten."""
        try:
            with self._db:
                forgotten = self._db.execute("DELETE FROM applied WHERE at < ?", (at,)).rowcount
                forgotten += self._db.execute(
                    "DELETE FROM applied_recent WHERE at < ?", (at,)
                ).rowcount
        except sqlite3.Error as error:
            raise StorageFailed(f"cannot sweep storage {self.path}: {error}") from None
        for name in list(self._recent):
            ids = self._recent[name]
            for op_id in [op_id for op_id, (_, op) in ids.items() if op.at < at]:
                del ids[op_id]
                self._recent_rows -= 1
            if not ids:
                del self._recent[name]
        return forgotten

    def close(self) -> None:
        self._db.close()

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
