"""The SQLite backend's storage directory: a file per host actor, the layout they were written
with, and the locks that make one writer.

A storage directory is bound to one layout (object class, placement, shard count) the first time
a host opens it, recorded in ``layout.json``. Opening it later with another layout is refused:
names would hash onto other files and their values would seem lost.

One writer, enforced by the kernel where the data is:

- A file, one host. A host holds an exclusive `flock` on its file's ``.lock`` for as long as it
  lives (the kernel drops it when the process dies, however it dies). A second process that
  wants the file waits a moment for a dying predecessor to let go, then gives up with
  StorageBusy.
- A dir, one service. Every host also holds a shared lock on ``owner.lock``, which names the
  service (Ray cluster and namespace) whose hosts use the dir. A host of another service is
  refused with StorageDirInUse while any host of the owner lives; once none does, the dir
  passes to the next service that opens it. `counters serve` asks the same question before it
  starts, and refuses to start.

Locks are advisory and local: they hold between processes of one machine, which is where a
SQLite storage dir lives. The epoch checked in every commit (`sqlite.py`) is the fence
that still holds where they do not.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import heapq
import json
import os
import random
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from urllib.parse import quote

from ..errors import LayoutMismatch, StorageBusy, StorageDirInUse, StorageFailed
from ..placement import Layout, Placement, host_file_name
from .interface import (
    SCAN_BATCH,
    Row,
    ServiceId,
    StoredObject,
    merged_objects,
    objects_of,
    scan_rows,
)
from .sqlite import SqliteStore

__all__ = ["StorageDir"]

LAYOUT_FILE = "layout.json"
OWNER_FILE = "owner.lock"
RESHARD_MARK = "RESHARDED"  # in a checked copy of a dir being resharded: put it in place
LOCK_WAIT = 5.0  # seconds a host waits for a dying predecessor to let go of its file
CLAIM_WAIT = 1.0  # seconds a host waits out hosts of its own service claiming the dir at once


class StorageDir:
    """The SQLite backend (`interface.Storage`): a directory on this machine."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open_host(self, host: str, layout: Layout, service: ServiceId) -> SqliteStore:
        """Bind `layout`, claim the dir for `service`, lock `host`'s file and take it over."""
        self.bind_layout(layout)
        locks = [self.claim(service)]
        try:
            locks.append(self.lock_host_file(host))
            writer = f"pid {os.getpid()} on {socket.gethostname()}, {service.description}"
            return SqliteStore(self.host_path(host), host, writer, locks)
        except BaseException:
            for fd in locks:
                os.close(fd)
            raise

    def describe(self) -> str:
        return f"storage dir {self.path}"

    def scan(self, prefix: str, after: str) -> Generator[tuple[str, dict[str, str]]]:
        """Every host's file, read-only, merged in name order (`interface.Storage.scan`).

        A name lives in one file, so the merge interleaves whole objects. Each file is read by
        its own connection, which sees its last commit (WAL) and never blocks its host; a
        per-name dir has a file per name, so a page there costs a query per counter stored.
        """
        files = sorted((self.path / "hosts").glob("*.sqlite3"))
        yield from objects_of(heapq.merge(*(_file_rows(path, prefix, after) for path in files)))

    def clear(self) -> None:
        for path in (self.path / "hosts").glob("*.sqlite3*"):  # with their WAL and shared memory
            path.unlink()
        (self.path / LAYOUT_FILE).unlink(missing_ok=True)

    def snapshot(self) -> Generator[StoredObject]:
        """Each host's file in one read transaction (`interface.Storage.snapshot`): a WAL
        snapshot, as of its last commit when the read began, which never blocks its host."""
        for path in sorted((self.path / "hosts").glob("*.sqlite3")):
            yield from _file_snapshot(path)

    def host_path(self, host: str) -> Path:
        return self.path / "hosts" / host_file_name(host)

    def lock_host_file(self, host: str, wait: float = LOCK_WAIT) -> int:
        """Lock `host`'s file for this process: a descriptor to keep open for the host's life.

        Raises StorageBusy if another process still holds it after `wait` seconds.
        """
        path = self.host_path(host).with_suffix(".lock")
        fd = _open_lock(path)
        if not _flock(fd, fcntl.LOCK_EX, wait):
            os.close(fd)
            raise StorageBusy(
                f"the file of host {host} in storage dir {self.path} is held by another "
                f"process ({path}); a second writer is refused, nothing was stored"
            )
        return fd

    def claim(self, service: ServiceId, wait: float = CLAIM_WAIT) -> int:
        """Hold the dir for `service`: a descriptor to keep open for the host's life.

        Raises StorageDirInUse while a live host of another service holds it.
        """
        fd = _open_lock(self.path / OWNER_FILE)
        give_up = time.monotonic() + wait
        try:
            while True:
                if not _flock(fd, fcntl.LOCK_SH, max(0.0, give_up - time.monotonic())):
                    break  # a claim in progress did not finish: count it as in use
                owner = _read_owner(fd)
                if owner is not None and owner.id == service.id:
                    return fd  # ours: keep the shared lock
                # Another service's, or nobody's: ours only if no host holds it at all. (Linux
                # gives up the shared lock while it tries for the exclusive one.)
                if _flock(fd, fcntl.LOCK_EX, 0):
                    _write_owner(fd, service)
                    continue  # back to shared, and check again that it is still ours
                if time.monotonic() >= give_up:
                    break
                time.sleep(random.uniform(0.005, 0.02))  # a host of ours may be claiming it
            raise StorageDirInUse(self._in_use_message(_read_owner(fd)))
        except BaseException:
            os.close(fd)
            raise

    def hold(self, service: ServiceId) -> Callable[[], None]:
        fd = self.claim(service)
        return functools.partial(os.close, fd)

    def refuse_if_in_use(self, service: ServiceId) -> None:
        """Raise StorageDirInUse if a live host of another service holds the dir."""
        path = self.path / OWNER_FILE
        if not path.exists():
            return
        fd = _open_lock(path)
        try:
            if _flock(fd, fcntl.LOCK_EX, 0):
                return  # no host holds it
            owner = _read_owner(fd)
            if owner is None or owner.id != service.id:
                raise StorageDirInUse(self._in_use_message(owner))
        finally:
            os.close(fd)

    def _in_use_message(self, owner: ServiceId | None) -> str:
        who = owner.description if owner is not None else "another counters service"
        return (
            f"storage dir {self.path} is in use by {who}; two services on one storage dir "
            "would overwrite each other's counts. Stop that service, join it (same Ray "
            "address and namespace), or use another storage dir"
        )

    def recorded_shards(self, class_name: str) -> int | None:
        """The shard count this dir was laid out with for `class_name`, sharded; else None.

        None too when nothing was recorded, or it cannot be read: binding a layout says why.
        """
        layout = self.recorded_layout()
        if layout is None or layout.placement is not Placement.SHARDED:
            return None
        return layout.shards if layout.class_name == class_name else None

    def recorded_layout(self) -> Layout | None:
        """The layout this dir was laid out with, if one was recorded and can be read."""
        try:
            recorded = json.loads((self.path / LAYOUT_FILE).read_text())
            placement = Placement(recorded["placement"])
            shards = recorded["shards"] if placement is Placement.SHARDED else 1
            return Layout(str(recorded["class_name"]), placement, int(shards))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def bind_layout(self, layout: Layout) -> None:
        """Record `layout` on first use; raise LayoutMismatch if another one was recorded."""
        wanted = {
            "class_name": layout.class_name,
            "placement": layout.placement.value,
            "shards": layout.shards if layout.placement is Placement.SHARDED else None,
        }
        target = self.path / LAYOUT_FILE
        try:
            if not self.path.exists():
                finish_reshard(self.path)  # else a host would start on an empty dir
            self.path.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                # Write aside, then link: of several hosts starting at once exactly one wins,
                # and nobody ever reads a half-written file.
                fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".layout-")
                try:
                    with os.fdopen(fd, "w") as out:
                        json.dump(wanted, out, indent=2)
                        out.flush()
                        os.fsync(out.fileno())
                    with contextlib.suppress(FileExistsError):  # another host won
                        os.link(tmp, target)
                finally:
                    os.unlink(tmp)
                # The link itself durable too: else a crash could leave host files whose
                # layout is gone, and the next service might bind another one to them.
                sync_folder(self.path)
            recorded = json.loads(target.read_text())
        except (OSError, ValueError) as error:
            raise StorageFailed(f"cannot read or write {target}: {error}") from None
        if recorded != wanted:
            raise LayoutMismatch(
                f"storage dir {self.path} holds data laid out as {recorded}, "
                f"but this service is configured as {wanted}; use the same placement and shard "
                "count, or another storage dir"
            )


_FIRST_ROWS = (
    "SELECT object, key, value FROM kv WHERE object > ? AND object >= ? "
    f"ORDER BY object, key LIMIT {SCAN_BATCH}"
)
_NEXT_ROWS = (
    f"SELECT object, key, value FROM kv WHERE (object, key) > (?, ?) "
    f"ORDER BY object, key LIMIT {SCAN_BATCH}"
)


def _file_rows(path: Path, prefix: str, after: str) -> Iterator[Row]:
    """One host file's rows for a scan, read-only (SQLite orders text by its UTF-8 bytes,
    which is code point order, as Python's). A file whose rows fit one query is closed before
    its first row is yielded: a per-name dir has a file per counter, and a scan reads them all
    at once, so none may stay open."""
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise StorageFailed(f"cannot read {path}: {error}") from None

    def fetch(position: tuple[str, str] | None) -> list[Row]:
        try:
            if position is None:
                return db.execute(_FIRST_ROWS, (after, prefix)).fetchall()
            return db.execute(_NEXT_ROWS, position).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []  # a host is creating the file at this moment: nothing stored yet
            raise StorageFailed(f"cannot read {path}: {error}") from None
        except sqlite3.Error as error:
            raise StorageFailed(f"cannot read {path}: {error}") from None

    try:
        first = fetch(None)
        if len(first) < SCAN_BATCH:
            db.close()
            yield from scan_rows(lambda position: [] if position else first, prefix)
            return
        yield from scan_rows(
            lambda position: first if position is None else fetch(position), prefix
        )
    finally:
        db.close()


def resharding_path(path: Path) -> Path:
    """Where a reshard of the dir at `path` builds its copy."""
    return path.with_name(f"{path.name}.resharding")


def finish_reshard(path: Path) -> None:
    """A reshard that stopped after putting the dir at `path` aside and before putting its
    checked copy in place (`backup.reshard`): put the copy in place now."""
    copy = resharding_path(path)
    if path.exists() or not (copy / RESHARD_MARK).exists():
        return
    os.rename(copy, path)
    (path / RESHARD_MARK).unlink()
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Where a file keeps its ids, by the tables it has: a file a host has not opened since an
# older release is read as that release wrote it (its host migrates it when it opens it).
_IDS_BY_TABLE = {
    "applied_ids": (
        "SELECT object, op_id, at, request, result FROM applied_ids ORDER BY object, seq"
    ),
    "applied": "SELECT object, op_id, at, request, result FROM applied ORDER BY object, at",
}


def _file_snapshot(path: Path) -> Iterator[StoredObject]:
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as error:
        raise StorageFailed(f"cannot read {path}: {error}") from None
    try:
        db.execute("BEGIN")  # every query below reads the same commit
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        if "kv" not in tables:
            return  # a host is creating the file at this moment: nothing stored yet
        rows = db.execute("SELECT object, key, value FROM kv ORDER BY object, key")
        query = next((_IDS_BY_TABLE[t] for t in _IDS_BY_TABLE if t in tables), None)
        ids = db.execute(query) if query is not None else iter(())
        yield from merged_objects(rows, ids)
    except sqlite3.Error as error:
        raise StorageFailed(f"cannot read {path}: {error}") from None
    finally:
        db.close()


def _open_lock(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise StorageFailed(f"cannot open lock file {path}: {error}") from None


def _flock(fd: int, kind: int, wait: float) -> bool:
    """Take `kind` (shared or exclusive) on `fd`, trying for up to `wait` seconds."""
    give_up = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= give_up:
                return False
            time.sleep(0.01)


def _read_owner(fd: int) -> ServiceId | None:
    try:
        recorded = json.loads(os.pread(fd, 4096, 0) or b"null")
        return ServiceId(recorded["id"], recorded["description"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_owner(fd: int, service: ServiceId) -> None:
    data = json.dumps(service._asdict()).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
