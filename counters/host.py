"""The host: runs operations on the objects it hosts, committing each batch once.

Plain Python, no Ray: `runtime.py` turns `ObjectHost` into a Ray actor, and unit tests build it
directly.

Lifecycle and failure semantics of a host:

- Construction never touches the disk, so a host always starts. The storage dir's layout is bound
  and the SQLite file opened on the first batch, and again on every batch until that succeeds: a
  storage dir that is missing, read-only or mismatched fails the operations with a clear error
  instead of killing the actor, and the host recovers by itself once the cause is gone.
- `apply` runs the batch's operations one after another, each against its object's storage. An
  operation that raises fails alone: its writes are dropped and its caller gets the error.
- Then every kept write of the batch is committed in one SQLite transaction (group commit), and
  only then are the outcomes returned. If the commit fails, every operation of the batch fails
  with StorageFailed and nothing of it is acknowledged or kept in memory.
- If the process dies during `apply`, nothing uncommitted was acknowledged. Ray restarts the actor
  and objects are loaded from disk again on their next call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import CountersError, InvalidInput, StorageFailed, UnknownMethod
from .object_storage import ObjectStorage
from .operations import Operation, Outcome
from .placement import Layout
from .sqlite_store import SqliteStore
from .storage_dir import StorageDir
from .validation import validate_name

__all__ = ["ObjectHost"]


class ObjectHost:
    """Hosts objects of one class, keyed by name, with their state in one SQLite file."""

    def __init__(
        self, object_class: type, host_name: str, storage_dir: str, layout: Layout
    ) -> None:
        self.object_class = object_class
        self.host_name = host_name
        self.layout = layout
        self._storage_dir = StorageDir(Path(storage_dir))
        self._store: SqliteStore | None = None
        self._objects: dict[str, tuple[Any, ObjectStorage]] = {}
        self._signatures: dict[str, inspect.Signature] = {}
        self._batches = 0
        self._operations = 0

    def apply(self, operations: Sequence[Operation]) -> tuple[Outcome, ...]:
        """Run `operations` in order and commit their writes together; one Outcome each."""
        self._batches += 1
        self._operations += len(operations)
        try:
            store = self._open_store()
        except CountersError as error:
            return tuple(Outcome(error=error) for _ in operations)
        outcomes: list[Outcome] = []
        touched: dict[str, ObjectStorage] = {}
        for operation in operations:
            outcomes.append(self._run(operation, store, touched))
        if not any(storage.has_staged() for storage in touched.values()):
            return tuple(outcomes)  # a batch of reads needs no commit
        try:
            store.write(
                (name, key, text)
                for name, storage in touched.items()
                for key, text in storage.staged()
            )
        except StorageFailed as error:
            for name, storage in touched.items():
                storage.abort()
                # The file may know better than our cache after a failed commit: reload it.
                self._objects.pop(name, None)
            return tuple(Outcome(error=error) for _ in operations)
        for storage in touched.values():
            storage.commit()
        return tuple(outcomes)

    def call(self, object_name: str, method: str, *args: Any) -> Any:
        """One operation, for callers using bare Ray: returns its value or raises its error."""
        return self.apply([Operation(object_name, method, args)])[0].unwrap()

    def stats(self) -> dict[str, int]:
        """Calls (batches) and operations served since the actor started, objects in memory."""
        return {
            "batches": self._batches,
            "operations": self._operations,
            "objects": len(self._objects),
        }

    def __repr__(self) -> str:
        # Ray's dashboard shows an actor's repr next to it.
        return f"{type(self).__name__}({self.host_name})"

    def _run(
        self, operation: Operation, store: SqliteStore, touched: dict[str, ObjectStorage]
    ) -> Outcome:
        try:
            name = validate_name(operation.object_name)
            instance, storage = self._activate(name, store)
            method = self._method(instance, operation.method, operation.args)
        except CountersError as error:
            return Outcome(error=error)
        touched[name] = storage
        try:
            value = method(*operation.args)
        except CountersError as error:
            storage.end_operation(keep=False)
            return Outcome(error=error)
        except Exception as error:  # a bug in the object: fail this operation, keep the host
            storage.end_operation(keep=False)
            return Outcome(
                error=CountersError(
                    f"{self.object_class.__name__}.{operation.method} raised "
                    f"{type(error).__name__}: {error}"
                )
            )
        storage.end_operation(keep=True)
        return Outcome(value=value)

    def _activate(self, name: str, store: SqliteStore) -> tuple[Any, ObjectStorage]:
        found = self._objects.get(name)
        if found is None:
            storage = ObjectStorage(store.load(name))
            found = (self.object_class(storage), storage)
            self._objects[name] = found
        return found

    def _method(self, instance: Any, name: str, args: tuple[Any, ...]) -> Callable[..., Any]:
        # Only public methods defined by the object's class are RPC methods.
        if name.startswith("_") or not callable(getattr(self.object_class, name, None)):
            raise UnknownMethod(f"{self.object_class.__name__} has no method {name!r}")
        method: Callable[..., Any] = getattr(instance, name)
        signature = self._signatures.get(name)
        if signature is None:
            signature = self._signatures[name] = inspect.signature(method)
        try:
            signature.bind(*args)
        except TypeError as error:
            raise InvalidInput(f"bad arguments for {name}: {error}") from None
        return method

    def _open_store(self) -> SqliteStore:
        if self._store is None:
            self._storage_dir.bind_layout(self.layout)
            self._store = SqliteStore(self._storage_dir.host_path(self.host_name), self.host_name)
        return self._store
