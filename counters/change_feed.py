"""What a host tells the processes that watch its objects: their changes, in commit order.

Plain Python, threads: the host publishes after each commit (under its single writer), and
watchers wait on another thread (Ray's "watch" concurrency group, `runtime.py`), so a waiting
watcher never holds the writer.

- Only watched names are published. A watching process first registers names (`watch`) and
  then reads their values: every change after the registration is in the feed, every change
  before it in the read, so nothing falls between the two. Registrations expire unless renewed
  (each `wait` renews them), so a watcher that went away costs nothing after a minute; one
  that comes back after its registration expired (a stalled process) is told to resynchronise,
  since changes went unpublished meanwhile.
- One waiting call per watcher. Each watching process names itself (`watcher`); its newer call
  answers its older one at once (empty), and `release` does so when it stops watching, so a
  thread of the host never waits for a caller that has gone.
- The feed is a numbered log of the last `capacity` changes. A watcher asks for the changes
  after the last number it saw. If those were dropped from the log, or the host is another
  incarnation (restarted: numbers start again), it is told to resynchronise (`None`): register
  and read again, and take the latest values; missed changes arrive as the latest value.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ChangeFeed", "FeedAnswer"]

# (incarnation, number of the last change, the changes after the number asked: (name, value),
# or None: resynchronise)
FeedAnswer = tuple[str, int, list[tuple[str, Any]] | None]


class ChangeFeed:
    """The changes of watched objects of one host, numbered from 1 in each incarnation."""

    def __init__(
        self,
        capacity: int = 10_000,
        registration: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.incarnation = secrets.token_hex(8)  # per host process: numbers restart with it
        self.registration = registration
        self._clock = clock
        self._changed = threading.Condition()
        self._last = 0
        self._log: deque[tuple[int, str, Any]] = deque(maxlen=capacity)
        self.watched: dict[str, float] = {}  # name -> until when it is watched (clock time)
        self._calls: dict[str, int] = {}  # watcher -> number of its latest call
        self._closed = False

    def watch(self, names: Iterable[str]) -> tuple[str, int]:
        """Publish changes of `names` from now on; (incarnation, number of the last change)."""
        with self._changed:
            self._renew(names)
            return self.incarnation, self._last

    def publish(self, changes: Iterable[tuple[str, Any]]) -> None:
        """Changes just committed, in commit order: (name, value) of watched names."""
        with self._changed:
            for name, value in changes:
                self._last += 1
                self._log.append((self._last, name, value))
            self._changed.notify_all()

    def wait(
        self,
        incarnation: str | None,
        after: int,
        names: Iterable[str],
        timeout: float,
        watcher: str = "",
    ) -> FeedAnswer:
        """The changes after number `after`, waiting up to `timeout` seconds for one; renews
        the registration of `names`. None for the changes: resynchronise (module doc)."""
        names = list(names)
        with self._changed:
            lapsed = any(name not in self.watched for name in names)
            self._renew(names)
            kept_from = self._log[0][0] if self._log else self._last + 1
            if (
                lapsed
                or incarnation != self.incarnation
                or not kept_from - 1 <= after <= self._last
            ):
                return self.incarnation, self._last, None
            call = self._calls[watcher] = self._calls.get(watcher, 0) + 1
            self._changed.notify_all()  # the watcher's older call, if any, answers now
            self._changed.wait_for(
                lambda: self._last > after or self._closed or self._calls.get(watcher) != call,
                timeout,
            )
            if self._calls.get(watcher) == call:
                del self._calls[watcher]
            if self._log and self._log[0][0] > after + 1:
                return self.incarnation, self._last, None  # overtaken while waiting
            newest_first = itertools.islice(reversed(self._log), self._last - after)
            changes = [(name, value) for _, name, value in newest_first]
            changes.reverse()
            return self.incarnation, self._last, changes

    def release(self, watcher: str) -> None:
        """`watcher` stopped watching here: its waiting call, if any, answers now."""
        with self._changed:
            if watcher in self._calls:
                self._calls[watcher] += 1
                self._changed.notify_all()

    def expire(self) -> None:
        """Forget registrations that were not renewed in time."""
        now = self._clock()
        with self._changed:
            for name in [name for name, until in self.watched.items() if until < now]:
                del self.watched[name]

    def close(self) -> None:
        """The host leaves: every waiter returns now."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _renew(self, names: Iterable[str]) -> None:
        until = self._clock() + self.registration
        for name in names:
            self.watched[name] = until
