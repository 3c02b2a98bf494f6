"""Which operation ids an object has applied, so that a repeated id has no second effect.

Plain Python, no I/O. The host keeps one `AppliedLog` per active object, loaded with the object
and written in the same transaction as the object's state: an operation and the record that it
was applied reach the disk together or not at all. A repeated id is answered with the first
result. The same id with another request (say, ``increment(5)`` after ``increment(1)``) is a
caller's bug and is refused.

How long an id is remembered: at least ``floor`` seconds (longer than any client retries), then
until it is older than ``window`` or the object has more than ``max_per_object`` ids, oldest
first.

Theory of operation: memory holds at most the ``max_per_object`` newest ids of an object. A hot
object can have many more within the floor (15,000 increments/s for 120 s are 1.8 million); those
stay on disk only, *evicted* from memory, and the log is then *partial*:

- `find` answers from memory; on a miss in a partial log the host looks the id up on disk.
- Evicted ids are forgotten on disk once the floor has passed, by `trim`: the host reads the
  object's ids on disk in key order, a slice per batch, and `trim` picks the ones to delete. A
  slice is read only while an evicted id may be due (`trim_due`), so a cold object pays nothing.
- When a whole pass over the object's ids on disk finds none but those in memory, and none was
  evicted meanwhile, the log is complete again.
- An object whose ids on disk outnumber ``max_per_object`` is loaded with none in memory and
  partial: which of them are the newest is not known without reading them all.

Memory thus holds no more than ``max_per_object`` ids per object, and bringing an object back
into memory reads at most that many.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

__all__ = ["AppliedLog", "AppliedOp", "Retention"]


@dataclass(frozen=True, slots=True)
class Retention:
    window: float = 24 * 3600.0
    max_per_object: int = 10_000
    floor: float = 120.0


@dataclass(frozen=True, slots=True)
class AppliedOp:
    at: float  # seconds since the epoch: ids outlive processes, so wall-clock time
    request: str  # what was asked, to catch an id reused for another request
    result: str  # the value returned, as JSON text


class AppliedLog:
    __slots__ = ("_committed", "_cursor", "_disk_oldest", "_pass_oldest", "_staged", "partial")

    def __init__(self, rows: Iterable[tuple[str, AppliedOp]] = (), partial: bool = False) -> None:
        # Plain dicts keep insertion order, oldest first; a host holds many of these.
        self._committed: dict[str, AppliedOp] = dict(sorted(rows, key=lambda row: row[1].at))
        self._staged: dict[str, AppliedOp] = {}
        self.partial = partial  # True: the disk may hold ids that memory does not
        # The oldest id on disk that memory does not hold, as far as known: -inf until a pass
        # has read them all, inf when there is none.
        self._disk_oldest = -math.inf if partial else math.inf
        self._cursor = ""  # where the next slice of the pass starts, in key order
        self._pass_oldest = math.inf  # the oldest disk-only id this pass kept, or evicted since

    def __len__(self) -> int:
        return len(self._committed)

    def find(self, op_id: str) -> AppliedOp | None:
        """The id's record if memory holds it; if not and the log is partial, ask the disk."""
        return self._staged.get(op_id) or self._committed.get(op_id)

    def stage(self, op_id: str, applied: AppliedOp) -> None:
        self._staged[op_id] = applied

    def staged(self) -> list[tuple[str, AppliedOp]]:
        return list(self._staged.items())

    def expired(self, now: float, retention: Retention) -> tuple[list[str], list[str]]:
        """Once the staged ids are committed: the ids to forget, and those to evict.

        Forgotten ids leave memory and the disk; evicted ids (over the bound, but within the
        floor) leave memory only.
        """
        over = len(self._committed) + len(self._staged) - retention.max_per_object
        forget: list[str] = []
        evict: list[str] = []
        for op_id, applied in chain(self._committed.items(), self._staged.items()):
            age = now - applied.at
            if age > retention.window or (over > 0 and age > retention.floor):
                forget.append(op_id)
            elif over > 0:
                evict.append(op_id)
            else:
                break  # oldest first: the rest are younger
            over -= 1
        return forget, evict

    def commit(self, forgotten: Iterable[str], evicted: Iterable[str] = ()) -> None:
        self._committed.update(self._staged)
        self._staged.clear()
        for op_id in forgotten:
            self._committed.pop(op_id, None)
        for op_id in evicted:
            at = self._committed.pop(op_id).at
            self.partial = True
            self._disk_oldest = min(self._disk_oldest, at)
            self._pass_oldest = min(self._pass_oldest, at)  # the pass may have read past it

    def trim_due(self, now: float, retention: Retention) -> bool:
        """Whether an id on disk that memory does not hold may have passed the floor.

        (Those past the window go in the host's periodic sweep, `forget_expired_ids`.)
        """
        full = len(self._committed) >= retention.max_per_object
        return self.partial and full and now - self._disk_oldest > retention.floor

    def trim_cursor(self) -> str:
        """The key after which the next slice of ids on disk is read ("" from the start)."""
        return self._cursor

    def trim(
        self, rows: list[tuple[str, float]], limit: int, now: float, retention: Retention
    ) -> list[str]:
        """The ids of one slice (`limit` rows after the cursor, in key order) to forget on disk."""
        if not self._cursor:
            # A new pass: it reads every id now on disk, so only ids evicted from now on
            # may slip behind it.
            self._pass_oldest = math.inf
        forget: list[str] = []
        cutoff = self._cutoff(now, retention)
        committed, kept = self._committed, self._pass_oldest
        for op_id, at in rows:
            if op_id in committed:
                continue  # memory's own ids follow `expired`
            if at < cutoff:
                forget.append(op_id)
            elif at < kept:
                kept = at
        self._pass_oldest = kept
        if len(rows) < limit:  # the pass reached the end: start the next from the beginning
            self._disk_oldest, self._cursor = self._pass_oldest, ""
            self.partial = self._disk_oldest < math.inf
        else:
            self._cursor = rows[-1][0]
        return forget

    def _cutoff(self, now: float, retention: Retention) -> float:
        """Ids on disk that memory does not hold, and older than this, may be forgotten.

        Memory holds the newest ids, so once it holds the bound, every other id is beyond it.
        """
        full = len(self._committed) >= retention.max_per_object
        return now - (retention.floor if full else retention.window)
