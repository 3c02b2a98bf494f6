"""The applied log's memory bound and its trimming of ids on disk, without a disk."""

from __future__ import annotations

from counters.applied_log import AppliedLog, AppliedOp, Retention

RETENTION = Retention(window=100, max_per_object=2, floor=10)


def op(at: float) -> AppliedOp:
    return AppliedOp(at, "increment(1)", "1")


def committed(log: AppliedLog, now: float, ids: list[str]) -> tuple[list[str], list[str]]:
    for op_id in ids:
        log.stage(op_id, op(now))
    expired = log.expired(now, RETENTION)
    log.commit(*expired)
    return expired


def test_within_the_floor_ids_over_the_bound_are_evicted_not_forgotten() -> None:
    log = AppliedLog()
    assert committed(log, 0, ["a", "b", "c"]) == ([], ["a"])  # even from the staged ones
    assert len(log) == 2
    assert log.partial
    assert log.find("a") is None
    assert log.find("c") == op(0)
    assert committed(log, 11, ["d"]) == (["b"], [])  # past the floor: forgotten
    assert committed(log, 200, []) == (["c", "d"], [])  # past the window


def test_a_pass_forgets_what_memory_does_not_hold_once_due() -> None:
    log = AppliedLog()
    committed(log, 0, ["a", "b", "c", "d"])  # a and b evicted at 0
    assert not log.trim_due(10, RETENTION)  # the floor is not over yet
    assert log.trim_due(10.5, RETENTION)
    # A slice as long as asked: the pass goes on after its last key.
    assert log.trim([("a", 0.0), ("c", 0.0)], 2, 10.5, RETENTION) == ["a"]
    assert log.trim_cursor() == "c"
    assert log.partial
    # The last slice: b goes, nothing else is on disk, memory knows every id again.
    assert log.trim([("b", 0.0), ("d", 0.0)], 3, 10.5, RETENTION) == ["b"]
    assert log.trim_cursor() == ""
    assert not log.partial


def test_an_id_evicted_during_a_pass_keeps_the_log_partial() -> None:
    log = AppliedLog()
    committed(log, 0, ["m"])
    committed(log, 5, ["a", "z"])  # evicts m
    assert log.trim([("m", 0.0)], 1, 10.5, RETENTION) == ["m"]  # the pass has read up to m
    committed(log, 10.5, ["n"])  # evicts a, whose key sorts before the cursor
    assert log.trim([("z", 5.0)], 3, 10.5, RETENTION) == []  # the pass ends
    assert log.partial  # a is on disk, unread: the next pass is due once a passes the floor
    assert not log.trim_due(15, RETENTION)
    assert log.trim_due(15.5, RETENTION)


def test_a_log_loaded_partial_trims_nothing_until_memory_holds_the_bound() -> None:
    log = AppliedLog(partial=True)
    committed(log, 50, ["x"])
    assert not log.trim_due(50, RETENTION)  # the newest ids on disk are not known yet
    committed(log, 50, ["y"])
    assert log.trim_due(50, RETENTION)
    assert log.trim([("a", 45.0), ("b", 30.0), ("x", 50.0)], 4, 50, RETENTION) == ["b"]
    assert log.partial  # a is within the floor
