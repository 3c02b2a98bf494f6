"""The counter object: the example's Durable Object, method for method, and what users add.

Plain Python. It reads and writes its state through the storage it is given and never thinks
about concurrency: its host runs one operation at a time, so read-modify-write is safe, as
Durable Objects' input gates make it there. So a version check or a bound holds at the moment
of the change itself: nothing else runs on the counter in between.

State: one key, ``count``: ``[count, version]``, the version being how many changes the counter
has had; one key, so that a change writes one row, not two. A counter never changed has none,
and reads 0 at version 0. `delete` forgets the count but keeps the version, as ``[null,
version]``, so that a version is never given twice to one name: an ``If-Match`` sent before a
delete can never match a counter made again after it.
(Counters stored before versions existed have ``value`` alone: version 1, moved to ``count`` by
their next change.)
"""

from __future__ import annotations

from typing import ClassVar

from .errors import OutOfBounds, VersionMismatch
from .object_storage import ObjectStorage
from .validation import check_amount, check_count

__all__ = ["Counter"]


class Counter:
    """A named 64-bit signed counter that starts at 0, with a version that grows per change."""

    __slots__ = ("storage",)

    # Methods that change nothing. Every other method is a change, and a client sends each change
    # with an operation id, so that resending it after a lost answer cannot apply it twice.
    READS: ClassVar[frozenset[str]] = frozenset({"exists", "get_counter_value", "read"})

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    # The example's methods, with bounds and a version condition added.

    def get_counter_value(self) -> int:
        return self.read()[0]

    def increment(
        self,
        amount: int = 1,
        floor: int | None = None,
        ceiling: int | None = None,
        if_version: int | None = None,
    ) -> int:
        return self.add(amount, floor, ceiling, if_version)[0]

    def decrement(
        self,
        amount: int = 1,
        floor: int | None = None,
        ceiling: int | None = None,
        if_version: int | None = None,
    ) -> int:
        return self.subtract(amount, floor, ceiling, if_version)[0]

    # The same with the version in the answer: [count, version].

    def read(self) -> list[int]:
        state = self.storage.get("count")
        if state is None:
            legacy = self.storage.get("value")
            return [0, 0] if legacy is None else [legacy, 1]
        count, version = state
        return [count or 0, version]  # a deleted counter's count is null

    def exists(self) -> bool:
        """Whether the counter has been changed and not deleted since: what listings show."""
        state = self.storage.get("count")
        return state[0] is not None if state is not None else self.storage.get("value") is not None

    def add(
        self,
        amount: int = 1,
        floor: int | None = None,
        ceiling: int | None = None,
        if_version: int | None = None,
    ) -> list[int]:
        return self._moved(check_amount(amount), floor, ceiling, if_version)

    def subtract(
        self,
        amount: int = 1,
        floor: int | None = None,
        ceiling: int | None = None,
        if_version: int | None = None,
    ) -> list[int]:
        return self._moved(-check_amount(amount), floor, ceiling, if_version)

    def set(self, value: int, if_version: int | None = None) -> list[int]:
        """Set the count; [the previous count, the previous version, the new version]."""
        previous = self._checked(if_version)
        _, version = self._change(check_amount(value, "value"), previous[1])
        return [*previous, version]

    def delete(self, if_version: int | None = None) -> list[int]:
        """Forget the count (the version stays, one higher); as `set`, what it was."""
        previous = self._checked(if_version)
        self._store(None, previous[1] + 1)
        return [*previous, previous[1] + 1]

    def _moved(
        self, by: int, floor: int | None, ceiling: int | None, if_version: int | None
    ) -> list[int]:
        """The count moved `by`, if it stays within the bounds and the version matches."""
        count, version = self._checked(if_version)
        return self._change(check_count(_bounded(count + by, floor, ceiling)), version)

    def _checked(self, if_version: int | None) -> list[int]:
        """The state, if it is at `if_version` (when given), else VersionMismatch."""
        state = self.read()
        if if_version is not None and check_amount(if_version, "if_version") != state[1]:
            raise VersionMismatch(
                f"the counter is at version {state[1]}, not {if_version}; nothing was changed"
            )
        return state

    def _change(self, count: int, version: int) -> list[int]:
        self._store(count, version + 1)
        return [count, version + 1]

    def _store(self, count: int | None, version: int) -> None:
        if version == 2 and self.storage.get("value") is not None:
            self.storage.delete("value")  # stored before versions (at 1): moved to "count"
        self.storage.put("count", [count, version])


def _bounded(count: int, floor: int | None, ceiling: int | None) -> int:
    """`count` if it is within the bounds given, else OutOfBounds (always, for a floor above
    the ceiling: no count is within them)."""
    low = None if floor is None else check_amount(floor, "floor")
    high = None if ceiling is None else check_amount(ceiling, "ceiling")
    if (low is not None and count < low) or (high is not None and count > high):
        shown = f"[{'' if low is None else low}, {'' if high is None else high}]"
        raise OutOfBounds(f"the count would become {count}, outside {shown}; nothing was changed")
    return count
