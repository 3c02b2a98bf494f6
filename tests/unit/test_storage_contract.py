"""One contract, every backend: the same tests on real SQLite files and a real PostgreSQL.

What a host relies on (`counters/storage/interface.py`): a write is all or nothing and durable
before it returns, operation ids are recorded with their change, a store taken over by a newer
one stores nothing (Fenced), the layout and the owning service are checked, ids are forgotten
oldest first and never before the time given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from counters.applied_log import AppliedOp
from counters.errors import Fenced, LayoutMismatch, StorageDirInUse
from counters.object_storage import DELETED
from counters.placement import Layout, Placement
from counters.storage import (
    HostStore,
    IdsAlreadyRecorded,
    ServiceId,
    SqliteStore,
    Storage,
    StorageDir,
)

LAYOUT = Layout("Counter", Placement.SHARDED, 2)
HOST = "Counter.shard-0-of-2"
SERVICE = ServiceId("service-1", "the first service")
OTHER = ServiceId("service-2", "another service")


@dataclass
class Backend:
    storage: Storage
    # Open a host's data again bypassing every lock, as a store on a node cut off from the
    # others (or a network filesystem without locks) could: only the epoch stands in its way.
    behind_its_back: Callable[[str], HostStore]


@pytest.fixture
def backend(storage: Storage) -> Backend:
    if isinstance(storage, StorageDir):
        directory = storage

        def sqlite_behind(host: str) -> HostStore:
            return SqliteStore(directory.host_path(host), host)

        return Backend(directory, sqlite_behind)
    return Backend(storage, lambda host: storage.open_host(host, LAYOUT, SERVICE))


def op(at: float, request: str = "increment(1)", result: str = "1") -> AppliedOp:
    return AppliedOp(at, request, result)


def test_a_write_is_there_for_the_next_owner(backend: Backend) -> None:
    store = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    store.write([("A", "value", "3"), ("B", "value", "-1"), ("A", "other", '"x"')])
    store.write([("A", "other", DELETED), ("B", "value", "2")])
    first_epoch = store.epoch
    store.close()
    again = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    assert int(again.epoch) == int(first_epoch) + 1
    assert again.load("A") == {"value": "3"}
    assert again.load("B") == {"value": "2"}
    assert again.load("nobody") == {}
    again.close()


def test_ids_are_recorded_with_their_change_and_found_by_object(backend: Backend) -> None:
    store = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    store.write(
        [("A", "value", "5")],
        applied=[("A", "k1", op(10.0, "increment(5)", "5")), ("B", "k2", op(11.0))],
    )
    assert store.applied_count() == 2
    found = store.find_applied({("A", "k1"), ("B", "k1"), ("B", "k2"), ("A", "k9")})
    assert found == {("A", "k1"): op(10.0, "increment(5)", "5"), ("B", "k2"): op(11.0)}
    store.close()
    again = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    assert again.find_applied({("A", "k1")}) == {("A", "k1"): op(10.0, "increment(5)", "5")}
    assert again.applied_count() == 2
    again.close()


def test_an_id_recorded_before_is_refused_with_everything_of_its_write(backend: Backend) -> None:
    store = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    store.write([("A", "value", "1")], applied=[("A", "id-1", op(1.0))])
    with pytest.raises(IdsAlreadyRecorded):
        store.write(
            [("A", "value", "2"), ("B", "value", "5")],
            applied=[("B", "id-2", op(2.0)), ("A", "id-1", op(2.0))],
        )
    assert store.load("A") == {"value": "1"}
    assert store.load("B") == {}
    assert store.find_applied({("A", "id-1"), ("B", "id-2")}).keys() == {("A", "id-1")}
    store.write([("B", "value", "5")], applied=[("B", "id-1", op(3.0))])  # ids are per object
    assert store.applied_count() == 2
    store.close()


def test_a_store_taken_over_stores_nothing(backend: Backend) -> None:
    first = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    first.write([("A", "value", "1")], applied=[("A", "k1", op(1.0))])
    second = backend.behind_its_back(HOST)
    assert int(second.epoch) == int(first.epoch) + 1
    with pytest.raises(Fenced, match="newer writer"):
        first.write([("A", "value", "9"), ("C", "value", "1")], applied=[("A", "k2", op(2.0))])
    with pytest.raises(Fenced):
        first.check_owner()
    with pytest.raises(Fenced):
        first.forget_applied_before(float("inf"))
    assert second.load("A") == {"value": "1"}
    assert second.load("C") == {}
    assert second.find_applied({("A", "k1"), ("A", "k2")}) == {("A", "k1"): op(1.0)}
    second.write([("A", "value", "2")])
    second.check_owner()
    assert second.load("A") == {"value": "2"}
    first.close()
    second.close()


def test_ids_are_forgotten_oldest_first_and_never_after_the_time_given(
    backend: Backend,
) -> None:
    store = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    for t in range(10):
        store.write([], applied=[(f"n{t}", f"id-{t}", op(float(t)))])
    assert store.forget_applied_before(4.0) == 4
    assert store.applied_count() == 6
    wanted = {(f"n{t}", f"id-{t}") for t in range(10)}
    assert sorted(op_id for _, op_id in store.find_applied(wanted)) == [
        f"id-{t}" for t in range(4, 10)
    ]
    # At most 3 of the oldest, and none recorded at or after 100: three go.
    store.write([], applied=[("n10", "id-10", op(10.0))], forget_oldest=(3, 100.0))
    assert sorted(op_id for _, op_id in store.find_applied(wanted | {("n10", "id-10")})) == [
        "id-10",
        "id-7",
        "id-8",
        "id-9",
    ]
    # Any number, but none recorded at or after 8.5: id-7 and id-8 go.
    store.write([], forget_oldest=(100, 8.5))
    assert store.applied_count() == 2
    assert store.find_applied(wanted | {("n10", "id-10")}).keys() == {
        ("n9", "id-9"),
        ("n10", "id-10"),
    }
    store.close()


def test_forgetting_stops_at_the_first_id_too_young_whatever_comes_after(
    backend: Backend,
) -> None:
    """Oldest first: ids after one recorded past the time stay, even if their clock said
    earlier (a clock that stepped back keeps more, never less)."""
    store = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    for i, at in enumerate([1.0, 5.0, 2.0, 3.0]):
        store.write([], applied=[("A", f"id-{i}", op(at))])
    assert store.forget_applied_before(4.0) == 1
    left = store.find_applied({("A", f"id-{i}") for i in range(4)})
    assert sorted(op_id for _, op_id in left) == ["id-1", "id-2", "id-3"]
    store.close()
    # The next owner knows how old its oldest id is, and forgets from there.
    again = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    again.write([], applied=[("A", "id-4", op(9.0))], forget_oldest=(10, 8.0))
    assert again.applied_count() == 1
    assert again.find_applied({("A", f"id-{i}") for i in range(5)}).keys() == {("A", "id-4")}
    again.close()


def test_another_layout_is_refused(backend: Backend) -> None:
    backend.storage.open_host(HOST, LAYOUT, SERVICE).close()
    with pytest.raises(LayoutMismatch, match="same placement and shard count"):
        backend.storage.open_host(HOST, Layout("Counter", Placement.SHARDED, 3), SERVICE)
    assert backend.storage.recorded_shards("Counter") == 2
    assert backend.storage.recorded_shards("Other") is None


def test_another_service_is_refused_while_a_host_of_the_first_lives(backend: Backend) -> None:
    first = backend.storage.open_host(HOST, LAYOUT, SERVICE)
    with pytest.raises(StorageDirInUse, match="the first service"):
        backend.storage.open_host("Counter.shard-1-of-2", LAYOUT, OTHER)
    with pytest.raises(StorageDirInUse, match="the first service"):
        backend.storage.refuse_if_in_use(OTHER)
    backend.storage.refuse_if_in_use(SERVICE)  # its own service: fine
    first.close()
    backend.storage.refuse_if_in_use(OTHER)  # nobody holds it now
    taken = backend.storage.open_host("Counter.shard-1-of-2", LAYOUT, OTHER)
    taken.close()


def test_a_held_storage_stays_its_services_between_hosts(backend: Backend) -> None:
    release = backend.storage.hold(SERVICE)  # a gateway of the service, while it serves
    backend.storage.open_host(HOST, LAYOUT, SERVICE).close()  # no host alive now
    with pytest.raises(StorageDirInUse, match="the first service"):
        backend.storage.open_host(HOST, LAYOUT, OTHER)
    release()
    backend.storage.open_host(HOST, LAYOUT, OTHER).close()
