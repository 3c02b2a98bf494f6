"""Watching counters from one process: a poller per host, fanning changes out to watchers.

Theory of operation. A process (a gateway, a Python client) has one `WatchHub` per namespace
binding. Each `Watch` names counters; the hub keeps, for every host that serves a watched name,
one poller: a loop of calls to the host's ``changes`` (`change_feed.py`), which wait on a
thread of the host's own, never its writer. Whatever the number of watchers in the process,
a host sees one waiting call from it.

- A watch starts by registering its new names with their hosts and then reading them: the first
  event of each name is its value now, and no change falls between the read and the feed.
- Each change reaches every watch of its name. A watch passes on a value only if its version is
  newer than the last it passed on: resends, reads that raced a change, and a resynchronised
  host's latest values never go backwards or twice.
- A poller that loses its host (restarted, moved, unreachable) tries again with backoff, and
  once the host answers, registers and reads its names again: changes made while it was away
  arrive as the latest value.
- A watch holds at most ``backlog`` values its consumer has not taken. One more, and the watch
  is dropped (`WatcherDropped`): a slow consumer costs bounded memory, and may resume.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ray.exceptions import RayActorError

from .change_feed import FeedAnswer
from .errors import CountersError, HostUnavailable, WatcherDropped
from .runtime import WATCH_WAIT
from .values import CounterValue

if TYPE_CHECKING:
    from .client import Namespace

__all__ = ["Watch", "WatchHub"]

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0
# A host's answer comes within WATCH_WAIT; past this, it counts as lost (a partitioned node).
_CALL_TIMEOUT = WATCH_WAIT + 15.0


class Watch:
    """One watcher's stream of values: ``async for value in watch``; `close` when done."""

    def __init__(
        self, hub: WatchHub, names: Sequence[str], since: Mapping[str, int], backlog: int
    ) -> None:
        self.names = tuple(names)
        self.since = dict(since)  # what the watcher had seen before, if it resumes
        # The version of each name last passed on to the consumer: what it has seen.
        self.seen: dict[str, int] = dict(since)
        self._offered: dict[str, int] = dict(since)
        self._hub = hub
        # Room for the first value of every name, and `backlog` changes beyond.
        self._backlog = backlog + len(self.names)
        self._values: asyncio.Queue[CounterValue | None] = asyncio.Queue()
        self.dropped = False
        self.closed = False

    def offer(self, value: CounterValue) -> None:
        """A value of a watched name, from the hub: queued if newer than the last."""
        if self.dropped or value.version <= self._offered.get(value.name, -1):
            return
        self._offered[value.name] = value.version
        if self._values.qsize() >= self._backlog:
            self.dropped = True
            self._values.put_nowait(None)  # wakes the consumer, to learn it was dropped
            self._hub.unwatch(self)
            return
        self._values.put_nowait(value)

    def restart(self, name: str, version: int) -> None:
        """The watcher's resume point for `name` is past anything stored (a guess, or another
        service's): forget it, so the value now comes through."""
        if self._offered.get(name) == self.since.get(name) and self.since.get(name, -1) > version:
            self._offered.pop(name)
            self.seen.pop(name, None)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> CounterValue:
        value = await self._values.get()
        if value is None:
            self._values.put_nowait(None)  # and so for any later call
            if not self.dropped:
                raise StopAsyncIteration
            raise WatcherDropped(
                f"this watcher fell more than {self._backlog - len(self.names)} changes behind "
                "and was dropped; "
                "watch again to resume from the latest values"
            )
        self.seen[value.name] = value.version
        return value

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._values.put_nowait(None)  # a consumer waiting for a value: it ends
            self._hub.unwatch(self)

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class WatchHub:
    """Every watch of one namespace binding in one event loop, and a poller per host."""

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        self.loop = asyncio.get_running_loop()
        self.id = secrets.token_hex(8)  # how hosts tell this process's calls from others'
        self._watches: dict[str, set[Watch]] = {}  # name -> its watches
        self._names: dict[str, set[str]] = {}  # host -> names watched on it
        self._pollers: dict[str, asyncio.Task[None]] = {}  # host -> its poller

    @property
    def watchers(self) -> int:
        return len({watch for watches in self._watches.values() for watch in watches})

    async def watch(
        self, names: Sequence[str], since: Mapping[str, int] | None = None, backlog: int = 1000
    ) -> Watch:
        """A watch of `names`: first the value of each now (unless it is still at the version
        in `since`), then each change."""
        watch = Watch(self, names, since or {}, backlog)
        new: dict[str, list[str]] = {}  # host -> names nobody here watched yet
        for name in watch.names:
            if name not in self._watches:
                host = self.namespace.host_for(name)
                new.setdefault(host, []).append(name)
                self._names.setdefault(host, set()).add(name)
            self._watches.setdefault(name, set()).add(watch)
        try:
            # Registered before read: a change after the read is in the host's feed, and a
            # new poller follows the feed from the registration on (not from a later one of
            # its own, which would fold the changes in between into one).
            hosts = list(new)
            starts = await asyncio.gather(*(self._register(host, new[host]) for host in hosts))
            for host, start in zip(hosts, starts, strict=True):
                if host not in self._pollers and self._names.get(host):
                    self._pollers[host] = asyncio.create_task(self._poll(host, start))
            values = await self.namespace.get_many(watch.names)
        except BaseException:
            watch.close()
            raise
        for value in values:
            watch.restart(value.name, value.version)
            watch.offer(value)
        return watch

    def unwatch(self, watch: Watch) -> None:
        for name in watch.names:
            watches = self._watches.get(name)
            if watches is None:
                continue
            watches.discard(watch)
            if watches:
                continue
            del self._watches[name]
            host = self.namespace.host_for(name)
            hosted = self._names.get(host, set())
            hosted.discard(name)
            if not hosted:
                self._names.pop(host, None)
                poller = self._pollers.pop(host, None)
                if poller is not None:
                    poller.cancel()

    def offer(self, values: Iterable[CounterValue]) -> None:
        for value in values:
            for watch in list(self._watches.get(value.name, ())):
                watch.offer(value)

    def close(self) -> None:
        """Stop every poller; the watches end with the binding."""
        for watch in {watch for watches in self._watches.values() for watch in watches}:
            watch.close()
        for poller in self._pollers.values():
            poller.cancel()

    async def _register(self, host: str, names: list[str]) -> tuple[str, int]:
        """Register `names` with `host`, which may have to start again first (a per-name host
        that passivated): tried until the deadline, like any call."""
        give_up = time.monotonic() + self.namespace.settings.deadline
        backoff = _FIRST_BACKOFF
        while True:
            handle = await self.namespace.handle_async(host)
            try:
                answer: tuple[str, int] = await asyncio.wait_for(
                    handle.watch.remote(names), _CALL_TIMEOUT
                )
                return answer
            except (RayActorError, TimeoutError) as error:
                if isinstance(error, RayActorError):
                    self.namespace.lost(host, error)
                if time.monotonic() + backoff >= give_up:
                    raise HostUnavailable(f"host {host} did not answer: {error!r:.200}") from None
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(2 * backoff, _MAX_BACKOFF)

    async def _poll(self, host: str, start: tuple[str, int]) -> None:
        """Follow `host`'s feed from `start` (incarnation, number) while any of its names is
        watched here (module doc)."""
        try:
            await self._follow(host, start)
        finally:
            # Its waiting call, if any, need not wait out its time on the host's thread.
            handle = self.namespace.cached_handle(host)
            if handle is not None:
                handle.release.remote(self.id)

    async def _follow(self, host: str, start: tuple[str, int]) -> None:
        incarnation: str | None
        incarnation, last = start
        backoff = _FIRST_BACKOFF
        while self._names.get(host):
            names = sorted(self._names[host])
            try:
                if incarnation is None:  # (again) from the start: register, then read
                    incarnation, last = await self._register(host, names)
                    self.offer(await self.namespace.get_many(names))
                handle = await self.namespace.handle_async(host)
                answer: FeedAnswer = await asyncio.wait_for(
                    handle.changes.remote(incarnation, last, names, self.id), _CALL_TIMEOUT
                )
            except asyncio.CancelledError:
                raise
            except (RayActorError, CountersError, TimeoutError) as error:
                if isinstance(error, RayActorError):
                    self.namespace.lost(host, error)
                log.debug("watching host %s: %s; trying again", host, error)
                incarnation = None
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(2 * backoff, _MAX_BACKOFF)
                continue
            except Exception:
                log.exception("watching host %s failed; trying again", host)
                incarnation = None
                await asyncio.sleep(_MAX_BACKOFF)
                continue
            backoff = _FIRST_BACKOFF
            now, last_now, changes = answer
            if changes is None:  # another incarnation, or we fell behind its feed
                incarnation = None
                continue
            incarnation, last = now, last_now
            self.offer(CounterValue(name, count, version) for name, (count, version) in changes)
