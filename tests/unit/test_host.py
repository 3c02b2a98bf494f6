"""The host without Ray: batches, group commit, failures alone, reload from disk.

Tests that take `storage` run on each backend (a SQLite storage dir, a real PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from counters.storage import SqliteStore, Storage
from counters.storage.storage_dir import StorageDir
from counters.validation import INT64_MAX

LAYOUT = Layout("Counter", Placement.SHARDED, 2)


_made: list[ObjectHost] = []


def make_host(
    storage: Storage | Path,
    layout: Layout = LAYOUT,
    name: str = "Counter.shard-0-of-2",
    **options: Any,
) -> ObjectHost:
    where = str(storage) if isinstance(storage, Path) else storage
    host = ObjectHost(Counter, name, where, layout, **options)
    _made.append(host)
    return host


@pytest.fixture(autouse=True)
def _close_hosts() -> Iterator[None]:
    """Every host made closed after its test, as its process would: connections and locks."""
    yield
    while _made:
        _made.pop().close()


def values(outcomes: tuple[Outcome, ...]) -> list[object]:
    return [o.value if o.error is None else type(o.error) for o in outcomes]


def test_a_batch_runs_in_order_and_commits_once(storage: Storage) -> None:
    host = make_host(storage)
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
    host.close()  # its process gone, as after a crash
    again = make_host(storage)
    assert values(again.apply([Operation("A", "get_counter_value")])) == [3]
    assert again.call("B", "get_counter_value") == 9


def test_a_failing_operation_fails_alone(storage: Storage) -> None:
    host = make_host(storage)
    host.call("A", "increment", INT64_MAX - 1)
    outcomes = host.apply(
        [
            Operation("A", "increment", (1,)),  # reaches INT64_MAX
            Operation("A", "increment", (1,)),  # would overflow: fails, changes nothing
            Operation("B", "increment", ("x",)),
            Operation("B", "increment", (1, 2, 3, 4, 5)),
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
    host.close()  # its process gone, as after a crash
    again = make_host(storage)
    assert again.call("A", "get_counter_value") == INT64_MAX
    assert again.call("B", "get_counter_value") == 4


def test_errors_from_call_are_raised(storage: Storage) -> None:
    with pytest.raises(CountOutOfRange):
        make_host(storage).call("A", "decrement", -INT64_MAX - 1)


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


def full_file(host: ObjectHost) -> SqliteStore:
    """The host's SQLite file, kept from growing: a big enough commit fails, as on a full disk."""
    store = host._store
    assert isinstance(store, SqliteStore)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")
    return store


def test_a_failed_commit_acknowledges_nothing_and_recovers(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    host.call("A", "increment", 5)
    store = full_file(host)
    batch = [Operation(f"n{i}", "increment", (1,)) for i in range(3000)]
    batch += [Operation("A", "increment", (1,)), Operation("A", "get_counter_value")]
    outcomes = host.apply(batch)
    assert {type(o.error) for o in outcomes} == {StorageFull}
    # Memory forgot the failed batch as well as the disk did.
    assert host.call("A", "get_counter_value") == 5
    store._db.execute("PRAGMA max_page_count=1073741823")
    assert values(host.apply(batch))[-2:] == [6, 6]
    host.close()
    assert make_host(tmp_path).call("n2999", "get_counter_value") == 1


def test_unusable_storage_fails_operations_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("a file where the storage dir should be")
    host = make_host(blocker)
    outcomes = host.apply([Operation("A", "increment", (1,))])
    assert isinstance(outcomes[0].error, StorageFailed)
    blocker.unlink()
    assert host.call("A", "increment", 1) == 1


def test_a_mismatched_layout_is_refused(storage: Storage) -> None:
    make_host(storage).call("A", "increment", 1)
    other = make_host(storage, Layout("Counter", Placement.SHARDED, 3))
    outcomes = other.apply([Operation("A", "get_counter_value")])
    assert isinstance(outcomes[0].error, LayoutMismatch)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_operation_id_is_applied_once(storage: Storage) -> None:
    host = make_host(storage)
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
    host.close()  # its process gone, as after a crash
    again = make_host(storage)
    assert again.call("A", "increment", 1, op_id="k2") == 6
    assert again.call("A", "get_counter_value") == 6
    with pytest.raises(IdempotencyKeyReused, match=r"increment\(1\)"):
        again.call("A", "decrement", 1, op_id="k2")
    assert again.call("A", "get_counter_value") == 6


def test_an_id_is_matched_to_its_request_by_type_too(storage: Storage) -> None:
    host = make_host(storage)
    assert host.call("A", "increment", 1, op_id="k") == 1
    for amount in (True, 1.0):  # equal to 1 in Python, and other requests all the same
        with pytest.raises(IdempotencyKeyReused, match=r"increment\(1\)"):
            host.call("A", "increment", amount, op_id="k")
    assert host.call("A", "increment", 1, op_id="k") == 1
    assert host.call("A", "increment", 1, op_id="k2") == 2
    assert host.call("A", "get_counter_value") == 2


def test_a_failed_operation_does_not_use_up_its_id(storage: Storage) -> None:
    host = make_host(storage)
    host.call("A", "increment", INT64_MAX)
    with pytest.raises(CountOutOfRange):
        host.call("A", "increment", 1, op_id="k")
    host.call("A", "decrement", 1)
    assert host.call("A", "increment", 1, op_id="k") == INT64_MAX


def test_a_resent_operation_that_would_fail_now_gets_its_first_answer(storage: Storage) -> None:
    host = make_host(storage)
    host.call("A", "increment", INT64_MAX - 1)
    assert host.call("A", "increment", 1, op_id="k") == INT64_MAX
    # Run again, it would overflow; but it was applied, and its first answer stands.
    assert host.call("A", "increment", 1, op_id="k") == INT64_MAX
    with pytest.raises(IdempotencyKeyReused):
        host.call("A", "increment", 2, op_id="k")
    assert host.call("A", "get_counter_value") == INT64_MAX


def test_resent_operations_among_new_ones_are_answered_and_new_ones_applied_once(
    storage: Storage,
) -> None:
    host = make_host(storage)
    first = [Operation("A", "increment", (1,), "k1"), Operation("B", "increment", (10,), "k2")]
    assert values(host.apply(first)) == [1, 10]
    outcomes = host.apply(
        [
            Operation("A", "increment", (2,), "k3"),  # new
            Operation("A", "increment", (1,), "k1"),  # sent again: its first answer
            Operation("B", "increment", (10,), "k2"),  # sent again
            Operation("B", "increment", (5,), "k4"),  # new
            Operation("A", "increment", (2,), "k3"),  # new, twice in the batch
            Operation("A", "decrement", (1,), "k1"),  # the id of another request: refused
        ]
    )
    assert values(outcomes) == [3, 1, 10, 15, 3, IdempotencyKeyReused]
    assert host.stats()["batches"] == 2  # the batch ran again inside, and counts once
    host.close()  # what storage holds: each new operation once
    again = make_host(storage)
    assert again.call("A", "get_counter_value") == 3
    assert again.call("B", "get_counter_value") == 15


def test_a_malformed_operation_with_an_applied_id_fails_alone_and_keeps_nothing(
    storage: Storage,
) -> None:
    """A bare Ray caller's malformed operations, one of them with an id already applied, in a
    batch with a good one: they fail alone, and the good one is applied once, resent or not."""
    host = make_host(storage)
    assert host.call("A", "increment", 1, op_id="k0") == 1
    batch = [
        Operation("A", "increment", (10,), "n1"),
        Operation("A", "nosuch", None, "k0"),  # type: ignore[arg-type]
        Operation("A", "increment", None, "k0"),  # type: ignore[arg-type]
        Operation("A", "increment", (1,), "k\x00"),
        Operation("A", "increment", (1,), "\ud800"),
        Operation("A", "increment", (1,), "x" * 256),
    ]
    assert values(host.apply(batch)) == [
        11,
        UnknownMethod,
        InvalidInput,
        InvalidInput,
        InvalidInput,
        InvalidInput,
    ]
    assert host.call("A", "increment", 10, op_id="n1") == 11  # sent again: answered
    assert host.call("A", "increment", 100, op_id="n2") == 111
    host.close()
    assert make_host(storage).call("A", "get_counter_value") == 111


def applied_on_disk(storage_dir: Path, host: str = "h") -> set[str]:
    with sqlite3.connect(StorageDir(storage_dir).host_path(host)) as db:
        return {op_id for (op_id,) in db.execute("SELECT op_id FROM applied_ids")}


def test_ids_are_forgotten_oldest_first_beyond_the_bound_and_after_the_window(
    tmp_path: Path,
) -> None:
    clock = Clock()
    retention = Retention(window=3600, max_ids=5, floor=10)
    host = ObjectHost(Counter, "h", str(tmp_path), LAYOUT, HostConfig(retention=retention), clock)
    for i in range(8):
        host.call("AB"[i % 2], "increment", 1, op_id=f"k{i}")  # all within the floor: all kept
        clock.now += 0.1
    assert applied_on_disk(tmp_path) == {f"k{i}" for i in range(8)}
    assert [host.call("AB"[i % 2], "increment", 1, op_id=f"k{i}") for i in range(8)] == [
        1, 1, 2, 2, 3, 3, 4, 4
    ]  # fmt: skip
    with pytest.raises(IdempotencyKeyReused):
        host.call("A", "decrement", 1, op_id="k0")
    clock.now += 11  # past the floor: the oldest beyond the bound go, whatever their object
    host.call("A", "increment", 1, op_id="k8")
    assert applied_on_disk(tmp_path) == {"k4", "k5", "k6", "k7", "k8"}
    assert host.call("A", "increment", 1, op_id="k8") == 5
    assert host.call("A", "increment", 1, op_id="k0") == 6  # forgotten: applied anew
    clock.now += 3601
    assert host.forget_expired_ids() == 5
    assert applied_on_disk(tmp_path) == set()


def test_a_hot_object_knows_every_id_in_memory_or_not(storage: Storage) -> None:
    clock = Clock()
    host = make_host(storage, name="h", config=HostConfig(idle_timeout=5), clock=clock)
    for first in range(0, 1000, 20):
        batch = [Operation("hot", "increment", (1,), f"id-{i}") for i in range(first, first + 20)]
        assert values(host.apply(batch)) == list(range(first + 1, first + 21))
        clock.now += 0.01
    # Every id is known: retried, each gets its first answer and changes nothing.
    retried = host.apply([Operation("hot", "increment", (1,), f"id-{i}") for i in range(1000)])
    assert values(retried) == list(range(1, 1001))
    # Back from disk (passivated, then called), it still knows them.
    clock.now += 6
    assert host.sweep() == 1
    assert host.call("hot", "increment", 1, op_id="id-3") == 4
    assert host.call("hot", "get_counter_value") == 1000


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


def test_malformed_operations_from_bare_ray_fail_alone(storage: Storage) -> None:
    host = make_host(storage)
    outcomes = host.apply(
        [
            Operation(["not", "a", "name"], "increment", (1,)),  # type: ignore[arg-type]
            Operation("A", 7, (1,)),  # type: ignore[arg-type]
            Operation("A", "increment", [2]),  # type: ignore[arg-type]
            Operation("A", "increment", (1,), b"id"),  # type: ignore[arg-type]
        ]
    )
    assert values(outcomes) == [InvalidName, UnknownMethod, 2, InvalidInput]


Step = tuple[str, int]


@given(
    st.lists(
        st.tuples(st.sampled_from(["new", "retry", "wait", "passivate"]), st.integers(0, 30)),
        max_size=60,
    )
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize(
    "retention",
    [Retention(window=100, max_ids=4, floor=10), Retention(window=100, max_ids=8, floor=10)],
    ids=["4-ids", "8-ids"],
)
def test_an_id_is_never_applied_twice_while_it_must_be_remembered(
    retention: Retention, steps: list[Step]
) -> None:
    """Against a model: every retry of an id the retention promises is answered, not applied."""
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        config = HostConfig(retention=retention, idle_timeout=1)
        host = ObjectHost(Counter, "h", tmp, LAYOUT, config, clock)
        applied: dict[str, tuple[str, float, int]] = {}  # id -> (object, at, first answer)
        counts = {"A": 0, "B": 0}
        # Then ids that only the bound protects: made, then left past the floor.
        tail = [("new", 2), ("wait", 1)] * 8 + [("wait", 30), ("new", 0), ("wait", 1), ("new", 1)]
        tail.append(("retry", 0))
        for kind, n in steps + tail:
            if kind == "new":
                batch = [(f"id-{len(applied) + i}", "AB"[(n + i) % 2]) for i in range(n % 3 + 1)]
                outcomes = host.apply([Operation(o, "increment", (1,), i) for i, o in batch])
                for (op_id, name), outcome in zip(batch, outcomes, strict=True):
                    counts[name] += 1
                    assert outcome.value == counts[name]
                    applied[op_id] = (name, clock.now, outcome.value)
            elif kind == "retry" and applied:
                # Sent again in one batch, with a new one among them (n picks where).
                remembered = [i for i in applied if _must_remember(i, applied, clock(), retention)]
                new_id, new_name = f"id-{len(applied)}", "AB"[n % 2]
                batch = [(i, applied[i][0]) for i in remembered]
                batch.insert(n % (len(batch) + 1), (new_id, new_name))
                outcomes = host.apply([Operation(o, "increment", (1,), i) for i, o in batch])
                counts[new_name] += 1
                answers = {i: o.value for (i, _), o in zip(batch, outcomes, strict=True)}
                assert answers == {i: applied[i][2] for i in remembered} | {
                    new_id: counts[new_name]
                }
                applied[new_id] = (new_name, clock.now, counts[new_name])
            elif kind == "wait":
                clock.now += n / 2
            elif kind == "passivate":
                clock.now += 1.5
                host.sweep()
        for name, count in counts.items():
            assert host.call(name, "get_counter_value") == count


def _must_remember(
    op_id: str, applied: dict[str, tuple[str, float, int]], now: float, retention: Retention
) -> bool:
    _, at, _ = applied[op_id]
    if now - at <= retention.floor:
        return True
    # Among the host's newest `max_ids`, counting ids of the same age as newer.
    newer = sum(1 for _, other_at, _ in applied.values() if other_at >= at)
    return newer <= retention.max_ids and now - at <= retention.window


def test_watchers_are_told_each_committed_change_of_a_watched_name(storage: Storage) -> None:
    host = make_host(storage)
    incarnation, last = host.feed.watch(["A"])
    host.apply(
        [
            Operation("A", "increment", (1,), "a1"),
            Operation("B", "increment", (1,), "b1"),  # not watched
            Operation("A", "read"),  # no change
            Operation("A", "decrement", (5,), "a2"),
            Operation("A", "increment", (1,), "a1"),  # sent again: applied once
            Operation("A", "increment", (9, None, 4), "a3"),  # out of bounds: no change
            Operation("A", "set", (7,), "a4"),
        ]
    )
    host.call("A", "delete", op_id="a5")
    changes = [("A", [1, 1]), ("A", [-4, 2]), ("A", [7, 3]), ("A", [0, 4])]
    assert host.feed.wait(incarnation, last, ["A"], 0) == (incarnation, 4, changes)


def test_a_batch_that_was_not_stored_tells_watchers_nothing(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    incarnation, _ = host.feed.watch(["A"])
    host.call("A", "increment", 5)
    full_file(host)
    batch = [Operation(f"n{i}", "increment", (1,)) for i in range(3000)]
    outcomes = host.apply([*batch, Operation("A", "increment", (1,))])
    assert {type(o.error) for o in outcomes} == {StorageFull}
    assert host.feed.wait(incarnation, 0, ["A"], 0) == (incarnation, 1, [("A", [5, 1])])
