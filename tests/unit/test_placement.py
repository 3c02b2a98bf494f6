from __future__ import annotations

from collections import Counter as Tally

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counters.placement import (
    Layout,
    Placement,
    default_shards,
    host_file_name,
    host_name,
    shard_of,
)


def test_shard_is_stable_across_releases() -> None:
    # Pinned values: if these change, existing storage dirs would lose their counters.
    assert [shard_of(name, 16) for name in ("A", "B", "counter-1", "名前")] == [6, 2, 0, 7]
    assert shard_of("B", 1000) == 930


@given(st.text(min_size=1), st.integers(min_value=1, max_value=4096))
def test_shard_is_in_range(name: str, shards: int) -> None:
    name = name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    assert 0 <= shard_of(name, shards) < shards


def test_names_spread_evenly_over_shards() -> None:
    tally = Tally(shard_of(f"name-{i}", 8) for i in range(8000))
    assert len(tally) == 8
    assert min(tally.values()) > 800  # expected 1000 each


def test_host_names() -> None:
    sharded = Layout("Counter", Placement.SHARDED, 16)
    per_name = Layout("Counter", Placement.PER_NAME, 1)
    assert host_name(sharded, "A") == "Counter.shard-06-of-16"
    assert sharded.host_for("A") == "Counter.shard-06-of-16"
    assert host_name(per_name, "A") == "Counter/A"
    assert host_name(per_name, "../../etc") == "Counter/../../etc"


def test_file_names_never_carry_user_input() -> None:
    name = host_file_name("Counter/../../etc/passwd")
    assert name.endswith(".sqlite3")
    assert "/" not in name
    assert ".." not in name
    assert len(name) == 32 + len(".sqlite3")
    assert host_file_name("Counter/A") != host_file_name("Counter/B")


def test_layout_refuses_zero_shards() -> None:
    with pytest.raises(ValueError, match="shards"):
        Layout("Counter", Placement.SHARDED, 0)


@pytest.mark.parametrize(
    ("cpus", "shards"), [(None, 1), (1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (16, 8), (96, 8)]
)
def test_a_new_storage_dir_gets_a_shard_per_two_cpus(cpus: int | None, shards: int) -> None:
    assert default_shards(cpus) == shards
