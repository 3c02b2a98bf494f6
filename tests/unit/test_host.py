"""The host without Ray: batches, group commit, failures alone, reload from disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from counters.applied_log import Retention
from counters.counter import Counter
from counters.errors import (
    CountersError,
    CountOutOfRange,
    IdempotencyKeyReused,
    InvalidAmount,
    InvalidInput,
    InvalidName,
    LayoutMismatch,
    StorageFailed,
    StorageFull,
    UnknownMethod,
)
from counters.host import HostConfig, ObjectHost
from counters.operations import Operation, Outcome
from counters.placement import Layout, Placement
from counters.storage_dir import StorageDir
from counters.validation import INT64_MAX

LAYOUT = Layout("Counter", Placement.SHARDED, 2)


def make_host(storage_dir: Path, layout: Layout = LAYOUT) -> ObjectHost:
    return ObjectHost(Counter, "Counter.shard-0-of-2", str(storage_dir), layout)


def values(outcomes: tuple[Outcome, ...]) -> list[object]:
    return [o.value if o.error is None else type(o.error) for o in outcomes]


def test_a_batch_runs_in_order_and_commits_once(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    outcomes = host.apply(
        [
            Operation("A", "increment", (1,)),
            Operation("B", "increment", (10,)),
            Operation("A", "increment", (2,)),
            Operation("A", "get_counter_value"),
            Operation("B", "decrement", (1,)),
        ]
    )
    assert values(outcomes) == [1, 10, 3, 3, 9]
    assert host.stats() == {"batches": 1, "operations": 5, "objects": 2, "passivated": 0}
    # A new host on the same files (an actor restarted after a crash) sees it all.
    again = make_host(tmp_path)
    assert values(again.apply([Operation("A", "get_counter_value")])) == [3]
    assert again.call("B", "get_counter_value") == 9


def test_a_failing_operation_fails_alone(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    host.call("A", "increment", INT64_MAX - 1)
    outcomes = host.apply(
        [
            Operation("A", "increment", (1,)),  # reaches INT64_MAX
            Operation("A", "increment", (1,)),  # would overflow: fails, changes nothing
            Operation("B", "increment", ("x",)),
            Operation("B", "increment", (1, 2)),
            Operation("B", "reset"),
            Operation("B", "__init__"),
            Operation("", "increment", (1,)),
            Operation("B", "increment", (4,)),
        ]
    )
    assert values(outcomes) == [
        INT64_MAX,
        CountOutOfRange,
        InvalidAmount,
        InvalidInput,
        UnknownMethod,
        UnknownMethod,
        InvalidName,
        4,
    ]
    again = make_host(tmp_path)
    assert again.call("A", "get_counter_value") == INT64_MAX
    assert again.call("B", "get_counter_value") == 4


def test_errors_from_call_are_raised(tmp_path: Path) -> None:
    with pytest.raises(CountOutOfRange):
        make_host(tmp_path).call("A", "decrement", -INT64_MAX - 1)


class Broken:
    """An object class with a bug, to show a host survives it."""

    def __init__(self, storage: object) -> None:
        self.storage = storage

    def explode(self) -> None:
        self.storage.put("value", 1)  # type: ignore[attr-defined]
        raise ZeroDivisionError("boom")

    def value(self) -> object:
        return self.storage.get("value")  # type: ignore[attr-defined]


def test_a_bug_in_an_object_fails_the_operation_not_the_host(tmp_path: Path) -> None:
    host = ObjectHost(
        Broken, "Broken.shard-0-of-1", str(tmp_path), Layout("Broken", Placement.SHARDED, 1)
    )
    outcomes = host.apply([Operation("x", "explode"), Operation("x", "value")])
    assert isinstance(outcomes[0].error, CountersError)
    assert "ZeroDivisionError: boom" in outcomes[0].error.message
    assert values(outcomes)[1] is None


def test_a_failed_commit_acknowledges_nothing_and_recovers(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    host.call("A", "increment", 5)
    store = host._store
    assert store is not None
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")
    batch = [Operation(f"n{i}", "increment", (1,)) for i in range(3000)]
    batch += [Operation("A", "increment", (1,)), Operation("A", "get_counter_value")]
    outcomes = host.apply(batch)
    assert {type(o.error) for o in outcomes} == {StorageFull}
    # Memory forgot the failed batch as well as the disk did.
    assert host.call("A", "get_counter_value") == 5
    store._db.execute("PRAGMA max_page_count=1073741823")
    assert values(host.apply(batch))[-2:] == [6, 6]
    assert make_host(tmp_path).call("n2999", "get_counter_value") == 1


def test_unusable_storage_fails_operations_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the storage dir should be")
    host = make_host(blocker)
    outcomes = host.apply([Operation("A", "increment", (1,))])
    assert isinstance(outcomes[0].error, StorageFailed)
    blocker.unlink()
    assert host.call("A", "increment", 1) == 1


def test_a_mismatched_layout_is_refused(tmp_path: Path) -> None:
    make_host(tmp_path).call("A", "increment", 1)
    other = make_host(tmp_path, Layout("Counter", Placement.SHARDED, 3))
    outcomes = other.apply([Operation("A", "get_counter_value")])
    assert isinstance(outcomes[0].error, LayoutMismatch)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_operation_id_is_applied_once(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    assert host.call("A", "increment", 5, op_id="k1") == 5
    assert host.call("A", "increment", 5, op_id="k1") == 5  # the first answer, no second effect
    outcomes = host.apply(
        [
            Operation("A", "increment", (1,), "k2"),
            Operation("A", "increment", (1,), "k2"),  # repeated within one batch
            Operation("A", "increment", (5,), "k1"),
            Operation("B", "increment", (5,), "k1"),  # ids are per object
        ]
    )
    assert values(outcomes) == [6, 6, 5, 5]
    # The ids are on disk with the change: a restarted host still knows them.
    again = make_host(tmp_path)
    assert again.call("A", "increment", 1, op_id="k2") == 6
    assert again.call("A", "get_counter_value") == 6
    with pytest.raises(IdempotencyKeyReused, match=r"increment\(1\)"):
        again.call("A", "decrement", 1, op_id="k2")
    assert again.call("A", "get_counter_value") == 6


def test_a_failed_operation_does_not_use_up_its_id(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    host.call("A", "increment", INT64_MAX)
    with pytest.raises(CountOutOfRange):
        host.call("A", "increment", 1, op_id="k")
    host.call("A", "decrement", 1)
    assert host.call("A", "increment", 1, op_id="k") == INT64_MAX


def test_ids_expire_after_the_window_and_beyond_the_bound(tmp_path: Path) -> None:
    clock = Clock()
    retention = Retention(window=3600, max_per_object=3, floor=10)
    host = ObjectHost(Counter, "h", str(tmp_path), LAYOUT, HostConfig(retention=retention), clock)
    for i in range(5):
        host.call("A", "increment", 1, op_id=f"k{i}")  # all within the floor: all kept
    assert len(host._objects["A"].applied) == 5
    clock.now += 11
    host.call("A", "increment", 1, op_id="k5")
    assert len(host._objects["A"].applied) == 3  # past the floor, the bound holds again
    assert host.call("A", "increment", 1, op_id="k5") == 6
    assert host.call("A", "increment", 1, op_id="k0") == 7  # forgotten: applied anew
    clock.now += 3601
    assert host.forget_expired_ids() >= 3
    with sqlite3.connect(StorageDir(tmp_path).host_path("h")) as db:
        assert db.execute("SELECT count(*) FROM applied").fetchone() == (0,)


def test_idle_objects_are_passivated_and_reload(tmp_path: Path) -> None:
    clock = Clock()
    host = ObjectHost(
        Counter, "h", str(tmp_path), LAYOUT, HostConfig(idle_timeout=60, max_objects=3), clock
    )
    for name in "ABCDE":
        host.call(name, "increment", 1, op_id=f"{name}-1")
    assert host.stats()["objects"] == 3  # the cap: least recently used dropped
    clock.now += 30
    host.call("E", "increment", 1)
    clock.now += 31
    assert host.sweep() == 2  # C and D idle past 60 s; E was used 31 s ago
    assert host.stats() == {"batches": 6, "operations": 6, "objects": 1, "passivated": 4}
    # Passivated objects come back from disk, with their ids.
    assert host.call("A", "increment", 1, op_id="A-1") == 1
    assert host.call("A", "increment", 1) == 2
    assert host.idle_for() == 0


def test_malformed_operations_from_bare_ray_fail_alone(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    outcomes = host.apply(
        [
            Operation(["not", "a", "name"], "increment", (1,)),  # type: ignore[arg-type]
            Operation("A", 7, (1,)),  # type: ignore[arg-type]
            Operation("A", "increment", [2]),  # type: ignore[arg-type]
        ]
    )
    assert values(outcomes) == [InvalidName, UnknownMethod, 2]
