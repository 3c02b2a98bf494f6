from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counters.counter import Counter
from counters.errors import CountOutOfRange, InvalidAmount, OutOfBounds, VersionMismatch
from counters.object_storage import ObjectStorage
from counters.validation import INT64_MAX, INT64_MIN

int64 = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)


def fresh() -> Counter:
    return Counter(ObjectStorage())


def test_starts_at_zero_like_the_example() -> None:
    assert fresh().get_counter_value() == 0


def test_increment_and_decrement_by_one_and_by_amount() -> None:
    counter = fresh()
    assert counter.increment() == 1
    assert counter.increment(5) == 6
    assert counter.decrement() == 5
    assert counter.decrement(7) == -2
    assert counter.get_counter_value() == -2
    assert counter.storage.get("count") == [-2, 4]  # the count and its version, one key


@given(st.lists(st.tuples(st.booleans(), st.integers(-(10**12), 10**12)), max_size=50))
def test_value_is_the_sum_of_its_changes(changes: list[tuple[bool, int]]) -> None:
    counter = fresh()
    expected = 0
    for up, amount in changes:
        expected += amount if up else -amount
        result = counter.increment(amount) if up else counter.decrement(amount)
        assert result == expected
    assert counter.get_counter_value() == expected


@given(int64, int64)
def test_leaving_int64_fails_and_changes_nothing(start: int, amount: int) -> None:
    counter = fresh()
    counter.storage.put("value", start)
    counter.storage.end_operation(keep=True)
    try:
        assert counter.increment(amount) == start + amount
    except CountOutOfRange:
        assert not INT64_MIN <= start + amount <= INT64_MAX
        assert counter.get_counter_value() == start


def test_int64_edges() -> None:
    counter = fresh()
    assert counter.increment(INT64_MAX) == INT64_MAX
    with pytest.raises(CountOutOfRange):
        counter.increment()
    assert counter.decrement(INT64_MAX) == 0
    assert counter.decrement(INT64_MAX) == -INT64_MAX
    assert counter.decrement() == INT64_MIN
    with pytest.raises(CountOutOfRange):
        counter.decrement()
    with pytest.raises(CountOutOfRange):
        fresh().decrement(INT64_MIN)  # 0 - (-2**63) is one past the top


@pytest.mark.parametrize("amount", [1.5, "1", True, None, 2**63])
def test_bad_amounts_change_nothing(amount: object) -> None:
    counter = fresh()
    with pytest.raises(InvalidAmount):
        counter.increment(amount)  # type: ignore[arg-type]
    assert counter.get_counter_value() == 0


# Versions, bounds, set and delete -------------------------------------------------------------


def committed(counter: Counter) -> Counter:
    counter.storage.end_operation(keep=True)
    return counter


def test_a_counter_never_changed_is_at_version_0_and_each_change_adds_one() -> None:
    counter = fresh()
    assert counter.read() == [0, 0]
    assert counter.add(5) == [5, 1]
    assert counter.subtract(2) == [3, 2]
    assert counter.increment() == 4
    assert counter.decrement() == 3
    assert counter.read() == [3, 4]


def test_a_change_at_another_version_fails_and_changes_nothing() -> None:
    counter = committed(fresh())
    counter.add(1)
    with pytest.raises(VersionMismatch, match="at version 1, not 0"):
        counter.add(1, if_version=0)
    assert counter.add(1, if_version=1) == [2, 2]
    for change in (
        lambda: counter.subtract(1, if_version=7),
        lambda: counter.set(9, if_version=1),
        lambda: counter.delete(if_version=3),
        lambda: counter.increment(1, None, None, 1),
    ):
        with pytest.raises(VersionMismatch):
            change()
    assert counter.read() == [2, 2]


def test_bounds_hold_at_the_change() -> None:
    counter = fresh()
    counter.set(5)
    assert counter.subtract(5, floor=0) == [0, 2]  # "take 5 if at least 5 are left"
    with pytest.raises(OutOfBounds, match=r"would become -1, outside \[0, \]"):
        counter.subtract(1, floor=0)
    with pytest.raises(OutOfBounds, match=r"outside \[, 3\]"):
        counter.add(4, ceiling=3)
    assert counter.add(3, floor=0, ceiling=3) == [3, 3]
    assert counter.decrement(3, 0) == 0
    with pytest.raises(OutOfBounds):
        counter.increment(1, None, 0)
    with pytest.raises(OutOfBounds, match=r"outside \[2, 1\]"):  # no count is within them
        counter.increment(0, 2, 1)
    assert counter.read() == [0, 4]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.add(1, floor="0"), "floor must be an integer"),
        (lambda c: c.add(1, ceiling=True), "ceiling must be an integer"),
        (lambda c: c.add(1, if_version=1.0), "if_version must be an integer"),
        (lambda c: c.set(2**63), "value 9223372036854775808 is outside"),
        (lambda c: c.set("5"), "value must be an integer"),
        (lambda c: c.add(1, floor=-(2**63) - 1), "outside the signed 64-bit range"),
    ],
)
def test_bad_bounds_versions_and_values_are_invalid_and_change_nothing(
    call: Any, message: str
) -> None:
    counter = fresh()
    counter.add(1)
    with pytest.raises(InvalidAmount, match=message):
        call(counter)
    assert counter.read() == [1, 1]


def test_set_and_delete_answer_what_was_and_keep_the_version_growing() -> None:
    counter = fresh()
    assert counter.set(7) == [0, 0, 1]
    assert counter.set(-3, if_version=1) == [7, 1, 2]
    assert counter.delete() == [-3, 2, 3]
    assert counter.read() == [0, 3]
    assert counter.storage.get("count") == [None, 3]  # forgotten, its version kept
    # Made again, it does not start over: a version once given never names another state.
    assert counter.add(1) == [1, 4]
    assert counter.delete(if_version=4) == [1, 4, 5]
    assert counter.delete() == [0, 5, 6]


def test_a_counter_stored_before_versions_reads_at_version_1_and_moves_on() -> None:
    counter = committed(Counter(ObjectStorage({"value": "41"})))
    assert counter.read() == [41, 1]
    assert counter.increment() == 42
    assert counter.storage.get("value") is None
    assert counter.storage.get("count") == [42, 2]


def test_a_counter_exists_from_its_first_change_until_deleted() -> None:
    counter = fresh()
    assert not counter.exists()
    counter.read()
    assert not counter.exists()  # reading creates nothing
    counter.increment(0)
    assert counter.exists()  # changed, though still 0
    counter.delete()
    assert not counter.exists()
    counter.set(4)
    assert counter.exists()
    assert Counter(ObjectStorage({"value": "3"})).exists()  # stored before versions
