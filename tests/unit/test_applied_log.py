"""How many ids a host forgets when: pure logic, no disk."""

from __future__ import annotations

from counters.applied_log import Retention

RETENTION = Retention(window=1000, max_ids=100, floor=10)


def test_within_the_bound_only_ids_past_the_window_are_forgotten_a_slice_per_commit() -> None:
    assert RETENTION.forget_oldest(remembered=95, recorded=5, now=5000) == (74, 4000)
    assert RETENTION.forget_oldest(remembered=0, recorded=0, now=5000) == (64, 4000)


def test_the_oldest_beyond_the_bound_are_forgotten_but_none_within_the_floor() -> None:
    assert RETENTION.forget_oldest(remembered=100, recorded=3, now=500) == (3, 490)


def test_a_host_far_over_the_bound_catches_up_a_little_per_commit() -> None:
    # Twice the ids just recorded and a few more: the bound is reached, no commit grows long.
    assert RETENTION.forget_oldest(remembered=10_000, recorded=10, now=500) == (84, 490)


def test_a_window_shorter_than_the_floor_keeps_ids_for_the_floor() -> None:
    short = Retention(window=5, max_ids=100, floor=10)
    assert short.expired_before(now=500) == 490
    assert short.forget_oldest(remembered=1, recorded=1, now=500) == (66, 490)
