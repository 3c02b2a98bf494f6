"""Backups of a service's storage, restores into new storage, and resharding a storage dir.

A backup is a file of JSON lines, whichever backend it came from or goes to:

    {"format": "counters-backup", "version": 1, "class_name": "Counter", "source": ..., ...}
    {"name": "A", "state": {"count": "[5, 5]"}, "applied": [[op_id, at, request, result], ...]}
    ...
    {"end": true, "objects": 2}

Taken from `Storage.snapshot` while the service serves: each object as of one commit (the
whole database's, or its host file's), so every change acknowledged before the backup began is
in it. It holds the ids each object remembers, so that after a restore a client resending an
operation from before the backup is still answered once. Written aside, fsync'd, then renamed:
a backup file is whole or absent, and a restore reads and checks all of it (every line, and
their count against the end line's) before it writes anything.

A restore writes through the hosts' own storage code (`HostStore.write`): it claims the target
for itself (refused while a service uses it), takes each host's data over with a new epoch (a
host of another layout still running would be fenced), and refuses a target that holds counters
unless told to replace them; then it first forgets everything there, so that the target holds
exactly the backup, as of when it was taken: counts, versions and remembered ids (a change made
after the backup, sent again, is applied again: the restore undid it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..applied_log import AppliedOp
from ..errors import ConfigError
from ..placement import Layout, Placement, host_name
from ..storage import HostStore, ServiceId, Storage, StorageDir, StoredObject
from ..storage.storage_dir import (
    LAYOUT_FILE,
    RESHARD_MARK,
    finish_reshard,
    resharding_path,
    sync_folder,
)
from .progress import Progress, quiet

__all__ = ["BACKUP_FORMAT", "backup", "read_backup", "reshard", "restore"]

BACKUP_FORMAT = "counters-backup"
VERSION = 1
WRITE_BATCH = 500  # objects per transaction of a restore
OPEN_STORES = 64  # host stores a restore keeps open (a per-name layout has one per counter)


def backup(
    storage: Storage, path: Path, class_name: str, force: bool = False, progress: Progress = quiet
) -> int:
    """Write a snapshot of `storage` to `path`; how many objects. Refuses an existing file
    unless `force`, and a storage dir that holds no counters storage (a mistyped path)."""
    if isinstance(storage, StorageDir):
        finish_reshard(storage.path)
        if storage.recorded_layout() is None:
            raise ConfigError(f"{storage.path} is not a storage dir (it has no {LAYOUT_FILE})")
        if path.resolve().is_relative_to(storage.path.resolve()):
            raise ConfigError(f"write the backup outside the storage dir {storage.path}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the backup file's path")
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; give another path, or --force to replace it")
    header = {
        "format": BACKUP_FORMAT,
        "version": VERSION,
        "class_name": class_name,
        "source": storage.describe(),
        "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    objects = 0
    try:
        with aside.open("w", encoding="utf-8") as out:
            out.write(json.dumps(header) + "\n")
            with contextlib.closing(storage.snapshot()) as snapshot:
                for stored in snapshot:
                    out.write(_line(stored))
                    objects += 1
                    progress(1)
            out.write(json.dumps({"end": True, "objects": objects}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(aside, path)
        sync_folder(path.parent)
    finally:
        aside.unlink(missing_ok=True)
    return objects


def read_backup(path: Path) -> tuple[dict[str, Any], Iterator[StoredObject]]:
    """The header of the backup at `path` (with its count of objects) and its objects.

    Every line is read and checked first, and the count held to the end line's: ConfigError
    for a file that is not one of ours, damaged, or not whole, before any object is given."""
    try:
        with path.open(encoding="utf-8") as lines:
            header = json.loads(next(lines, "null"))
            if not isinstance(header, dict) or header.get("format") != BACKUP_FORMAT:
                raise ConfigError(f"{path} is not a counters backup")
            if header.get("version") != VERSION:
                raise ConfigError(f"{path} is a backup of version {header.get('version')}, not 1")
            names: set[str] = set()
            end = None
            for number, line in enumerate(lines, 2):
                if end is not None:
                    raise ConfigError(f"{path}, line {number}: a line after the end line")
                record = json.loads(line)
                if isinstance(record, dict) and record.get("end") is True:
                    end = record
                    continue
                name = _stored(record, f"{path}, line {number}").name
                if name in names:
                    raise ConfigError(f"{path}, line {number}: {name!r:.80} appears twice")
                names.add(name)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read backup {path}: {error}") from None
    if end is None:
        raise ConfigError(f"{path} is not whole (no end line): the backup did not finish")
    if end.get("objects") != len(names):
        raise ConfigError(
            f"{path} is damaged: it holds {len(names)} objects, its end line says "
            f"{end.get('objects')}"
        )
    return {**header, "objects": len(names)}, _objects(path)


def restore(
    backup: tuple[dict[str, Any], Iterator[StoredObject]],
    storage: Storage,
    placement: Placement = Placement.SHARDED,
    shards: int = 1,
    force: bool = False,
    progress: Progress = quiet,
) -> int:
    """Write `backup` (as `read_backup` read and checked it) into `storage`, laid out as
    `placement` and `shards`; how many objects. Refuses storage in use by a service, and
    storage that holds counters unless `force`: then everything there is forgotten first
    (`Storage.clear`), so that afterwards the storage holds exactly the backup: its counts,
    versions and remembered ids."""
    header, objects = backup
    layout = Layout(header["class_name"], placement, shards)
    service = ServiceId(f"restore-{uuid.uuid4().hex}", f"counters restore in pid {os.getpid()}")
    release = storage.hold(service)  # StorageDirInUse while a service serves from it
    try:
        with contextlib.closing(storage.scan("", "")) as existing:
            present = [name for name, state in existing if state]
        if present and not force:
            raise ConfigError(
                f"{storage.describe()} holds {len(present)} counter(s) already "
                f"(such as {present[0]!r}); restore into new storage, or --force to replace them"
            )
        if force:
            storage.clear()
        restored = 0
        with _Writer(storage, layout, service) as writer:
            for stored in objects:
                writer.put(stored)
                restored += 1
                progress(1)
        return restored
    finally:
        release()


def reshard(path: Path, shards: int, progress: Progress = quiet) -> Path:
    """Lay the storage dir at `path` out anew on `shards` shards, offline: copied into a new
    dir, checked, then put in its place. Refused while a service uses the dir. The old dir
    stays beside it; its new name is returned.

    A reshard stopped at any point leaves the dir as it was, or the new one in place: the
    copy is marked once checked, and a copy so marked is put in place by the next reshard, or
    by the next host to open the dir, if the dir was already put aside."""
    if shards < 1:
        raise ConfigError(f"--shards must be at least 1, not {shards}")
    finish_reshard(path)
    source = StorageDir(path)
    layout = source.recorded_layout()
    if layout is None:
        raise ConfigError(f"{path} is not a storage dir (it has no {LAYOUT_FILE})")
    service = ServiceId(f"reshard-{uuid.uuid4().hex}", f"counters reshard in pid {os.getpid()}")
    release = source.hold(service)  # StorageDirInUse while a service serves from it
    try:
        new = resharding_path(path)
        if new.exists():  # left by a reshard stopped before its copy was checked
            shutil.rmtree(new)
        target = StorageDir(new)
        new_layout = Layout(layout.class_name, Placement.SHARDED, shards)
        target.bind_layout(new_layout)  # a storage dir, even with no counter to copy
        copied = 0
        with (
            _Writer(target, new_layout, service) as writer,
            contextlib.closing(source.snapshot()) as snapshot,
        ):
            for stored in snapshot:
                writer.put(stored)
                copied += 1
                progress(1)
        with contextlib.closing(target.snapshot()) as check:
            found = sum(1 for _ in check)
        if found != copied:
            raise ConfigError(f"resharding copied {copied} objects but {found} are in {new}")
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        old = path.with_name(f"{path.name}.before-reshard-{stamp}")
        with (new / RESHARD_MARK).open("w") as mark:
            mark.write(old.name)
            os.fsync(mark.fileno())
        sync_folder(new)
        os.rename(path, old)
        os.rename(new, path)
        (path / RESHARD_MARK).unlink()
        sync_folder(path.parent)
        return old
    finally:
        release()


class _Writer:
    """Objects written to their hosts' stores, a transaction per WRITE_BATCH objects of a
    host; at most OPEN_STORES stores open at once."""

    def __init__(self, storage: Storage, layout: Layout, service: ServiceId) -> None:
        self._storage = storage
        self._layout = layout
        self._service = service
        self._stores: OrderedDict[str, HostStore] = OrderedDict()
        self._pending: dict[str, list[StoredObject]] = {}

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *failed: object) -> None:
        try:
            if failed[0] is None:
                for host in list(self._pending):
                    self._flush(host)
        finally:
            for store in self._stores.values():
                store.close()

    def put(self, stored: StoredObject) -> None:
        host = host_name(self._layout, stored.name)
        batch = self._pending.setdefault(host, [])
        batch.append(stored)
        if len(batch) >= WRITE_BATCH:
            self._flush(host)

    def _flush(self, host: str) -> None:
        batch = self._pending.pop(host, [])
        if batch:
            self._write(self._store(host), batch)

    def _write(self, store: HostStore, batch: list[StoredObject]) -> None:
        store.write(
            changes=(
                (stored.name, key, text) for stored in batch for key, text in stored.state.items()
            ),
            applied=((stored.name, op_id, op) for stored in batch for op_id, op in stored.applied),
        )

    def _store(self, host: str) -> HostStore:
        store = self._stores.get(host)
        if store is None:
            while len(self._stores) >= OPEN_STORES:  # the least recently used goes, written
                oldest, closing = self._stores.popitem(last=False)
                try:
                    batch = self._pending.pop(oldest, [])
                    if batch:
                        self._write(closing, batch)
                finally:
                    closing.close()
            store = self._stores[host] = self._storage.open_host(host, self._layout, self._service)
        self._stores.move_to_end(host)
        return store


def _line(stored: StoredObject) -> str:
    applied = [[op_id, op.at, op.request, op.result] for op_id, op in stored.applied]
    return json.dumps({"name": stored.name, "state": stored.state, "applied": applied}) + "\n"


def _objects(path: Path) -> Iterator[StoredObject]:
    with path.open(encoding="utf-8") as lines:
        next(lines)  # the header
        for line in lines:
            record = json.loads(line)
            if record.get("end") is True:
                return
            yield _stored(record, str(path))


def _stored(record: Any, where: str) -> StoredObject:
    """One backup line as an object; ConfigError naming `where` if it is not one."""
    try:
        name = record["name"]
        state = record["state"]
        applied = [
            (op_id, AppliedOp(float(at), request, result))
            for op_id, at, request, result in record["applied"]
        ]
        checks = [isinstance(name, str) and name, isinstance(state, dict)]
        checks += [isinstance(v, str) for pair in state.items() for v in pair]
        checks += [
            isinstance(v, str) for op_id, op in applied for v in (op_id, op.request, op.result)
        ]
    except (KeyError, TypeError, ValueError):
        checks = [False]
    if not all(checks):
        raise ConfigError(f"{where}: not an object of a counters backup")
    return StoredObject(name, state, applied)
