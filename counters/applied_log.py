"""Which operation ids an object has applied, so that a repeated id has no second effect.

Plain Python, no I/O. The host keeps one `AppliedLog` per active object, loaded with the object
and written in the same transaction as the object's state: an operation and the record that it
was applied reach the disk together or not at all. A repeated id is answered with the first
result. The same id with another request (say, ``increment(5)`` after ``increment(1)``) is a
caller's bug and is refused.

How long an id is remembered: at least ``floor`` seconds (longer than any client retries), then
until it is older than ``window`` or the object has more than ``max_per_object`` ids, oldest
first.

Theory of operation. The disk holds every id remembered; memory holds the newest ids of an
object up to a cap the host sets (its memory for ids shared among the objects it holds), which
for most objects is all of them. Beyond that (a counter taking increments all day; a hot one has
1.8 million within the floor at 15,000/s) the older ids are *evicted* from memory, not
forgotten, and the log is *partial*:

- `find` answers from memory; on a miss in a partial log the host looks the id up on disk.
- The ids to forget on disk are found by `trim`: the host reads the object's ids on disk in key
  order, a slice per batch, and `trim` picks those past the floor and beyond the newest
  ``max_per_object`` (or past the window). Which ids are beyond the newest ``max_per_object`` is
  told by their age alone: `_Ages` counts the ids recorded, oldest first, in a few dozen chunks.
  A pass starts only once a quarter of ``max_per_object`` may be due (or an id evicted within the
  floor has passed it), and then reads on to the end: a few rows read per id forgotten, and none
  for an object with nothing to forget.
- When a pass finds no id on disk but those in memory, and none was evicted meanwhile, the log
  is complete again.
- An object with more ids on disk than its cap comes back into memory with none of them read,
  partial, and counts only the ids it records from then on: until those reach the bound, it
  forgets on disk only what is past the window (which the host's periodic sweep does).

So a host's memory for ids is bounded by the caps it sets, however busy its objects are, and
bringing an object back into memory reads at most its cap of ids.
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
    __slots__ = (
        "_ages",
        "_committed",
        "_cursor",
        "_disk_oldest",
        "_pass_oldest",
        "_retention",
        "_staged",
        "partial",
    )

    def __init__(
        self,
        retention: Retention,
        rows: Iterable[tuple[str, AppliedOp]] = (),
        partial: bool = False,
    ) -> None:
        self._retention = retention
        # Plain dicts keep insertion order, oldest first; a host holds many of these.
        self._committed: dict[str, AppliedOp] = dict(sorted(rows, key=lambda row: row[1].at))
        self._staged: dict[str, AppliedOp] = {}
        self._ages = _Ages(retention.max_per_object)
        for applied in self._committed.values():
            self._ages.add(applied.at, 1)
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

    def expired(self, now: float, cap: int) -> tuple[list[str], list[str]]:
        """Once the staged ids are committed: the ids to forget, and those to evict.

        Forgotten ids (past the window) leave memory and the disk; evicted ids (over `cap`, or
        over the retention bound) leave memory only. Memory holds the newest ids, never more
        than the retention bound, so no id in memory is ever beyond it.
        """
        retention = self._retention
        cap = min(cap, retention.max_per_object)
        over = len(self._committed) + len(self._staged) - cap
        forget: list[str] = []
        evict: list[str] = []
        for op_id, applied in chain(self._committed.items(), self._staged.items()):
            if now - applied.at > retention.window:
                forget.append(op_id)
            elif over > 0:
                evict.append(op_id)
            else:
                break  # oldest first: the rest are younger
            over -= 1
        return forget, evict

    def commit(self, forgotten: Iterable[str], evicted: Iterable[str] = ()) -> None:
        """The staged ids are on disk, the forgotten ones gone from it."""
        if self._staged:
            self._ages.add(next(iter(self._staged.values())).at, len(self._staged))
        self._committed.update(self._staged)
        self._staged.clear()
        for op_id in forgotten:
            self._committed.pop(op_id, None)
        for op_id in evicted:
            at = self._committed.pop(op_id).at
            self.partial = True
            self._disk_oldest = min(self._disk_oldest, at)
            self._pass_oldest = min(self._pass_oldest, at)  # the pass may have read past it

    def trim_due(self, now: float) -> bool:
        """Whether to read a slice of ids on disk: a pass goes on, or one is worth starting."""
        if not self.partial:
            return False
        if self._cursor:
            return True
        retention = self._retention
        worth_a_pass = retention.max_per_object + retention.max_per_object // 4
        return self._disk_oldest < min(now - retention.floor, self._ages.boundary(worth_a_pass))

    def trim_cursor(self) -> str:
        """The key after which the next slice of ids on disk is read ("" from the start)."""
        return self._cursor

    def trim(self, rows: list[tuple[str, float]], limit: int, now: float) -> list[str]:
        """The ids of one slice (`limit` rows after the cursor, in key order) to forget on disk."""
        if not self._cursor:
            # A new pass: it reads every id now on disk, so only ids evicted from now on
            # may slip behind it.
            self._pass_oldest = math.inf
        retention = self._retention
        beyond = min(now - retention.floor, self._ages.boundary(retention.max_per_object))
        cutoff = max(now - retention.window, beyond)
        forget: list[str] = []
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


class _Ages:
    """How many ids an object recorded, and from when, in chunks, oldest first.

    Enough to tell an age below which every id is beyond the newest N (for N up to a quarter
    over ``max_per_object``) without holding the ids: a few dozen numbers per object.
    """

    __slots__ = ("_chunk", "_chunks", "_keep", "_total")

    def __init__(self, max_per_object: int) -> None:
        # [at of the first id, ids]; a list, not a deque: a host holds one per object, mostly
        # of one chunk, and an empty deque alone takes over 600 bytes.
        self._chunks: list[list[float]] = []
        self._total = 0
        self._chunk = max(1, max_per_object // 32)  # ids per chunk: the answer's precision
        self._keep = max_per_object + max_per_object // 4  # the most N asked about

    def add(self, at: float, count: int) -> None:
        """`count` ids recorded at `at`, no older than any before."""
        if self._chunks and self._chunks[-1][1] < self._chunk:
            self._chunks[-1][1] += count
        else:
            self._chunks.append([at, count])
        self._total += count
        while self._total - self._chunks[0][1] >= self._keep:
            self._total -= int(self._chunks.pop(0)[1])  # the newer ones are enough

    def boundary(self, newest: int) -> float:
        """Ids recorded before this are not among the `newest` latest; -inf if not yet known."""
        remaining = self._total
        for first_at, count in self._chunks:
            if remaining - count < newest <= remaining:
                return first_at  # this chunk holds the newest-th latest id
            remaining -= int(count)
        return -math.inf
