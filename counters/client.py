"""The client: a namespace binding like Durable Objects' ``env.COUNTERS``, and its stubs.

    counters = Namespace(Settings.load())      # after start_ray(), or inside a Ray worker
    stub = counters.get_by_name("A")
    await stub.increment()                     # -> 1
    stub.blocking.get_counter_value()          # -> 1, for scripts

Theory of operation. Every operation goes to the host actor its name is placed on. Handles are
looked up or created once per host and cached. Async calls to one host are coalesced: while a
call to a host is in flight, new operations for it queue up, and when it returns they all leave
together as the next call, up to ``max_batch`` at a time. The host commits each call once, so a
busy gateway gets group commit without any waiting on purpose, and an idle one sends every
operation at once. Blocking calls go straight to the host, one call each.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, cast

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, RayActorError

from .counter import Counter
from .errors import CountersError, HostUnavailable, OutcomeUnknown
from .operations import Operation, Outcome
from .placement import Layout
from .runtime import agree_on_service, get_or_create_host
from .settings import Settings
from .validation import check_amount, validate_name

__all__ = ["BlockingCounterStub", "CounterStub", "Namespace"]


class Namespace:
    """All objects of one class in one Ray namespace, found by name. Needs a connected Ray."""

    def __init__(
        self, settings: Settings | None = None, object_class: type = Counter, *, join: bool = False
    ) -> None:
        self.settings = agree_on_service(settings or Settings.load(), object_class, join=join)
        self.object_class = object_class
        self.layout: Layout = self.settings.layout(object_class)
        self._handles: dict[str, ActorHandle[Any]] = {}
        self._handles_lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}

    @classmethod
    def join(cls, namespace: str = "counters", object_class: type = Counter) -> Namespace:
        """Bind to the objects a running service already serves, with that service's settings."""
        return cls(Settings.load(namespace=namespace), object_class, join=True)

    def get_by_name(self, name: str) -> CounterStub:
        """A stub for the object called `name`; it is created on first use."""
        return CounterStub(self, validate_name(name))

    def host_for(self, name: str) -> str:
        """The Ray actor name of the host serving `name`."""
        return self.layout.host_for(name)

    async def call(self, operation: Operation) -> Any:
        """Run `operation` on its host, coalesced with others in flight; its value or error."""
        host = self.host_for(operation.object_name)
        lane = self._lanes.get(host)
        loop = asyncio.get_running_loop()
        if lane is None or lane.loop is not loop:
            lane = self._lanes[host] = _Lane(self, host, loop)
        return await lane.submit(operation)

    def call_blocking(self, operation: Operation) -> Any:
        host = self.host_for(operation.object_name)
        handle = self.handle(host)
        return self._send(host, handle, [operation])[0].unwrap()

    def handle(self, host: str) -> ActorHandle[Any]:
        """The cached handle of `host`, looked up or created on first use (blocking)."""
        handle = self._handles.get(host)
        if handle is not None:
            return handle
        with self._handles_lock:
            handle = self._handles.get(host)
            if handle is None:
                try:
                    handle = get_or_create_host(self.object_class, host, self.settings, self.layout)
                except Exception as error:
                    raise HostUnavailable(f"cannot reach or create host {host}: {error}") from None
                self._handles[host] = handle
        return handle

    def known_hosts(self) -> list[str]:
        """The hosts this binding has reached so far."""
        return sorted(self._handles)

    def kill_hosts(self) -> None:
        """Stop every host this binding reached (their data stays on disk). For tests and admin."""
        with self._handles_lock:
            handles, self._handles = dict(self._handles), {}
        for handle in handles.values():
            ray.kill(handle, no_restart=True)

    async def send(
        self, host: str, handle: ActorHandle[Any], operations: Sequence[Operation]
    ) -> tuple[Outcome, ...]:
        try:
            outcomes: tuple[Outcome, ...] = await handle.apply.remote(tuple(operations))
        except RayActorError as error:
            raise self._lost(host, error) from None
        return outcomes

    def _send(
        self, host: str, handle: ActorHandle[Any], operations: Sequence[Operation]
    ) -> tuple[Outcome, ...]:
        try:
            outcomes = cast(tuple[Outcome, ...], ray.get(handle.apply.remote(tuple(operations))))
        except RayActorError as error:
            raise self._lost(host, error) from None
        return outcomes

    def _lost(self, host: str, error: RayActorError) -> CountersError:
        if isinstance(error, ActorDiedError):
            # Gone for good (killed, or its node lost): look it up or create it anew next time.
            with self._handles_lock:
                self._handles.pop(host, None)
        return OutcomeUnknown(
            f"host {host} failed during the call, which may or may not have been applied: "
            f"{type(error).__name__}"
        )


class _Lane:
    """The queue of operations for one host in one event loop, at most one call in flight."""

    def __init__(self, namespace: Namespace, host: str, loop: asyncio.AbstractEventLoop) -> None:
        self.namespace = namespace
        self.host = host
        self.loop = loop
        self._waiting: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._sending = False

    def submit(self, operation: Operation) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        self._waiting.append((operation, future))
        if not self._sending:
            self._sending = True
            self.loop.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            handle = self.namespace._handles.get(self.host)
            while self._waiting:
                limit = self.namespace.settings.max_batch
                batch, self._waiting = self._waiting[:limit], self._waiting[limit:]
                # A caller that gave up before its operation left is not sent: nobody awaits it.
                batch = [(op, future) for op, future in batch if not future.done()]
                if not batch:
                    continue
                try:
                    if handle is None:
                        handle = await asyncio.to_thread(self.namespace.handle, self.host)
                    outcomes = await self.namespace.send(self.host, handle, [op for op, _ in batch])
                except CountersError as error:
                    handle = None
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                except BaseException as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if outcome.error is not None:
                        future.set_exception(outcome.error)
                    else:
                        future.set_result(outcome.value)
        finally:
            self._sending = False


class CounterStub:
    """Awaitable RPC methods of one counter, as in the example's stub."""

    def __init__(self, namespace: Namespace, name: str) -> None:
        self.namespace = namespace
        self.name = name

    async def get_counter_value(self) -> int:
        value: int = await self.namespace.call(Operation(self.name, "get_counter_value"))
        return value

    async def increment(self, amount: int = 1) -> int:
        operation = Operation(self.name, "increment", (check_amount(amount),))
        value: int = await self.namespace.call(operation)
        return value

    async def decrement(self, amount: int = 1) -> int:
        operation = Operation(self.name, "decrement", (check_amount(amount),))
        value: int = await self.namespace.call(operation)
        return value

    @property
    def blocking(self) -> BlockingCounterStub:
        """The same counter with blocking methods, for scripts."""
        return BlockingCounterStub(self.namespace, self.name)

    def __repr__(self) -> str:
        return f"CounterStub({self.name!r})"


class BlockingCounterStub:
    """Blocking RPC methods of one counter; each call waits for its own round trip."""

    def __init__(self, namespace: Namespace, name: str) -> None:
        self.namespace = namespace
        self.name = name

    def get_counter_value(self) -> int:
        value: int = self.namespace.call_blocking(Operation(self.name, "get_counter_value"))
        return value

    def increment(self, amount: int = 1) -> int:
        operation = Operation(self.name, "increment", (check_amount(amount),))
        value: int = self.namespace.call_blocking(operation)
        return value

    def decrement(self, amount: int = 1) -> int:
        operation = Operation(self.name, "decrement", (check_amount(amount),))
        value: int = self.namespace.call_blocking(operation)
        return value

    def __repr__(self) -> str:
        return f"BlockingCounterStub({self.name!r})"
