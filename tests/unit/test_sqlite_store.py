"""The storage contract, on real SQLite files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from counters.applied_log import AppliedOp
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
    assert reopened.load("A", 10) == ({"value": "3"}, [])
    assert reopened.load("nobody", 10) == ({}, [])
    assert reopened.schema_version() == MIGRATIONS[-1][0]


def test_full_disk_stores_nothing_and_recovers(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "h.sqlite3", "h")
    store.write([("A", "value", "1")])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk full"
    big = [(f"name-{i}", "value", str(i)) for i in range(5000)] + [("A", "value", "2")]
    with pytest.raises(StorageFull, match="nothing of it was stored"):
        store.write(big)
    assert store.load("A", 10)[0] == {"value": "1"}
    assert store.load("name-0", 10)[0] == {}
    store._db.execute("PRAGMA max_page_count=1073741823")
    store.write(big)
    assert store.load("A", 10)[0] == {"value": "2"}
    assert store.load("name-4999", 10)[0] == {"value": "4999"}


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
    assert SqliteStore(path, "h").load("A", 10)[0] == {"value": "1"}


CRASHED_WRITER = """
import os, sys
from pathlib import Path
from counters.sqlite_store import SqliteStore
SqliteStore(Path(sys.argv[1]), "h").write([("A", "value", "1")])
os._exit(0)
"""


def test_ids_are_read_whole_only_up_to_a_bound_and_else_by_key(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "h.sqlite3", "h")
    done = [("A", f"id-{i}", AppliedOp(float(i), "increment(1)", str(i))) for i in range(5)]
    store.write([("A", "value", "5")], applied=done)
    assert store.load("A", 5) == ({"value": "5"}, [(op_id, a) for _, op_id, a in done])
    assert store.load("A", 4) == ({"value": "5"}, None)  # too many: none read
    store.write([("B", "value", "1")], applied=[("B", "id-3", AppliedOp(9.0, "get()", "1"))])
    found = store.find_applied({"A": ["id-3", "id-9", "id-0"], "B": ["id-3", "id-0"], "C": ["x"]})
    assert found == {
        "A": {
            "id-3": AppliedOp(3.0, "increment(1)", "3"),
            "id-0": AppliedOp(0.0, "increment(1)", "0"),
        },
        "B": {"id-3": AppliedOp(9.0, "get()", "1")},
        "C": {},
    }
    odd = ["it's", 'say "hi"', "Grüße", "\\"]  # any text an Idempotency-Key may carry
    store.write([], applied=[("D", key, AppliedOp(1.0, "increment(1)", "1")) for key in odd])
    assert sorted(store.find_applied({"D": odd})["D"]) == sorted(odd)
    # Slices in key order, after a given key.
    assert store.applied_after("A", "", 2) == [("id-0", 0.0), ("id-1", 1.0)]
    assert store.applied_after("A", "id-1", 10) == [("id-2", 2.0), ("id-3", 3.0), ("id-4", 4.0)]
    assert store.applied_after("B", "", 10) == [("id-3", 9.0)]
    assert store.applied_after("C", "", 10) == []
