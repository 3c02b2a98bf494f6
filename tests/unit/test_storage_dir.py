from __future__ import annotations

import json
from pathlib import Path

import pytest

from counters.errors import LayoutMismatch
from counters.placement import Layout, Placement
from counters.storage.storage_dir import StorageDir


def test_layout_is_recorded_once_and_then_enforced(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path / "store")
    assert storage.recorded_shards("Counter") is None
    sharded = Layout("Counter", Placement.SHARDED, 4)
    storage.bind_layout(sharded)
    storage.bind_layout(sharded)
    recorded = json.loads((tmp_path / "store" / "layout.json").read_text())
    assert recorded == {"class_name": "Counter", "placement": "sharded", "shards": 4}
    assert storage.recorded_shards("Counter") == 4
    assert storage.recorded_shards("Other") is None  # laid out for another class
    with pytest.raises(LayoutMismatch, match="same placement and shard count"):
        storage.bind_layout(Layout("Counter", Placement.SHARDED, 8))
    with pytest.raises(LayoutMismatch):
        storage.bind_layout(Layout("Counter", Placement.PER_NAME, 4))
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["layout.json"]


def test_per_name_layout_ignores_shard_count(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path)
    storage.bind_layout(Layout("Counter", Placement.PER_NAME, 4))
    storage.bind_layout(Layout("Counter", Placement.PER_NAME, 16))
    assert storage.recorded_shards("Counter") is None  # no shard count to take over


def test_host_files_live_under_hosts(tmp_path: Path) -> None:
    path = StorageDir(tmp_path).host_path("Counter/../../x")
    assert path.parent == tmp_path / "hosts"
