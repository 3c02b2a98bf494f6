"""The storage contract, on real SQLite files."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from counters.applied_log import AppliedOp
from counters.errors import StorageFailed, StorageFull
from counters.object_storage import DELETED
from counters.storage.sqlite import MIGRATIONS, SqliteStore


def rows(path: Path, table: str) -> int:
    """Rows of `table`, read with a plain connection: no second store taking the file over."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return count


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
    assert reopened.load("A") == {"value": "3"}
    assert reopened.load("nobody") == {}
    assert reopened.schema_version() == MIGRATIONS[-1][0]


def test_full_disk_stores_nothing_and_recovers(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "h.sqlite3", "h")
    store.write([("A", "value", "1")])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk full"
    big = [(f"name-{i}", "value", str(i)) for i in range(5000)] + [("A", "value", "2")]
    with pytest.raises(StorageFull, match="nothing of it was stored"):
        store.write(big)
    assert store.load("A") == {"value": "1"}
    assert store.load("name-0") == {}
    store._db.execute("PRAGMA max_page_count=1073741823")
    store.write(big)
    assert store.load("A") == {"value": "2"}
    assert store.load("name-4999") == {"value": "4999"}


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
    assert SqliteStore(path, "h").load("A") == {"value": "1"}


CRASHED_WRITER = """
import os, sys
from pathlib import Path
from counters.storage.sqlite import SqliteStore
SqliteStore(Path(sys.argv[1]), "h").write([("A", "value", "1")])
os._exit(0)
"""


def test_ids_are_found_by_id_and_object(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "h.sqlite3", "h")
    done = [("A", f"id-{i}", AppliedOp(float(i), "increment(1)", str(i))) for i in range(5)]
    store.write([("A", "value", "5")], applied=done)
    store.write([("B", "value", "1")], applied=[("B", "id-3", AppliedOp(9.0, "get()", "1"))])
    wanted = {("A", "id-3"), ("A", "id-9"), ("A", "id-0"), ("B", "id-3"), ("B", "id-0"), ("C", "x")}
    assert store.find_applied(wanted) == {
        ("A", "id-3"): AppliedOp(3.0, "increment(1)", "3"),
        ("A", "id-0"): AppliedOp(0.0, "increment(1)", "0"),
        ("B", "id-3"): AppliedOp(9.0, "get()", "1"),
    }
    odd = ["it's", 'say "hi"', "Grüße", "\\"]  # any text an Idempotency-Key may carry
    store.write([], applied=[("D", key, AppliedOp(1.0, "increment(1)", "1")) for key in odd])
    assert sorted(key for _, key in store.find_applied({("D", key) for key in odd})) == sorted(odd)
    # More ids than one query binds.
    many = [("E", f"e-{i}", AppliedOp(2.0, "increment(1)", str(i))) for i in range(1200)]
    store.write([], applied=many)
    assert len(store.find_applied({(name, op_id) for name, op_id, _ in many})) == 1200


def test_the_oldest_ids_are_forgotten_first_up_to_a_time(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "h.sqlite3", "h")
    for i in range(10):  # recorded one a second
        store.write([], applied=[("A", f"id-{i}", AppliedOp(float(i), "increment(1)", "1"))])
    assert store.applied_count() == 10
    # Up to three of the oldest, but none recorded at 2.0 or later.
    store.write([], forget_oldest=(3, 2.0))
    assert remembered(store) == {f"id-{i}" for i in range(2, 10)}
    store.write([], forget_oldest=(3, 100.0))
    assert remembered(store) == {f"id-{i}" for i in range(5, 10)}
    assert store.applied_count() == 5
    assert store.forget_applied_before(8.0) == 3
    assert remembered(store) == {"id-8", "id-9"}
    assert store.forget_applied_before(100.0) == 2
    assert store.applied_count() == 0
    assert store.forget_applied_before(100.0) == 0


def test_the_count_of_ids_kept_by_writes_matches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SqliteStore(path, "h")
    assert store.applied_count() == 0  # counted from the file, then kept
    for i in range(20):
        ids = [("A", f"id-{i}-{j}", AppliedOp(float(i), "increment(1)", "1")) for j in range(3)]
        store.write([], applied=ids, forget_oldest=(2, 10.0))
        assert store.applied_count() == rows(path, "applied_ids")
    assert store.applied_count() == 60 - 30  # every id recorded before 10.0 is forgotten
    store.forget_applied_before(15.0)
    assert store.applied_count() == rows(path, "applied_ids") == 5 * 3


def remembered(store: SqliteStore) -> set[str]:
    return {op_id for (op_id,) in store._db.execute("SELECT op_id FROM applied_ids")}


def test_ids_kept_by_object_move_to_the_table_in_recorded_order(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with sqlite3.connect(path) as db:  # a file of schema version 2, as released
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
        for version, sql in MIGRATIONS[:2]:
            db.executescript(sql)
            db.execute("INSERT INTO schema_version VALUES (?, 'then')", (version,))
        db.execute("INSERT INTO kv VALUES ('B', 'value', '2')")
        db.executemany(
            "INSERT INTO applied VALUES (?, ?, ?, 'increment(1)', ?)",
            [("B", "late", 5.0, "2"), ("A", "early", 1.0, "1"), ("B", "middle", 3.0, "1")],
        )
    store = SqliteStore(path, "h")
    assert store.schema_version() == 3
    rows = store._db.execute("SELECT object, op_id, at FROM applied_ids ORDER BY seq").fetchall()
    assert rows == [("A", "early", 1.0), ("B", "middle", 3.0), ("B", "late", 5.0)]
    assert store.find_applied({("B", "late")}) == {
        ("B", "late"): AppliedOp(5.0, "increment(1)", "2")
    }
    assert store.load("B") == {"value": "2"}
