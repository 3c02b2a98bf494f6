"""Listing from storage, without Ray: every host's counters in code point order, a page at a
time, on each backend (PostgreSQL's test databases sort text as people read it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from counters.counter import Counter
from counters.errors import InvalidInput
from counters.host import ObjectHost
from counters.listing import MAX_LIMIT, Page, list_page, page_of
from counters.operations import Operation
from counters.placement import Layout, Placement
from counters.storage import Storage, StorageDir
from counters.storage.interface import SCAN_BATCH
from counters.storage.postgres import PostgresStorage
from counters.testing import PostgresServer

NAMES = ["a", "b", "B", "é", "Z", "f", "user:1", "user:2", "user:10", "user:é", "users", "ü"]


@pytest.fixture(
    params=[Layout("Counter", Placement.SHARDED, 3), Layout("Counter", Placement.PER_NAME, 1)]
)
def layout(request: pytest.FixtureRequest) -> Layout:
    return request.param  # type: ignore[no-any-return]


class Hosts:
    """The hosts of a layout, made on demand, as the runtime would."""

    def __init__(self, storage: Storage, layout: Layout) -> None:
        self.storage = storage
        self.layout = layout
        self.hosts: dict[str, ObjectHost] = {}

    def call(self, name: str, method: str, *args: object) -> object:
        host_name = self.layout.host_for(name)
        host = self.hosts.get(host_name)
        if host is None:
            host = self.hosts[host_name] = ObjectHost(Counter, host_name, self.storage, self.layout)
        return host.call(name, method, *args, op_id=f"{method}-{name}-{args}")

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()


@pytest.fixture
def hosts(storage: Storage, layout: Layout) -> Iterator[Hosts]:
    made = Hosts(storage, layout)
    yield made
    made.close()


def every_page(storage: Storage, prefix: str = "", limit: int = 2) -> list[Page]:
    pages = [list_page(storage, Counter, prefix, "", limit)]
    while pages[-1].next is not None:
        pages.append(list_page(storage, Counter, prefix, pages[-1].next, limit))
    return pages


def test_every_counter_in_code_point_order_a_page_at_a_time(hosts: Hosts) -> None:
    for number, name in enumerate(NAMES, start=1):
        hosts.call(name, "increment", number)
    hosts.call("b", "increment", 100)  # version 2
    pages = every_page(hosts.storage, limit=5)
    listed = [item for page in pages for item in page.items]
    expected = {name: [number, 1] for number, name in enumerate(NAMES, start=1)}
    expected["b"] = [102, 2]
    assert listed == sorted(expected.items())  # code point order: B, Z, a, b, f, ... é, ü
    assert [len(page.items) for page in pages] == [5, 5, 2]
    assert [page.next for page in pages] == [pages[0].items[-1][0], pages[1].items[-1][0], None]


def test_a_prefix_lists_its_names_only(hosts: Hosts) -> None:
    for name in NAMES:
        hosts.call(name, "increment", 1)
    listed = [name for page in every_page(hosts.storage, "user:") for name, _ in page.items]
    assert listed == ["user:1", "user:10", "user:2", "user:é"]
    assert every_page(hosts.storage, "nobody") == [Page([], None)]


def test_counters_never_changed_or_deleted_are_not_listed(hosts: Hosts) -> None:
    for name in ("gone", "kept", "zeroed", "read-only"):
        hosts.call(name, "read")  # reading creates nothing
    for name in ("gone", "kept", "zeroed"):
        hosts.call(name, "increment", 3)
    hosts.call("gone", "delete")
    hosts.call("zeroed", "decrement", 3)  # at 0, but changed: it exists
    assert every_page(hosts.storage, limit=1) == [
        Page([("kept", [3, 1])], "kept"),
        Page([("zeroed", [0, 2])], None),
    ]
    hosts.call("gone", "increment", 1)  # made again: listed again, its version goes on
    assert list_page(hosts.storage, Counter).items[0] == ("gone", [1, 3])


def test_a_page_ends_exactly_at_the_last_counter(hosts: Hosts) -> None:
    for name in ("x1", "x2", "x3", "x4"):
        hosts.call(name, "increment", 1)
    assert [page.next for page in every_page(hosts.storage, limit=2)] == ["x2", None]
    assert list_page(hosts.storage, Counter, limit=4).next is None
    assert list_page(hosts.storage, Counter, limit=3).next == "x3"


def test_after_any_name_starts_the_listing_there(hosts: Hosts) -> None:
    for name in ("m", "n", "o"):
        hosts.call(name, "increment", 1)
    page = list_page(hosts.storage, Counter, "", "mm")  # not a stored name: after it still
    assert [name for name, _ in page.items] == ["n", "o"]


def test_more_rows_than_a_query_reads(storage: Storage) -> None:
    layout = Layout("Counter", Placement.SHARDED, 1)
    host = ObjectHost(Counter, layout.host_for("n"), storage, layout)
    try:
        names = [f"n{i:05d}" for i in range(SCAN_BATCH * 2 + 7)]
        host.apply([Operation(name, "increment", (1,), f"id-{name}") for name in names])
        host.call("n00003", "delete")
        listed = [item for page in every_page(storage, "n", limit=MAX_LIMIT) for item in page.items]
        assert [name for name, _ in listed] == [n for n in names if n != "n00003"]
    finally:
        host.close()


def test_listing_reads_what_is_committed_while_hosts_run_and_after(hosts: Hosts) -> None:
    hosts.call("A", "increment", 5)
    assert list_page(hosts.storage, Counter).items == [("A", [5, 1])]
    hosts.close()  # no host left: SQLite's files are closed, their WAL folded in
    assert list_page(hosts.storage, Counter).items == [("A", [5, 1])]


def test_empty_storage_lists_nothing(storage: Storage, tmp_path: Path) -> None:
    assert list_page(storage, Counter) == Page([], None)
    assert list_page(StorageDir(tmp_path / "never-made"), Counter) == Page([], None)


@pytest.mark.parametrize(
    ("prefix", "after", "limit"),
    [("a\x00", "", 10), ("", "b\n", 10), ("", "", 0), ("", "", MAX_LIMIT + 1), ("x" * 1025, "", 1)],
)
def test_bad_listing_parameters_are_refused(
    tmp_path: Path, prefix: str, after: str, limit: int
) -> None:
    with pytest.raises(InvalidInput):
        list_page(StorageDir(tmp_path), Counter, prefix, after, limit)


def test_a_sql_ascii_database_keeps_and_lists_names_of_any_script(
    postgres_server: PostgresServer,
) -> None:
    name = f"sql_ascii_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as db:
        db.execute(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
    storage = PostgresStorage(postgres_server.dsn(name))
    layout = Layout("Counter", Placement.SHARDED, 1)
    host = ObjectHost(Counter, layout.host_for("x"), storage, layout)
    host.call("café", "increment", 5, op_id="one")
    host.call("名前", "increment", 2, op_id="two")
    host.close()
    again = ObjectHost(Counter, layout.host_for("x"), storage, layout)  # from the database
    try:
        assert again.call("café", "read") == [5, 1]
        assert again.call("café", "increment", 5, op_id="one") == 5  # its id found: once
        assert list_page(storage, Counter) == Page([("café", [5, 1]), ("名前", [2, 1])], None)
    finally:
        again.close()


def test_a_page_reads_a_bounded_number_of_deleted_counters() -> None:
    stored = [(f"d{i:03d}", {"count": "[null,2]"}) for i in range(25)]  # deleted
    stored.append(("live", {"count": "[4,1]"}))
    first = page_of(iter(stored), Counter, limit=10, max_read=10)
    assert first == Page([], "d009")  # short, even empty: the cursor goes on
    pages = [first]
    while pages[-1].next is not None:
        after = pages[-1].next
        rest = iter([item for item in stored if item[0] > after])
        pages.append(page_of(rest, Counter, limit=10, max_read=10))
    assert [item for page in pages for item in page.items] == [("live", [4, 1])]


def test_a_per_name_scan_holds_no_file_open(tmp_path: Path) -> None:
    layout = Layout("Counter", Placement.PER_NAME, 1)
    storage = StorageDir(tmp_path / "storage")
    for i in range(200):  # a file per counter
        host = ObjectHost(Counter, layout.host_for(f"n{i:03d}"), storage, layout)
        host.call(f"n{i:03d}", "increment", 1, op_id="x")
        host.close()
    before = len(os.listdir("/proc/self/fd"))
    objects = storage.scan("", "")
    assert next(objects)[0] == "n000"  # every file read once, to merge them
    assert len(os.listdir("/proc/self/fd")) - before < 5
    objects.close()
