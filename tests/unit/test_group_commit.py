"""Group commit without Ray: real threads, a real host, a real SQLite file."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from counters.counter import Counter
from counters.errors import InvalidAmount
from counters.group_commit import GroupCommit
from counters.host import ObjectHost
from counters.operations import Operation, Outcome
from counters.placement import Layout, Placement

LAYOUT = Layout("Counter", Placement.SHARDED, 1)
HOST = "Counter.shard-0-of-1"


def new_host(tmp_path: Path) -> ObjectHost:
    return ObjectHost(Counter, HOST, str(tmp_path / "storage"), LAYOUT)


def increments(name: str, count: int, prefix: str) -> tuple[Operation, ...]:
    return tuple(Operation(name, "increment", (1,), f"{prefix}-{i}") for i in range(count))


class Waiters:
    """Batches sent from threads of their own while the test holds the writer's lock."""

    def __init__(self, group: GroupCommit, serial: threading.RLock) -> None:
        self.group = group
        self.serial = serial
        self.answers: dict[int, tuple[Outcome, ...] | BaseException | None] = {}
        self.threads: list[threading.Thread] = []

    def send(self, index: int, operations: Sequence[Operation], refusable: bool = False) -> None:
        def run() -> None:
            try:
                self.answers[index] = self.group.apply(operations, refusable)
            except BaseException as error:
                self.answers[index] = error

        thread = threading.Thread(target=run)
        self.threads.append(thread)
        thread.start()
        # In order: each batch waits before the next one is sent.
        wait_for(lambda: self.group.waiting == len(self.threads))

    def release(self) -> None:
        self.serial.release()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def held(host: ObjectHost, refusing: Callable[[], bool] = lambda: False) -> Waiters:
    serial = threading.RLock()
    serial.acquire()  # the writer is busy: every batch sent now waits
    return Waiters(GroupCommit(host.apply, serial, refusing), serial)


def values(answer: object) -> list[int]:
    assert isinstance(answer, tuple)
    return [outcome.unwrap() for outcome in answer]


def test_batches_waiting_together_are_committed_in_one_transaction(tmp_path: Path) -> None:
    host = new_host(tmp_path)
    waiters = held(host)
    for index in range(4):
        waiters.send(index, increments("A", 3, prefix=f"b{index}"))
    waiters.send(4, increments("B", 2, prefix="b4"))
    waiters.release()
    # In the order they arrived, each its own outcomes.
    assert [values(waiters.answers[i]) for i in range(5)] == [
        [1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
        [10, 11, 12],
        [1, 2],
    ]
    assert host.stats()["batches"] == 1
    host.close()  # its process gone, as after a crash
    on_disk = new_host(tmp_path)
    assert on_disk.call("A", "get_counter_value") == 12
    assert on_disk.call("B", "get_counter_value") == 2


def test_a_batch_sent_twice_in_one_group_is_applied_once(tmp_path: Path) -> None:
    host = new_host(tmp_path)
    waiters = held(host)
    batch = increments("A", 2, prefix="resent")
    waiters.send(0, batch)
    waiters.send(1, batch)
    waiters.release()
    assert values(waiters.answers[0]) == values(waiters.answers[1]) == [1, 2]
    host.close()
    assert new_host(tmp_path).call("A", "get_counter_value") == 2


def test_a_failing_operation_fails_alone_in_a_group(tmp_path: Path) -> None:
    host = new_host(tmp_path)
    waiters = held(host)
    waiters.send(0, increments("A", 1, prefix="first"))
    waiters.send(1, (Operation("A", "increment", ("five",), "not-a-number"),))
    waiters.send(2, increments("A", 1, prefix="last"))
    waiters.release()
    assert values(waiters.answers[0]) == [1]
    answer = waiters.answers[1]
    assert isinstance(answer, tuple)
    assert isinstance(answer[0].error, InvalidAmount)
    assert values(waiters.answers[2]) == [2]


def test_a_refusing_host_refuses_channel_batches_and_applies_the_rest(tmp_path: Path) -> None:
    host = new_host(tmp_path)
    waiters = held(host, refusing=lambda: True)
    waiters.send(0, increments("A", 2, prefix="channel"), refusable=True)
    waiters.send(1, increments("A", 1, prefix="ray"))
    waiters.release()
    assert waiters.answers[0] is None
    assert values(waiters.answers[1]) == [1]
    host.close()
    assert new_host(tmp_path).call("A", "get_counter_value") == 1


def test_a_group_whose_apply_raises_fails_every_batch_and_the_next_one_runs(
    tmp_path: Path,
) -> None:
    host = new_host(tmp_path)
    broken = threading.Event()
    broken.set()

    def apply(operations: Sequence[Operation]) -> tuple[Outcome, ...]:
        if broken.is_set():
            raise RuntimeError("the disk caught fire")
        return host.apply(operations)

    serial = threading.RLock()
    serial.acquire()
    waiters = Waiters(GroupCommit(apply, serial, lambda: False), serial)
    waiters.send(0, increments("A", 1, prefix="a"))
    waiters.send(1, increments("A", 1, prefix="b"))
    waiters.release()
    assert all(isinstance(waiters.answers[i], RuntimeError) for i in (0, 1))
    broken.clear()
    assert values(waiters.group.apply(increments("A", 1, prefix="c"))) == [1]


def test_many_threads_at_once_lose_and_double_nothing(tmp_path: Path) -> None:
    host = new_host(tmp_path)
    group = GroupCommit(host.apply, threading.RLock(), lambda: False)
    seen: list[int] = []
    seen_lock = threading.Lock()

    def client(index: int) -> None:
        for round_ in range(20):
            got = values(group.apply(increments("A", 5, prefix=f"t{index}-{round_}")))
            with seen_lock:
                seen.extend(got)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(seen) == list(range(1, 801))
    host.close()
    assert new_host(tmp_path).call("A", "get_counter_value") == 800


@pytest.mark.parametrize("refusable", [False, True])
def test_a_lone_batch_is_applied_as_it_is(tmp_path: Path, refusable: bool) -> None:
    host = new_host(tmp_path)
    group = GroupCommit(host.apply, threading.RLock(), lambda: False)
    assert values(group.apply(increments("A", 3, prefix="x"), refusable)) == [1, 2, 3]
    assert group.waiting == 0
