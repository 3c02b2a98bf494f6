"""What the host records, and the series' names, without Ray (a host takes any `HostMetrics`)."""

from __future__ import annotations

import re
from pathlib import Path

from counters.counter import Counter
from counters.host import HostConfig, ObjectHost
from counters.metrics import METRICS, HostMetrics, host_label
from counters.operations import Operation
from counters.placement import Layout, Placement
from counters.storage import SqliteStore
from counters.storage.storage_dir import StorageDir

SHARDED = Layout("Counter", Placement.SHARDED, 2)
PER_NAME = Layout("Counter", Placement.PER_NAME, 1)


class Recorded(HostMetrics):
    """What a host reported, in order."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, bool]] = []  # (operations, committed)
        self.objects_seen: list[tuple[int, int]] = []
        self.fences = 0

    def batch(self, operations: int, commit_seconds: float | None) -> None:
        assert commit_seconds is None or 0 <= commit_seconds < 10
        self.batches.append((operations, commit_seconds is not None))

    def objects(self, in_memory: int, passivated: int) -> None:
        self.objects_seen.append((in_memory, passivated))

    def fenced(self) -> None:
        self.fences += 1


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_host_reports_batches_commits_and_passivations(tmp_path: Path) -> None:
    recorded = Recorded()
    clock = Clock()
    config = HostConfig(idle_timeout=60, max_objects=2)
    host = ObjectHost(
        Counter, "Counter.shard-0-of-2", str(tmp_path), SHARDED, config, clock, metrics=recorded
    )
    host.apply([Operation("A", "increment", (1,), "op-1"), Operation("B", "increment", (2,))])
    host.apply([Operation("A", "get_counter_value"), Operation("B", "get_counter_value")])
    host.apply([Operation("C", "increment", (1,))])  # a third object: over the cap of two
    assert recorded.batches == [(2, True), (2, False), (1, True)]  # reads commit nothing
    assert recorded.objects_seen == [(2, 1)]
    clock.now += 61
    assert host.sweep() == 2
    assert recorded.objects_seen == [(2, 1), (0, 2)]
    assert recorded.fences == 0
    host.close()


def test_a_fenced_host_reports_it_once_and_lets_its_objects_go(tmp_path: Path) -> None:
    recorded = Recorded()
    name = "Counter.shard-0-of-2"
    host = ObjectHost(Counter, name, str(tmp_path), SHARDED, metrics=recorded)
    host.apply([Operation("A", "increment", (1,)), Operation("B", "increment", (1,))])
    usurper = SqliteStore(StorageDir(tmp_path).host_path(name), name)  # takes the file over
    host.apply([Operation("A", "increment", (1,))])
    host.apply([Operation("A", "increment", (1,))])  # refused without touching the file
    assert recorded.fences == 1
    # A left with the failed batch's writes; B, untouched, as the host let go of everything.
    assert recorded.objects_seen == [(0, 1)]
    assert recorded.batches == [(2, True)]  # the refused batches committed nothing
    usurper.close()
    host.close()


def test_no_counter_name_becomes_a_label() -> None:
    assert host_label(SHARDED, "Counter.shard-0-of-2") == "Counter.shard-0-of-2"
    assert host_label(PER_NAME, "Counter/user:42") == "per-name"


def test_series_names_follow_prometheus_conventions() -> None:
    for name, (kind, description) in METRICS.items():
        assert re.fullmatch(r"counters_[a-z_]+", name), name
        assert kind in ("counter", "gauge", "histogram"), name
        assert name.endswith("_total") == (kind == "counter"), name
        if "duration" in name:
            assert name.endswith("_seconds"), name  # base units
        assert description, name
        assert not description.endswith("."), name
