"""Backups, restores and resharding on real storage (SQLite files, a real PostgreSQL), without
Ray: hosts write, a backup reads their snapshot, a restore writes through the hosts' own code."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from counters.cli.backup import backup, read_backup, reshard, restore
from counters.counter import Counter
from counters.errors import ConfigError, StorageDirInUse
from counters.host import ObjectHost
from counters.placement import Layout, Placement, host_name
from counters.storage import ServiceId, Storage, StorageDir, sqlite
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
    assert restore(read_backup(path), target, Placement.SHARDED, 3) == len(NAMES) + 1
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
        restore(read_backup(path), target, Placement.SHARDED, 2)
    restore(read_backup(path), target, Placement.SHARDED, 2, force=True)
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
        restore(read_backup(path), StorageDir(tmp_path / "t"), Placement.SHARDED, 1)
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


def test_a_host_file_an_older_release_left_is_backed_up_and_resharded_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "storage"
    layout = Layout("Counter", Placement.SHARDED, 1)
    with monkeypatch.context() as older:
        older.setattr(sqlite, "MIGRATIONS", sqlite.MIGRATIONS[:2])  # ids in `applied` then
        store = StorageDir(path).open_host(
            host_name(layout, "A"), layout, ServiceId("old", "an older release")
        )
        store.write([("A", "count", "[41, 7]"), ("B", "count", "[3, 1]")])
        store.close()
    with contextlib.closing(
        sqlite3.connect(StorageDir(path).host_path(host_name(layout, "A")))
    ) as db:
        db.execute("INSERT INTO applied VALUES ('A', 'op-1', 1.0, 'add(1)', '[41, 7]')")
        db.commit()
    backup(StorageDir(path), tmp_path / "b", "Counter")
    _, objects = read_backup(tmp_path / "b")
    assert [(o.name, o.state, [i for i, _ in o.applied]) for o in objects] == [
        ("A", {"count": "[41, 7]"}, ["op-1"]),
        ("B", {"count": "[3, 1]"}, []),
    ]
    reshard(path, 2)
    assert {name: state for name, state in StorageDir(path).scan("", "")} == {
        "A": {"count": "[41, 7]"},
        "B": {"count": "[3, 1]"},
    }


def test_a_reshard_stopped_between_its_renames_is_finished_by_the_next_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "storage"
    counts = fill(StorageDir(path))
    renames = 0
    real_rename = os.rename

    def rename_then_stop(source: Path, target: Path) -> None:
        nonlocal renames
        renames += 1
        if renames == 2:  # the dir is aside, its copy not yet in place: a crash here
            raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename_then_stop)
    with pytest.raises(KeyboardInterrupt):
        reshard(path, 3)
    monkeypatch.undo()
    assert not path.exists()
    # The next host to open the dir puts the checked copy in place, not an empty dir.
    layout = Layout("Counter", Placement.SHARDED, 3)
    assert read_all(StorageDir(path), layout) == counts
    assert [p.name for p in tmp_path.iterdir() if "resharding" in p.name] == []


def test_a_dir_with_nothing_stored_reshards_and_a_missing_one_is_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "storage"
    StorageDir(path).bind_layout(SHARDS)  # what a service that was only read from leaves
    reshard(path, 3)
    assert StorageDir(path).recorded_layout() == Layout("Counter", Placement.SHARDED, 3)
    with pytest.raises(ConfigError, match="not a storage dir"):
        backup(StorageDir(tmp_path / "typo"), tmp_path / "b", "Counter")
    with pytest.raises(ConfigError, match="outside the storage dir"):
        backup(StorageDir(path), path / "hosts" / "b", "Counter")
    assert not (tmp_path / "b").exists()


def test_a_forced_restore_leaves_exactly_the_backup_ids_and_versions_included(
    storage: Storage, tmp_path: Path
) -> None:
    fill(storage)
    backup(storage, tmp_path / "b", "Counter")
    host = ObjectHost(Counter, host_name(SHARDS, "c-5"), storage, SHARDS)
    assert host.call("c-5", "increment", 10, op_id="after-backup") == 13  # 3 before
    host.close()
    restore(read_backup(tmp_path / "b"), storage, Placement.SHARDED, 2, force=True)
    host = ObjectHost(Counter, host_name(SHARDS, "c-5"), storage, SHARDS)
    assert host.call("c-5", "read") == [3, 2]  # count and version as backed up
    # The change after the backup was undone by the restore: sent again, it applies again.
    assert host.call("c-5", "increment", 10, op_id="after-backup") == 13
    assert host.call("c-5", "read") == [13, 3]
    host.close()
    with contextlib.closing(storage.snapshot()) as after:
        restored = {o.name: o for o in after}
    _, objects = read_backup(tmp_path / "b")
    backed_up = {o.name: o for o in objects}
    del restored["c-5"], backed_up["c-5"]
    assert restored == backed_up


@pytest.mark.parametrize("damage", ["cut", "dropped", "doubled", "edited"])
def test_a_damaged_backup_is_refused_before_anything_is_written(
    tmp_path: Path, damage: str
) -> None:
    fill(StorageDir(tmp_path / "source"))
    path = tmp_path / "b"
    backup(StorageDir(tmp_path / "source"), path, "Counter")
    lines = path.read_text().splitlines(keepends=True)
    if damage == "cut":
        lines[10] = lines[10][:20] + "\n"
    elif damage == "dropped":
        del lines[10]
    elif damage == "doubled":
        lines.insert(10, lines[10])
    else:
        lines[10] = json.dumps({"name": 7, "state": {}, "applied": []}) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(ConfigError, match=str(path)):
        restore(read_backup(path), StorageDir(tmp_path / "target"), Placement.SHARDED, 1)
    assert not (tmp_path / "target" / "hosts").exists()


def test_the_commands_say_what_went_wrong_without_a_traceback(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    fill(StorageDir(storage))

    def counters(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "counters", *arguments]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    cases = [
        (["backup", str(tmp_path / "no" / "b"), "--storage-dir", str(storage)], 1, "cannot"),
        (
            ["backup", str(tmp_path / "b"), "--storage-dir", str(tmp_path / "typo")],
            2,
            "not a storage dir",
        ),
        (["backup", str(tmp_path), "--storage-dir", str(storage)], 2, "is a folder"),
        (["restore", str(tmp_path / "none"), "--storage-dir", str(tmp_path / "t")], 2, "cannot"),
        (["export", "-o", str(tmp_path / "no" / "x"), "--url", "http://127.0.0.1:9"], 2, "cannot"),
    ]
    for arguments, code, complaint in cases:
        result = counters(*arguments)
        assert (result.returncode, result.stdout) == (code, ""), (arguments, result.stderr)
        assert result.stderr.startswith("counters: "), result.stderr
        assert complaint in result.stderr
        assert "Traceback" not in result.stderr
