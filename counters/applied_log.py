"""Which operation ids an object has applied, so that a repeated id has no second effect.

Plain Python, no I/O. The host keeps one `AppliedLog` per active object, loaded with the object
and written in the same transaction as the object's state: an operation and the record that it
was applied reach the disk together or not at all. A repeated id is answered with the first
result. The same id with another request (say, ``increment(5)`` after ``increment(1)``) is a
caller's bug and is refused.

How long an id is remembered: at least ``floor`` seconds (longer than any client retries), then
until it is older than ``window`` or the object has more than ``max_per_object`` ids, oldest
first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
    __slots__ = ("_committed", "_staged")

    def __init__(self, rows: Iterable[tuple[str, AppliedOp]] = ()) -> None:
        # Plain dicts keep insertion order, oldest first; a host holds many of these.
        self._committed: dict[str, AppliedOp] = dict(sorted(rows, key=lambda row: row[1].at))
        self._staged: dict[str, AppliedOp] = {}

    def __len__(self) -> int:
        return len(self._committed)

    def find(self, op_id: str) -> AppliedOp | None:
        return self._staged.get(op_id) or self._committed.get(op_id)

    def stage(self, op_id: str, applied: AppliedOp) -> None:
        self._staged[op_id] = applied

    def staged(self) -> list[tuple[str, AppliedOp]]:
        return list(self._staged.items())

    def expired(self, now: float, retention: Retention) -> list[str]:
        """The committed ids to forget once the staged ones are committed."""
        total = len(self._committed) + len(self._staged)
        forget: list[str] = []
        for op_id, applied in self._committed.items():
            age = now - applied.at
            over = total - len(forget) > retention.max_per_object
            if age > retention.window or (over and age > retention.floor):
                forget.append(op_id)
            else:
                break  # oldest first: the rest are younger
        return forget

    def commit(self, forgotten: Iterable[str]) -> None:
        for op_id in forgotten:
            self._committed.pop(op_id, None)
        self._committed.update(self._staged)
        self._staged.clear()
