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
a backup file is whole or absent, and a restore refuses one without its last line.

A restore writes through the hosts' own storage code (`HostStore.write`): it claims the target
for itself (refused while a service uses it), takes each host's data over with a new epoch (a
host of another layout still running would be fenced), and refuses a target that holds counters
unless told to replace them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .applied_log import AppliedOp
from .errors import ConfigError
from .object_storage import DELETED
from .placement import Layout, Placement, host_name
from .progress import Progress, quiet
from .storage import HostStore, ServiceId, Storage, StorageDir, StoredObject

__all__ = ["BACKUP_FORMAT", "backup", "read_backup", "reshard", "restore"]

BACKUP_FORMAT = "counters-backup"
VERSION = 1
WRITE_BATCH = 500  # objects per transaction of a restore
OPEN_STORES = 64  # host stores a restore keeps open (a per-name layout has one per counter)


def backup(
    storage: Storage, path: Path, class_name: str, force: bool = False, progress: Progress = quiet
) -> int:
    """Write a snapshot of `storage` to `path`; how many objects. Refuses an existing file
    unless `force`."""
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
        _sync_folder(path.parent)
    finally:
        aside.unlink(missing_ok=True)
    return objects


def read_backup(path: Path) -> tuple[dict[str, Any], Iterator[StoredObject]]:
    """The header of the backup at `path` and its objects; ConfigError if it is not one of
    ours, or not whole (checked before any object is given)."""
    try:
        with path.open(encoding="utf-8") as lines:
            header = json.loads(next(lines, "null"))
            last = None
            for last in lines:  # noqa: B007  (the last line is the one we want)
                pass
        if not isinstance(header, dict) or header.get("format") != BACKUP_FORMAT:
            raise ConfigError(f"{path} is not a counters backup")
        if header.get("version") != VERSION:
            raise ConfigError(f"{path} is a backup of version {header.get('version')}, not 1")
        end = json.loads(last) if last else None
        if not isinstance(end, dict) or end.get("end") is not True:
            raise ConfigError(f"{path} is not whole (no end line): the backup did not finish")
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read backup {path}: {error}") from None
    return {**header, "objects": end["objects"]}, _objects(path)


def restore(
    path: Path,
    storage: Storage,
    placement: Placement = Placement.SHARDED,
    shards: int = 1,
    force: bool = False,
    progress: Progress = quiet,
) -> int:
    """Write the backup at `path` into `storage`, laid out as `placement` and `shards`; how
    many objects. Refuses storage that holds counters, unless `force`: then every counter
    there is replaced by the backup's, and those not in the backup are deleted."""
    header, objects = read_backup(path)
    layout = Layout(header["class_name"], placement, shards)
    with contextlib.closing(storage.scan("", "")) as existing:
        present = [name for name, state in existing if state]
    if present and not force:
        raise ConfigError(
            f"{storage.describe()} holds {len(present)} counter(s) already "
            f"(such as {present[0]!r}); restore into new storage, or --force to replace them"
        )
    service = ServiceId(f"restore-{uuid.uuid4().hex}", f"counters restore in pid {os.getpid()}")
    with _Writer(storage, layout, service) as writer:
        restored = set()
        for stored in objects:
            writer.put(stored)
            restored.add(stored.name)
            progress(1)
        for name in present:
            if name not in restored:
                writer.put(StoredObject(name, {}, []))  # replaced by nothing: deleted
    return len(restored)


def reshard(path: Path, shards: int, progress: Progress = quiet) -> Path:
    """Lay the storage dir at `path` out anew on `shards` shards, offline: copied into a new
    dir, checked, then put in its place. Refused while a service uses the dir. The old dir
    stays beside it; its new name is returned."""
    if shards < 1:
        raise ConfigError(f"--shards must be at least 1, not {shards}")
    source = StorageDir(path)
    layout = source.recorded_layout()
    if layout is None:
        raise ConfigError(f"{path} is not a storage dir with counters in it")
    service = ServiceId(f"reshard-{uuid.uuid4().hex}", f"counters reshard in pid {os.getpid()}")
    release = source.hold(service)  # StorageDirInUse while a service serves from it
    try:
        new = path.with_name(f"{path.name}.resharding")
        if new.exists():  # left by a reshard that did not finish: never in use
            shutil.rmtree(new)
        target = StorageDir(new)
        copied = 0
        with (
            _Writer(target, Layout(layout.class_name, Placement.SHARDED, shards), service) as w,
            contextlib.closing(source.snapshot()) as snapshot,
        ):
            for stored in snapshot:
                w.put(stored)
                copied += 1
                progress(1)
        with contextlib.closing(target.snapshot()) as check:
            found = sum(1 for _ in check)
        if found != copied:
            raise ConfigError(f"resharding copied {copied} objects but {found} are in {new}")
        old = path.with_name(f"{path.name}.before-reshard-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(path, old)
        os.rename(new, path)
        _sync_folder(path.parent)
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
        if not batch:
            return
        store = self._store(host)
        ids = {(stored.name, op_id) for stored in batch for op_id, _ in stored.applied}
        known = store.find_applied(ids)  # a restore run again over a replaced target
        store.write(
            changes=_changes(store, batch),
            applied=(
                (stored.name, op_id, op)
                for stored in batch
                for op_id, op in stored.applied
                if (stored.name, op_id) not in known
            ),
        )

    def _store(self, host: str) -> HostStore:
        store = self._stores.get(host)
        if store is None:
            while len(self._stores) >= OPEN_STORES:
                oldest, closing = self._stores.popitem(last=False)
                self._flush_closed(oldest, closing)
            store = self._stores[host] = self._storage.open_host(host, self._layout, self._service)
        self._stores.move_to_end(host)
        return store

    def _flush_closed(self, host: str, store: HostStore) -> None:
        self._stores[host] = store  # written with it, then let go
        try:
            self._flush(host)
        finally:
            del self._stores[host]
            store.close()


def _changes(store: HostStore, batch: Iterable[StoredObject]) -> Iterator[tuple[str, str, Any]]:
    """Each object's keys as the backup has them; keys the target has beyond those, deleted."""
    for stored in batch:
        yield from ((stored.name, key, text) for key, text in stored.state.items())
        for key in store.load(stored.name).keys() - stored.state.keys():
            yield stored.name, key, DELETED


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
            applied = [
                (op_id, AppliedOp(at, request, result))
                for op_id, at, request, result in record["applied"]
            ]
            yield StoredObject(record["name"], record["state"], applied)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
