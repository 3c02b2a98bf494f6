"""Group commit: batches that wait for a host's single writer are applied as one.

A host applies one batch at a time and commits each with an fsync, which takes about as long as
applying a few dozen operations. Batches come from several gateway processes and clients (a
channel connection each, plus Ray calls), so while one is applied others wait. Whoever takes the
writer's lock next applies every batch waiting by then in one transaction, and hands each its
outcomes; the others find theirs done when they get the lock. Order is kept: batches are applied
in the order they arrived, each batch's operations in their own order.

Plain Python and threads, no Ray, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from .operations import Operation, Outcome

__all__ = ["GroupCommit"]

Apply = Callable[[Sequence[Operation]], tuple[Outcome, ...]]


class _Waiting:
    __slots__ = ("done", "error", "operations", "outcomes", "refusable")

    def __init__(self, operations: Sequence[Operation], refusable: bool) -> None:
        self.operations = operations
        self.refusable = refusable
        self.done = False
        self.outcomes: tuple[Outcome, ...] | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Applies batches through `apply` under `serial`, merging those that wait for it."""

    def __init__(self, apply: Apply, serial: threading.RLock, refusing: Callable[[], bool]) -> None:
        self._apply = apply
        self._serial = serial
        self._refusing = refusing  # checked under `serial`: True once the host must not write
        self._guard = threading.Lock()  # only for the list of waiting batches
        self._waiting: list[_Waiting] = []

    @property
    def waiting(self) -> int:
        """Batches waiting for the writer now."""
        with self._guard:
            return len(self._waiting)

    def apply(
        self, operations: Sequence[Operation], refusable: bool = False
    ) -> tuple[Outcome, ...] | None:
        """The outcomes of `operations`; None if `refusable` and the host is refusing batches."""
        mine = _Waiting(operations, refusable)
        with self._guard:
            self._waiting.append(mine)
        with self._serial:
            if not mine.done:  # else a batch ahead of us applied ours with its own
                with self._guard:
                    group, self._waiting = self._waiting, []
                self._run(group)
        if mine.error is not None:
            raise mine.error
        return mine.outcomes

    def _run(self, group: list[_Waiting]) -> None:
        refusing = self._refusing()
        taken = [waiting for waiting in group if not (refusing and waiting.refusable)]
        try:
            if len(taken) == 1:
                taken[0].outcomes = self._apply(taken[0].operations)
            elif taken:
                outcomes = self._apply([op for waiting in taken for op in waiting.operations])
                start = 0
                for waiting in taken:
                    end = start + len(waiting.operations)
                    waiting.outcomes = outcomes[start:end]
                    start = end
        except BaseException as error:  # every batch of the group fails as the one call did
            for waiting in taken:
                waiting.error = error
        finally:
            for waiting in group:
                waiting.done = True
