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

import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import StorageFailed
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
)

_UPSERT = (
    "INSERT INTO kv (object, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (object, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM kv WHERE object = ? AND key = ?"

Change = tuple[str, str, Any]  # (object, key, JSON text or DELETED)


class SqliteStore:
    """The SQLite file of one host; see the module docstring for its contract."""

    def __init__(self, path: Path, host_name: str) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN and COMMIT ourselves, nothing implicit.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
            self._record_owner(host_name)
        except (OSError, sqlite3.Error) as error:
            raise StorageFailed(f"cannot open storage {path}: {error}") from None

    def schema_version(self) -> int:
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def load(self, object_name: str) -> dict[str, str]:
        """Every committed key of one object, as JSON text."""
        try:
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE object = ?", (object_name,)
            ).fetchall()
        except sqlite3.Error as error:
            raise StorageFailed(f"cannot read storage {self.path}: {error}") from None
        return dict(rows)

    def write(self, changes: Iterable[Change]) -> None:
        """Apply `changes` in one durable transaction, or apply none and raise StorageFailed."""
        upserts: list[tuple[str, str, str]] = []
        deletes: list[tuple[str, str]] = []
        for object_name, key, text in changes:
            if text is DELETED:
                deletes.append((object_name, key))
            else:
                upserts.append((object_name, key, text))
        if not upserts and not deletes:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if upserts:
                    self._db.executemany(_UPSERT, upserts)
                if deletes:
                    self._db.executemany(_DELETE, deletes)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            raise StorageFailed(
                f"storage {self.path} refused the write, nothing of it was stored: {error}"
            ) from None

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
