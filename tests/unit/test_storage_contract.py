"""One contract, every backend: the same tests on real SQLite files and a real PostgreSQL.

What a host relies on (`counters/storage/interface.py`): a write is all or nothing and durable
before it returns, operation ids are recorded with their change, a store taken over by a newer
one stores nothing (Fenced), the layout and the owning service are checked, ids are forgotten
oldest first and never before the time given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from counters.applied_log import AppliedOp
from counters.errors import Fenced, LayoutMismatch, StorageDirInUse
from counters.object_storage import DELETED
from counters.placement import Layout, Placement
from counters.storage import HostStore, ServiceId, SqliteStore, Storage, StorageDir
from counters.storage.postgres import PostgresStorage

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


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        directory = StorageDir(tmp_path / "storage")

        def sqlite_behind(host: str) -> HostStore:
            return SqliteStore(directory.host_path(host), host)

        yield Backend(directory, sqlite_behind)
    else:
        storage = PostgresStorage(request.getfixturevalue("postgres_dsn"))
        yield Backend(storage, lambda host: storage.open_host(host, LAYOUT, SERVICE))


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
