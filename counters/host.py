"""The host: runs operations on the objects it hosts, committing each batch once.

Plain Python, no Ray: `runtime.py` turns `ObjectHost` into a Ray actor, and unit tests build it
directly.

Lifecycle and failure semantics of a host:

- Construction never touches storage, so a host always starts. On the first batch, and again on
  every batch until that succeeds, the host opens its store (`storage/`): the backend binds the
  layout, claims the storage for the host's service and takes the host's data over with a new
  epoch. Storage that is missing, read-only, mismatched or held by another writer fails the
  operations with a clear error instead of killing the actor, and the host recovers by itself
  once the cause is gone. The store, with its locks, is held for the host's life.
- Fenced: a commit that finds a newer writer's epoch in the file stores nothing, and from then
  on the host fails every operation with Fenced (retry-safe: nothing was stored) without
  touching the file; its actor exits, and the client resends to the current host.
- `apply` runs a batch's operations one after another, each against its object's storage. An
  operation that raises fails alone: its writes are dropped and its caller gets the error. An
  operation whose id the object already applied is answered with the first result, no effect:
  ids are recorded on disk (`applied_log.py`), and the commit refuses an id recorded before
  (IdsAlreadyRecorded), so the batch first runs as if every id were new, which most are, and
  runs again from storage with every id looked up if one was not. (Looking every id up first
  cost a query per batch, and on PostgreSQL a round trip.)
- Then every kept write of the batch, and the ids of the operations that made them, are committed
  in one SQLite transaction (group commit), and only then are the outcomes returned. If the commit
  fails, every operation of the batch fails with StorageFailed and nothing of it is acknowledged
  or kept in memory.
- If the process dies during `apply`, nothing uncommitted was acknowledged. Ray restarts the actor
  and objects are loaded from disk again on their next call.
- Passivation: `sweep` drops objects idle for longer than ``idle_timeout`` from memory, and the
  least recently used ones beyond ``max_objects``. Their state is on disk, so they load again on
  their next call. It runs between batches (Ray runs one call at a time), so it never races one.
"""

from __future__ import annotations

import inspect
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .applied_log import AppliedOp, Retention
from .change_feed import ChangeFeed
from .errors import (
    CountersError,
    Fenced,
    IdempotencyKeyReused,
    InvalidInput,
    OutcomeUnknown,
    StorageFailed,
    UnknownMethod,
)
from .metrics import NO_HOST_METRICS, HostMetrics
from .object_storage import ObjectStorage, decode_value, encode_value
from .operations import Operation, Outcome
from .placement import Layout
from .storage import HostStore, IdsAlreadyRecorded, ServiceId, Storage, StorageDir
from .validation import OP_ID_RULE, is_op_id, validate_name

__all__ = ["HostConfig", "ObjectHost"]


@dataclass(frozen=True)
class HostConfig:
    retention: Retention = field(default_factory=Retention)
    idle_timeout: float = 60.0  # seconds an object stays in memory unused
    max_objects: int = 100_000  # objects in memory at most, least recently used dropped first


@dataclass(slots=True)
class _Active:
    """An object in memory: the instance and its storage."""

    instance: Any
    storage: ObjectStorage
    last_used: float


class ObjectHost:
    """Hosts objects of one class, keyed by name, with their state in one SQLite file."""

    def __init__(
        self,
        object_class: type,
        host_name: str,
        storage: Storage | str,
        layout: Layout,
        config: HostConfig | None = None,
        clock: Callable[[], float] = time.time,
        service: ServiceId | None = None,
        metrics: HostMetrics = NO_HOST_METRICS,
    ) -> None:
        self.object_class = object_class
        self.host_name = host_name
        self.layout = layout
        self.config = config or HostConfig()
        self._clock = clock
        self._metrics = metrics
        # A path is the SQLite backend's storage dir, as tests and tools build hosts.
        self._storage = StorageDir(Path(storage)) if isinstance(storage, str) else storage
        self._store: HostStore | None = None
        # Hosts made without a service (tests, tools) belong to their process.
        self._service = service or ServiceId(
            f"process-{os.getpid()}", f"counters hosts in process {os.getpid()}"
        )
        self.fenced: Fenced | None = None  # set once a newer writer took the file over
        self._objects: OrderedDict[str, _Active] = OrderedDict()  # least recently used first
        self._arities: dict[str, tuple[int, int]] = {}  # method -> (least, most) arguments
        # Changes of watched objects, for the processes watching them (`change_feed.py`).
        self.feed = ChangeFeed()
        self._watched_changes: list[tuple[str, Any]] = []  # this batch's: (name, its read())
        self._batches = 0
        self._operations = 0
        self._passivated = 0
        self._last_call = clock()

    def apply(self, operations: Sequence[Operation]) -> tuple[Outcome, ...]:
        """Run `operations` in order and commit their writes together; one Outcome each."""
        now = self._last_call = self._clock()
        self._batches += 1
        self._operations += len(operations)
        try:
            if self.fenced is not None:
                raise self.fenced
            store = self._open_store()
        except CountersError as error:
            return tuple(Outcome(error=error) for _ in operations)
        try:
            return self._apply(operations, store, now, look_up_every_id=False)
        except IdsAlreadyRecorded:
            # An operation sent again had been applied: the batch again, from what storage
            # holds, knowing every id of it first.
            return self._apply(operations, store, now, look_up_every_id=True)

    def _apply(
        self,
        operations: Sequence[Operation],
        store: HostStore,
        now: float,
        look_up_every_id: bool,
    ) -> tuple[Outcome, ...]:
        touched: dict[str, _Active] = {}
        seen: dict[tuple[str, str], AppliedOp] = {}
        if look_up_every_id:
            try:
                seen = store.find_applied(
                    {
                        (name, op_id)
                        for name, _, _, op_id in operations
                        if type(name) is str and is_op_id(op_id)
                    }
                )
            except StorageFailed as error:
                return tuple(Outcome(error=error) for _ in operations)
        recorded: dict[tuple[str, str], AppliedOp] = {}  # this batch's ids, on disk at commit
        self._watched_changes = []  # published once committed
        with_id: list[int] = []  # operations that got as far as their id: valid, and known
        try:
            outcomes = [
                self._run(operation, index, store, touched, seen, recorded, with_id, now)
                for index, operation in enumerate(operations)
            ]
            return self._commit(
                operations, outcomes, store, touched, recorded, with_id, now, look_up_every_id
            )
        except BaseException:
            # Whatever went wrong, memory must not keep what storage may not hold, or the next
            # commit would store these writes without their ids: they load again from storage.
            self._drop(touched)
            raise

    def _commit(
        self,
        operations: Sequence[Operation],
        outcomes: list[Outcome],
        store: HostStore,
        touched: dict[str, _Active],
        recorded: dict[tuple[str, str], AppliedOp],
        with_id: list[int],
        now: float,
        looked_up: bool,
    ) -> tuple[Outcome, ...]:
        if not looked_up:
            # Most ids are new, and the commit refuses one that is not (IdsAlreadyRecorded):
            # only the ids of operations that wrote nothing now are looked up, for they may
            # have written before, and then their first answer stands.
            unwritten = [index for index in with_id if _key(operations[index]) not in recorded]
            try:
                seen = store.find_applied({_key(operations[i]) for i in unwritten})
            except StorageFailed as error:
                self._drop(touched)
                return tuple(Outcome(error=error) for _ in operations)
            for index in unwritten:
                first = seen.get(_key(operations[index]))
                if first is not None:
                    _, method_name, args, _ = operations[index]
                    op_id = _key(operations[index])[1]
                    outcomes[index] = _first_answer(first, method_name, args, op_id)
        if not recorded and not any(a.storage.has_staged() for a in touched.values()):
            # A batch of reads needs no commit, but answers from memory only while the file is
            # still ours: checked after reading, so no newer writer came in between.
            try:
                store.check_owner()
            except StorageFailed as error:
                if isinstance(error, Fenced):
                    self._fence(error)
                return tuple(Outcome(error=error) for _ in operations)
            self._cap_objects()
            self._metrics.batch(len(operations), None)
            return tuple(outcomes)
        started = time.perf_counter()
        try:
            store.write(
                changes=(
                    (name, key, text)
                    for name, active in touched.items()
                    for key, text in active.storage.staged()
                ),
                applied=((name, op_id, op) for (name, op_id), op in recorded.items()),
                forget_oldest=self.config.retention.forget_oldest(
                    store.applied_count(), len(recorded), now
                ),
            )
        except IdsAlreadyRecorded:
            self._drop(touched)
            if not looked_up:
                raise
            # Every id was looked up, and we are the one writer: not ours to explain (and the
            # ids, another client's secrets, stay out of the answer).
            failed = StorageFailed("an operation id was found recorded twice; nothing was stored")
            return tuple(Outcome(error=failed) for _ in operations)
        except (StorageFailed, OutcomeUnknown) as error:
            self._drop(touched)
            if isinstance(error, Fenced):
                self._fence(error)
            if isinstance(error, OutcomeUnknown):
                raise  # the call fails whole, and the client resends it with its ids
            return tuple(Outcome(error=error) for _ in operations)
        for active in touched.values():
            active.storage.commit()
        self._metrics.batch(len(operations), time.perf_counter() - started)
        if self._watched_changes:
            self.feed.publish(self._watched_changes)
        self._cap_objects()
        return tuple(outcomes)

    def _drop(self, touched: dict[str, _Active]) -> None:
        """Objects whose staged writes were not stored: storage knows better, load it again."""
        for name in touched:
            self._objects.pop(name, None)

    def call(self, object_name: str, method: str, *args: Any, op_id: str | None = None) -> Any:
        """One operation, for callers using bare Ray: returns its value or raises its error."""
        return self.apply([Operation(object_name, method, args, op_id)])[0].unwrap()

    def sweep(self) -> int:
        """Passivate idle objects and those beyond the memory cap; how many were dropped."""
        now = self._clock()
        dropped = 0
        while self._objects:
            name, active = next(iter(self._objects.items()))
            idle = now - active.last_used > self.config.idle_timeout
            if not idle and len(self._objects) <= self.config.max_objects:
                break
            del self._objects[name]
            dropped += 1
        self._passivated += dropped
        self._metrics.objects(len(self._objects), dropped)
        return dropped

    def forget_expired_ids(self) -> int:
        """Forget the ids past the retention window (never within the floor); how many."""
        if self._store is None:
            return 0
        return self._store.forget_applied_before(
            self.config.retention.expired_before(self._clock())
        )

    def _cap_objects(self) -> None:
        # After every batch, reads included: a stream of new names never grows memory past the
        # cap, whoever calls and whether or not anything sweeps.
        if len(self._objects) > self.config.max_objects:
            self.sweep()

    def idle_for(self) -> float:
        """Seconds since the last batch."""
        return self._clock() - self._last_call

    def stats(self) -> dict[str, int]:
        """Calls (batches) and operations served since the actor started, objects in memory."""
        return {
            "batches": self._batches,
            "operations": self._operations,
            "objects": len(self._objects),
            "passivated": self._passivated,
        }

    def __repr__(self) -> str:
        # Ray's dashboard shows an actor's repr next to it.
        return f"{type(self).__name__}({self.host_name})"

    def _run(
        self,
        operation: Operation,
        index: int,
        store: HostStore,
        touched: dict[str, _Active],
        seen: dict[tuple[str, str], AppliedOp],
        recorded: dict[tuple[str, str], AppliedOp],
        with_id: list[int],
        now: float,
    ) -> Outcome:
        # Unpacked, not read by field: the direct channel sends operations as plain tuples.
        name, method_name, args, op_id = operation
        try:
            active = self._objects.get(name) if type(name) is str else None
            if active is None:  # only names that passed validation are ever in memory
                active = self._activate(validate_name(name), store, now)
            else:
                self._objects.move_to_end(name)
                active.last_used = now
            method = self._method(active.instance, method_name, args)
        except CountersError as error:
            return Outcome(error=error)
        if op_id is not None and not is_op_id(op_id):  # bare Ray callers
            return Outcome(error=InvalidInput(f"{OP_ID_RULE}, not {op_id!r:.80}"))
        touched[name] = active
        request = ""
        if op_id is not None:
            with_id.append(index)
            request = _request(method_name, args)
            first = recorded.get((name, op_id)) or seen.get((name, op_id))
            if first is not None:
                return _first_answer(first, method_name, args, op_id)
        try:
            value = method(*args)
        except CountersError as error:
            active.storage.end_operation(keep=False)
            return Outcome(error=error)
        except Exception as error:  # a bug in the object: fail this operation, keep the host
            active.storage.end_operation(keep=False)
            return Outcome(
                error=CountersError(
                    f"{self.object_class.__name__}.{method_name} raised "
                    f"{type(error).__name__}: {error}"
                )
            )
        wrote = active.storage.end_operation(keep=True)
        if wrote:
            if op_id is not None:
                recorded[name, op_id] = AppliedOp(now, request, encode_value(value))
            if name in self.feed.watched:  # one event per change, as `read` shows it
                self._watched_changes.append((name, active.instance.read()))
        return Outcome(value=value)

    def _activate(self, name: str, store: HostStore, now: float) -> _Active:
        storage = ObjectStorage(store.load(name))
        active = _Active(self.object_class(storage), storage, now)
        self._objects[name] = active
        return active

    def _method(self, instance: Any, name: str, args: tuple[Any, ...]) -> Callable[..., Any]:
        arity = self._arities.get(name)
        if arity is None:
            # Only public methods defined by the object's class are RPC methods.
            function = getattr(self.object_class, name, None) if type(name) is str else None
            if not callable(function) or name.startswith("_"):
                raise UnknownMethod(f"{self.object_class.__name__} has no method {name!r}")
            arity = self._arities[name] = _arity(function)
        if not isinstance(args, tuple | list):  # bare Ray callers
            raise InvalidInput(f"arguments come as a tuple or a list, not {type(args).__name__}")
        low, high = arity
        if not low <= len(args) <= high:
            raise InvalidInput(
                f"{name} takes {low} to {high} arguments, not {len(args)}"
                if low != high
                else f"{name} takes {low} arguments, not {len(args)}"
            )
        method: Callable[..., Any] = getattr(instance, name)
        return method

    def _open_store(self) -> HostStore:
        if self._store is None:
            self._store = self._storage.open_host(self.host_name, self.layout, self._service)
        return self._store

    def _fence(self, error: Fenced) -> None:
        """A newer writer owns the file: forget everything, write nothing ever again."""
        self.fenced = error
        self._metrics.fenced()
        self._metrics.objects(0, len(self._objects))
        self._objects.clear()
        self.close()

    def close(self) -> None:
        """Let go of the file and the locks (a host that exits; tests); watchers are let go."""
        self.feed.close()
        if self._store is not None:
            self._store.close()
            self._store = None


def _key(operation: Operation) -> tuple[str, str]:
    name, _, _, op_id = operation
    return name, op_id  # type: ignore[return-value]  # only of operations with valid ids


def _first_answer(first: AppliedOp, method: str, args: tuple[Any, ...], op_id: str) -> Outcome:
    """The answer to an operation whose id was applied before: the first result, no effect."""
    request = _request(method, args)
    if first.request != request:
        return Outcome(
            error=IdempotencyKeyReused(
                f"operation id {op_id!r} was used for {first.request}, not {request}; "
                "use a new id for a new operation"
            )
        )
    return Outcome(value=decode_value(first.result))


def _request(method: str, args: tuple[Any, ...]) -> str:
    """What an operation asks, compactly: ``increment(5)``."""
    return f"{method}({', '.join(map(repr, args))})"


def _arity(function: Callable[..., Any]) -> tuple[int, int]:
    """How many positional arguments a method takes after self: (least, most)."""
    kinds = inspect.Parameter
    parameters = list(inspect.signature(function).parameters.values())[1:]
    positional = [
        p for p in parameters if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is kinds.empty]
    variadic = any(p.kind is kinds.VAR_POSITIONAL for p in parameters)
    return len(required), 2**31 if variadic else len(positional)
