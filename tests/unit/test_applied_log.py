"""The applied log's memory bound, and which ids on disk it forgets, without a disk."""

from __future__ import annotations

import math

from counters.applied_log import AppliedLog, AppliedOp, Retention, _Ages

# Eight ids remembered past the floor (forgotten past 8, passes start past 10), two in memory.
RETENTION = Retention(window=1000, max_per_object=8, floor=10)
CAP = 2


def op(at: float) -> AppliedOp:
    return AppliedOp(at, "increment(1)", "1")


def commit(log: AppliedLog, now: float, *ids: str) -> tuple[list[str], list[str]]:
    for op_id in ids:
        log.stage(op_id, op(now))
    expired = log.expired(now, CAP)
    log.commit(*expired)
    return expired


def one_a_second(log: AppliedLog, count: int) -> None:
    for second in range(count):
        commit(log, float(second), f"id-{second:03}")


def test_memory_holds_the_newest_ids_and_evicts_the_rest() -> None:
    log = AppliedLog(RETENTION)
    assert commit(log, 0, "a", "b", "c") == ([], ["a"])  # even from the staged ones
    assert len(log) == 2
    assert log.partial
    assert log.find("a") is None  # the host asks the disk
    assert log.find("c") == op(0)
    assert commit(log, 1, "d") == ([], ["b"])
    assert commit(log, 1001, "e") == (["c"], [])  # past the window: forgotten, which makes room


def test_ages_tell_which_ids_are_beyond_the_newest_n() -> None:
    ages = _Ages(max_per_object=64)  # chunks of 2 ids; kept while they count for 80
    assert ages.boundary(1) == -math.inf  # nothing recorded: not known
    for second in range(100):
        ages.add(float(second), 1)
    assert ages.boundary(64) == 36.0  # ids 36..99 are the newest 64
    assert ages.boundary(65) == 34.0  # to the chunk: ids 34 and 35 share one
    assert ages.boundary(80) == 20.0
    assert ages.boundary(81) == -math.inf  # older chunks are dropped: not known any more
    ages.add(100.0, 50)  # a batch of 50
    assert ages.boundary(50) == 100.0
    assert ages.boundary(64) == 86.0


def test_a_pass_starts_once_a_quarter_over_the_bound_and_runs_to_the_end() -> None:
    log = AppliedLog(RETENTION)
    one_a_second(log, 10)  # 10 ids: 8 kept, 2 over, not yet a quarter more than 8
    assert not log.trim_due(100)
    commit(log, 10, "id-010")
    assert log.trim_due(100)  # 11 ids: a pass is worth it (and the oldest are past the floor)
    on_disk = [(f"id-{second:03}", float(second)) for second in range(11)]
    # Slices in key order: the pass goes on while a slice is as long as asked.
    assert log.trim(on_disk[:4], 4, 100) == ["id-000", "id-001", "id-002"]
    assert log.trim_cursor() == "id-003"
    assert log.trim_due(100)  # under way: due until it ends
    assert log.trim(on_disk[4:], 8, 100) == []  # 3..10 are the newest 8
    assert log.trim_cursor() == ""
    assert log.partial  # ids 3..8 are on disk only
    assert not log.trim_due(100)


def test_ids_beyond_the_bound_wait_for_the_floor() -> None:
    log = AppliedLog(RETENTION)
    one_a_second(log, 11)
    assert not log.trim_due(10)  # id-000 is 10 s old: within the floor
    assert log.trim_due(10.5)
    on_disk = [(f"id-{second:03}", float(second)) for second in range(11)]
    assert log.trim(on_disk, 20, 10.5) == ["id-000"]  # id-001 and id-002 are within the floor


def test_a_pass_that_finds_only_memorys_ids_makes_the_log_whole() -> None:
    log = AppliedLog(RETENTION)
    commit(log, 0, "a", "b", "c")  # a evicted
    assert not log.trim_due(100)  # a is the only one on disk only: not worth a pass yet
    assert log.trim([("a", 0.0), ("b", 0.0), ("c", 0.0)], 5, 2000) == ["a"]  # past the window
    assert not log.partial


def test_an_id_evicted_behind_a_pass_keeps_the_log_partial() -> None:
    log = AppliedLog(Retention(window=1000, max_per_object=2, floor=10))
    commit(log, 0, "m")
    commit(log, 1, "a")
    commit(log, 2, "z")  # evicts m
    assert log.trim([("m", 0.0)], 1, 100) == ["m"]  # the pass has read up to m
    commit(log, 100, "n")  # evicts a, whose key sorts before the cursor
    assert log.trim([("n", 100.0), ("z", 2.0)], 3, 100) == []  # the end: all in memory
    assert log.partial  # yet a is on disk only, unread by this pass
    assert log.trim_due(100)  # and beyond the newest two, past the floor: the next pass is due


def test_a_log_loaded_partial_forgets_nothing_until_it_counted_enough() -> None:
    log = AppliedLog(RETENTION, partial=True)  # ids on disk from before 100, none read
    for second in range(100, 109):
        commit(log, float(second), f"id-{second}")
    assert not log.trim_due(1000)  # which ids on disk are the newest is not known yet
    commit(log, 109, "id-109")
    assert log.trim_due(1000)
    on_disk = [("id-101", 101.0), ("id-103", 103.0), ("old", 50.0)]
    assert log.trim(on_disk, 5, 1000) == ["id-101", "old"]  # 102..109 are the newest 8
    assert log.partial  # id-103 is on disk only
