from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counters.counter import Counter
from counters.errors import CountOutOfRange, InvalidAmount
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
    assert counter.storage.get("value") == -2


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
