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
- Numbered migrations. The schema is brought up to date when the file is opened, each step in its
  own transaction and recorded in ``schema_version``, so an older file opens with a newer release.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .applied_log import AppliedOp
from .errors import StorageFailed, StorageFull
from .object_storage import DELETED

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
)

_UPSERT = (
    "INSERT INTO kv (object, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (object, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM kv WHERE object = ? AND key = ?"
_RECORD = "INSERT INTO applied (object, op_id, at, request, result) VALUES (?, ?, ?, ?, ?)"
_FORGET = "DELETE FROM applied WHERE object = ? AND op_id = ?"
_FIND_ONE = "SELECT object, op_id, at, request, result FROM applied WHERE object = ? AND op_id IN"
_IN_LIST = 500  # ids bound in one IN list at most, well under SQLite's limit
_FIND_MANY = (
    "SELECT a.object, a.op_id, a.at, a.request, a.result FROM json_each(?) AS wanted "
    "JOIN applied AS a ON a.object = json_extract(wanted.value, '$[0]') "
    "AND a.op_id = json_extract(wanted.value, '$[1]')"
)
_SLICE = "SELECT op_id, at FROM applied WHERE object = ? AND op_id > ? ORDER BY op_id LIMIT ?"

Change = tuple[str, str, Any]  # (object, key, JSON text or DELETED)
Applied = tuple[str, str, AppliedOp]  # (object, op_id, what it did)
Forgotten = tuple[str, str]  # (object, op_id)


class SqliteStore:
    """The SQLite file of one host; see the module docstring for its contract."""

    def __init__(self, path: Path, host_name: str) -> None:
        self.path = path
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN and COMMIT ourselves, nothing implicit.
            db = self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._migrate()
            self._record_owner(host_name)
        except (OSError, sqlite3.Error) as error:
            if db is not None:
                # A half-open connection keeps SQLite's shared memory of the file in this
                # process as it found it (read-only, say), and every later open would inherit it.
                db.close()
            raise StorageFailed(f"cannot open storage {path}: {error}") from None

    def schema_version(self) -> int:
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def load(
        self, object_name: str, max_applied: int
    ) -> tuple[dict[str, str], list[tuple[str, AppliedOp]] | None]:
        """One object's committed keys (as JSON text) and the operation ids it applied.

        The ids are None when there are more than `max_applied`: reading them all could take
        seconds for a hot object, and the caller looks them up on disk as it needs them.
        """
        try:
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE object = ?", (object_name,)
            ).fetchall()
            applied = self._db.execute(
                "SELECT op_id, at, request, result FROM applied WHERE object = ? LIMIT ?",
                (object_name, max_applied + 1),
            ).fetchall()
        except sqlite3.Error as error:
            raise StorageFailed(f"cannot read storage {self.path}: {error}") from None
        if len(applied) > max_applied:
            return dict(rows), None
        return dict(rows), [(op_id, AppliedOp(*rest)) for op_id, *rest in applied]

    def find_applied(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, dict[str, AppliedOp]]:
        """For each object, the records of those of its `wanted` ids it applied and remembers.

        One query for all of them: a batch spread over a thousand objects costs a thousand
        queries the other way, and several times the time. (For one object, a plain ``IN``
        is cheaper than decoding JSON: the hot counter's case.)
        """
        found: dict[str, dict[str, AppliedOp]] = {name: {} for name in wanted}
        try:
            if len(wanted) == 1 and all(len(ids) <= _IN_LIST for ids in wanted.values()):
                [(name, ids)] = wanted.items()
                marks = ", ".join("?" * len(ids))
                rows = self._db.execute(f"{_FIND_ONE} ({marks})", (name, *ids))
            else:
                pairs = [(name, op_id) for name, op_ids in wanted.items() for op_id in op_ids]
                rows = self._db.execute(_FIND_MANY, (json.dumps(pairs),))
            for name, op_id, *rest in rows:
                found[name][op_id] = AppliedOp(*rest)
        except sqlite3.Error as error:
            raise StorageFailed(f"cannot read storage {self.path}: {error}") from None
        return found

    def applied_after(self, object_name: str, after: str, limit: int) -> list[tuple[str, float]]:
        """Up to `limit` of an object's operation ids after `after`, in key order, with ages."""
        try:
            rows: list[tuple[str, float]] = self._db.execute(
                _SLICE, (object_name, after, limit)
            ).fetchall()
        except sqlite3.Error as error:
            raise StorageFailed(f"cannot read storage {self.path}: {error}") from None
        return rows

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
        records = [(name, op_id, a.at, a.request, a.result) for name, op_id, a in applied]
        forgets = list(forgotten)
        if not (upserts or deletes or records or forgets):
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in (
                    (_UPSERT, upserts),
                    (_DELETE, deletes),
                    (_FORGET, forgets),
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

    def forget_applied_before(self, at: float) -> int:
        """Forget every recorded operation id older than `at`; how many were forgotten."""
        try:
            with self._db:
                cursor = self._db.execute("DELETE FROM applied WHERE at < ?", (at,))
        except sqlite3.Error as error:
            raise StorageFailed(f"cannot sweep storage {self.path}: {error}") from None
        return cursor.rowcount

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
