"""Backups, restores and resharding on real storage (SQLite files, a real PostgreSQL), without
Ray: hosts write, a backup reads their snapshot, a restore writes through the hosts' own code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from counters.backup import backup, read_backup, reshard, restore
from counters.counter import Counter
from counters.errors import ConfigError, StorageDirInUse
from counters.host import ObjectHost
from counters.placement import Layout, Placement, host_name
from counters.storage import ServiceId, Storage, StorageDir
from counters.storage.postgres import PostgresStorage

SHARDS = Layout("Counter", Placement.SHARDED, 2)
NAMES = [f"c-{i}" for i in range(30)] + ["ünïcode ✓", "a" * 1024]


def fill(storage: Storage, layout: Layout = SHARDS) -> dict[str, int]:
    """Counters changed through real hosts, with ids: name -> count."""
    hosts = {h: ObjectHost(Counter, h, storage, layout) for h in _hosts(layout)}
    counts = {}
    for i, name in enumerate(NAMES):
        host = hosts[host_name(layout, name)]
        for n in range(i % 4 + 1):
            host.call(name, "increment", n + 1, op_id=f"op-{i}-{n}")
        counts[name] = sum(range(1, i % 4 + 2))
    hosts[host_name(layout, "gone")].call("gone", "increment", 5)
    hosts[host_name(layout, "gone")].call("gone", "delete")
    for host in hosts.values():
        host.close()
    return counts


def _hosts(layout: Layout) -> set[str]:
    return {host_name(layout, name) for name in [*NAMES, "gone"]}


def read_all(storage: Storage, layout: Layout) -> dict[str, int]:
    """Every counter's count, read back by real hosts of `layout`."""
    hosts = {h: ObjectHost(Counter, h, storage, layout) for h in _hosts(layout)}
    counts = {
        name: hosts[host_name(layout, name)].call(name, "get_counter_value") for name in NAMES
    }
    for host in hosts.values():
        host.close()
    return counts


@pytest.mark.parametrize("target_kind", ["sqlite", "postgres"])
def test_a_backup_restores_every_count_and_every_remembered_id(
    storage: Storage, target_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    counts = fill(storage)
    path = tmp_path / "counters.backup"
    assert backup(storage, path, "Counter") == len(NAMES) + 1  # the deleted one keeps a row
    header, objects = read_backup(path)
    assert header["class_name"] == "Counter"
    assert header["objects"] == len(NAMES) + 1
    assert len(list(objects)) == len(NAMES) + 1

    target: Storage = (
        StorageDir(tmp_path / "restored")
        if target_kind == "sqlite"
        else PostgresStorage(request.getfixturevalue("postgres_server").create_database())
    )
    assert restore(path, target, Placement.SHARDED, 3) == len(NAMES) + 1
    layout = Layout("Counter", Placement.SHARDED, 3)
    assert read_all(target, layout) == counts
    # An operation sent before the backup and sent again after the restore: applied once.
    host = ObjectHost(Counter, host_name(layout, "c-3"), target, layout)
    assert host.call("c-3", "increment", 4, op_id="op-3-3") == counts["c-3"]
    assert host.call("c-3", "get_counter_value") == counts["c-3"]
    host.close()


def test_a_restore_refuses_storage_with_counters_unless_told_and_then_replaces_them(
    tmp_path: Path,
) -> None:
    source = StorageDir(tmp_path / "source")
    counts = fill(source)
    path = tmp_path / "b"
    backup(source, path, "Counter")
    target = StorageDir(tmp_path / "target")
    host = ObjectHost(Counter, host_name(SHARDS, "extra"), target, SHARDS)
    host.call("extra", "increment", 7)
    host.call("c-1", "increment", 100)
    host.close()
    with pytest.raises(ConfigError, match="holds 2 counter"):
        restore(path, target, Placement.SHARDED, 2)
    restore(path, target, Placement.SHARDED, 2, force=True)
    assert read_all(target, SHARDS) == counts
    host = ObjectHost(Counter, host_name(SHARDS, "extra"), target, SHARDS)
    assert host.call("extra", "get_counter_value") == 0  # not in the backup: deleted
    host.close()


def test_a_backup_that_did_not_finish_is_refused(tmp_path: Path) -> None:
    source = StorageDir(tmp_path / "source")
    fill(source)
    path = tmp_path / "b"
    backup(source, path, "Counter")
    with pytest.raises(ConfigError, match="exists"):
        backup(source, path, "Counter")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # cut before its end line
    with pytest.raises(ConfigError, match="not whole"):
        restore(path, StorageDir(tmp_path / "t"), Placement.SHARDED, 1)
    path.write_text(json.dumps({"format": "something else"}) + "\n")
    with pytest.raises(ConfigError, match="not a counters backup"):
        read_backup(path)
    assert not (tmp_path / "t").exists()


def test_resharding_keeps_every_count_and_is_refused_while_a_service_holds_the_dir(
    tmp_path: Path,
) -> None:
    path = tmp_path / "storage"
    counts = fill(StorageDir(path))
    release = StorageDir(path).hold(ServiceId("svc", "a running service"))
    with pytest.raises(StorageDirInUse):
        reshard(path, 5)
    release()
    old = reshard(path, 5)
    assert StorageDir(path).recorded_layout() == Layout("Counter", Placement.SHARDED, 5)
    assert read_all(StorageDir(path), Layout("Counter", Placement.SHARDED, 5)) == counts
    assert read_all(StorageDir(old), SHARDS) == counts  # the old dir is kept, untouched
    # A host of the old layout cannot open the new dir: the layout is bound.
    stale = ObjectHost(Counter, host_name(SHARDS, "c-1"), StorageDir(path), SHARDS)
    with pytest.raises(ConfigError, match="laid out as"):
        stale.call("c-1", "increment", 1)
    stale.close()
