"""One writer per file: the epoch fence in every commit, and the lock a host holds on its file.

Real SQLite files and real locks, no Ray. A second store opened on a file takes it over (its
epoch goes up), as a restarted host does; a host in this process stands in for a second process,
since an exclusive `flock` is held per open file description, not per process.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from counters.applied_log import AppliedOp
from counters.counter import Counter
from counters.errors import Fenced, StorageBusy
from counters.host import ObjectHost
from counters.operations import Operation, Outcome
from counters.placement import Layout, Placement
from counters.storage.sqlite import SqliteStore
from counters.storage.storage_dir import StorageDir

LAYOUT = Layout("Counter", Placement.SHARDED, 1)
HOST = "Counter.shard-0-of-1"
APPLIED = AppliedOp(0.0, "increment(1)", "1")


def read(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of a query by a plain read-only connection: it takes nothing over."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


def snapshot(path: Path) -> tuple[list[tuple[object, ...]], ...]:
    """Everything a writer could change: values, ids remembered, epoch and writer."""
    return (
        read(path, "SELECT object, key, value FROM kv ORDER BY object, key"),
        read(path, "SELECT op_id, object, request, result FROM applied_ids ORDER BY seq"),
        read(path, "SELECT key, value FROM meta ORDER BY key"),
    )


def errors(outcomes: tuple[Outcome, ...]) -> list[type[BaseException] | None]:
    return [None if o.error is None else type(o.error) for o in outcomes]


def test_a_store_replaced_by_a_newer_one_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "host.sqlite3"
    first = SqliteStore(path, HOST)
    first.write([("A", "value", "1")])
    second = SqliteStore(path, HOST)  # a restarted host: it takes the file over
    assert (first.epoch, second.epoch) == ("1", "2")
    before = snapshot(path)

    with pytest.raises(Fenced, match=r"taken over by a newer writer \(epoch 2, ours 1\)"):
        first.write(
            [("A", "value", "5"), ("B", "value", "1")],
            applied=[("A", "op-1", APPLIED)],
        )
    assert snapshot(path) == before
    with pytest.raises(Fenced):
        first.check_owner()
    with pytest.raises(Fenced):
        first.forget_applied_before(float("inf"))  # the hourly sweep is fenced too
    assert snapshot(path) == before

    second.write([("A", "value", "2")], applied=[("A", "op-2", APPLIED)])
    second.check_owner()
    assert read(path, "SELECT object, value FROM kv") == [("A", "2")]
    assert read(path, "SELECT op_id, object FROM applied_ids") == [("op-2", "A")]
    assert read(path, "SELECT value FROM meta WHERE key = 'epoch'") == [("2",)]
    first.close()
    second.close()


def test_a_second_host_on_a_held_file_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    first = ObjectHost(Counter, HOST, str(tmp_path), LAYOUT)
    for _ in range(3):
        first.call("A", "increment", 1)
    path = StorageDir(tmp_path).host_path(HOST)
    before = snapshot(path)
    assert before[2][0] == ("epoch", "1")

    second = ObjectHost(Counter, HOST, str(tmp_path), LAYOUT)
    # It waits LOCK_WAIT (5 s) for a dying predecessor to let go, then gives up.
    outcomes = second.apply(
        [Operation("A", "increment", (1,), "op-second"), Operation("A", "get_counter_value")]
    )
    assert errors(outcomes) == [StorageBusy, StorageBusy]
    assert snapshot(path) == before  # not taken over, nothing written
    assert first.call("A", "increment", 1) == 4  # the first goes on unhindered

    first.close()
    assert second.call("A", "get_counter_value") == 4
    assert second.call("A", "increment", 1, op_id="op-second") == 5
    assert read(path, "SELECT value FROM meta WHERE key = 'epoch'") == [("2",)]
    second.close()


def test_a_host_taken_over_behind_its_back_fails_a_write_batch_and_then_everything(
    tmp_path: Path,
) -> None:
    host = ObjectHost(Counter, HOST, str(tmp_path), LAYOUT)
    assert host.call("A", "increment", 1) == 1
    path = StorageDir(tmp_path).host_path(HOST)
    # A second writer that never saw the host's lock (a network filesystem without locks).
    usurper = SqliteStore(path, HOST)
    before = snapshot(path)

    outcomes = host.apply(
        [
            Operation("A", "increment", (1,), "op-1"),
            Operation("B", "increment", (1,), "op-2"),
            Operation("A", "get_counter_value"),
        ]
    )
    assert errors(outcomes) == [Fenced, Fenced, Fenced]
    assert snapshot(path) == before
    assert isinstance(host.fenced, Fenced)
    _refuses_everything_without_touching_the_file(host, tmp_path)
    usurper.close()


def test_a_host_taken_over_behind_its_back_fails_a_read_batch_and_then_everything(
    tmp_path: Path,
) -> None:
    host = ObjectHost(Counter, HOST, str(tmp_path), LAYOUT)
    assert host.call("A", "increment", 1) == 1
    path = StorageDir(tmp_path).host_path(HOST)
    usurper = SqliteStore(path, HOST)
    usurper.write([("A", "value", "7")])
    before = snapshot(path)

    # "A" is in the host's memory as 1; the file says 7. Not a stale 1: Fenced.
    outcomes = host.apply(
        [Operation("A", "get_counter_value"), Operation("B", "get_counter_value")]
    )
    assert errors(outcomes) == [Fenced, Fenced]
    assert snapshot(path) == before
    assert isinstance(host.fenced, Fenced)
    _refuses_everything_without_touching_the_file(host, tmp_path)
    usurper.close()


def _refuses_everything_without_touching_the_file(host: ObjectHost, storage: Path) -> None:
    # With its storage dir gone, a host that opened anything would fail otherwise (or make the
    # dir again): a fenced one answers Fenced and leaves the disk alone.
    moved = storage.with_name(storage.name + "-moved")
    storage.rename(moved)
    outcomes = host.apply(
        [
            Operation("A", "increment", (1,), "op-3"),
            Operation("C", "increment", (1,)),
            Operation("A", "get_counter_value"),
        ]
    )
    assert errors(outcomes) == [Fenced, Fenced, Fenced]
    with pytest.raises(Fenced):
        host.call("A", "get_counter_value")
    assert host.forget_expired_ids() == 0
    assert not storage.exists()
    moved.rename(storage)
