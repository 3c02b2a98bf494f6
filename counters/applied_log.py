"""Which operation ids a host has applied, so that a repeated id has no second effect.

Plain Python, no I/O. A host records the id of every operation that changed an object in the
same transaction as the change: an operation and the record that it was applied reach the disk
together or not at all. A repeated id is answered with the first result. The same id with
another request (say, ``increment(5)`` after ``increment(1)``) is a caller's bug and is refused.

Theory of operation. The ids live on disk only, in the order they were recorded, and are found
by id: before running a batch, the host looks up all of its ids in one query. Memory holds none,
so a host's memory does not grow with the ids it remembers, and an object coming back into
memory reads none. A commit appends its ids at the end of the table, a page or two however many
objects the batch touched. (Kept by object instead, as before, each object of a batch cost a
page of its own: twice the time per commit over many objects, and checkpoints in its tail.)

How long an id is remembered: at least ``floor`` seconds (longer than any client retries), then
until it is older than ``window`` or the host remembers more than ``max_ids``, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AppliedOp", "Retention"]


@dataclass(frozen=True, slots=True)
class Retention:
    window: float = 24 * 3600.0
    max_ids: int = 10_000_000  # per host: about 90 bytes of disk each
    floor: float = 120.0

    def forget_oldest(self, remembered: int, recorded: int, now: float) -> tuple[int, float]:
        """With `recorded` ids added to `remembered`: how many of the oldest to forget at most,
        and the time before which they were recorded.

        Over the bound, the oldest beyond it that are older than the floor; else those past the
        window. At most twice the ids recorded (and a few more) per commit: a host behind
        catches up without one long commit, and every commit forgets, so retention holds on
        every host by itself.
        """
        most = 2 * recorded + 64
        over = remembered + recorded - self.max_ids
        if over > 0:
            return min(over, most), now - self.floor
        return most, self.expired_before(now)

    def expired_before(self, now: float) -> float:
        """Ids recorded before this time are past the window (never within the floor)."""
        return now - max(self.window, self.floor)


@dataclass(frozen=True, slots=True)
class AppliedOp:
    at: float  # seconds since the epoch: ids outlive processes, so wall-clock time
    request: str  # what was asked, to catch an id reused for another request
    result: str  # the value returned, as JSON text
