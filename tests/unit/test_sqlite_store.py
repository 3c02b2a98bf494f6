"""The storage contract, on real SQLite files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from counters.errors import StorageFailed, StorageFull
from counters.object_storage import DELETED
from counters.sqlite_store import MIGRATIONS, SqliteStore


def test_write_is_committed_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "host.sqlite3"
    store = SqliteStore(path, "Counter.shard-0-of-1")
    store.write([("A", "value", "3"), ("B", "value", "-1"), ("A", "other", '"x"')])
    store.write([("A", "other", DELETED), ("B", "value", "2")])
    store.close()
    # A second, independent connection sees exactly what was committed.
    with sqlite3.connect(path) as db:
        rows = sorted(db.execute("SELECT object, key, value FROM kv"))
        assert rows == [("A", "value", "3"), ("B", "value", "2")]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT value FROM meta WHERE key='host'").fetchone() == (
            "Counter.shard-0-of-1",
        )
    reopened = SqliteStore(path, "Counter.shard-0-of-1")
    assert reopened.load("A") == ({"value": "3"}, [])
    assert reopened.load("nobody") == ({}, [])
    assert reopened.schema_version() == MIGRATIONS[-1][0]


def test_full_disk_stores_nothing_and_recovers(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "h.sqlite3", "h")
    store.write([("A", "value", "1")])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk full"
    big = [(f"name-{i}", "value", str(i)) for i in range(5000)] + [("A", "value", "2")]
    with pytest.raises(StorageFull, match="nothing of it was stored"):
        store.write(big)
    assert store.load("A")[0] == {"value": "1"}
    assert store.load("name-0")[0] == {}
    store._db.execute("PRAGMA max_page_count=1073741823")
    store.write(big)
    assert store.load("A")[0] == {"value": "2"}
    assert store.load("name-4999")[0] == {"value": "4999"}


def test_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageFailed, match="cannot open"):
        SqliteStore(blocker / "h.sqlite3", "h")


def test_migrations_are_numbered_in_order() -> None:
    versions = [version for version, _ in MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))


def test_a_read_only_disk_fails_to_open_then_recovers(tiny_disk: Path) -> None:
    path = tiny_disk / "h.sqlite3"
    crashed = subprocess.run(  # a writer that died without closing: WAL files left behind
        [sys.executable, "-c", CRASHED_WRITER, str(path)], capture_output=True, text=True
    )
    assert crashed.returncode == 0, crashed.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    try:
        with pytest.raises(StorageFailed, match="cannot open storage"):
            SqliteStore(path, "h")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)
    assert SqliteStore(path, "h").load("A")[0] == {"value": "1"}


CRASHED_WRITER = """
import os, sys
from pathlib import Path
from counters.sqlite_store import SqliteStore
SqliteStore(Path(sys.argv[1]), "h").write([("A", "value", "1")])
os._exit(0)
"""
