"""Operation ids: unique because each is random, and unguessable for the same reason.

An id is 120 random bits from the kernel (20 URL-safe characters). Nothing about one id tells
anything about another, so an id that an answer reveals (a 503 names the id to retry with) cannot
be used to guess, and swallow, someone else's change; and two processes can never make the same
ids, however they were started.

Random bits are drawn a few thousand ids at a time, since a system call per id would cost more
than the rest of making it. A forked child must never hand out the ids its parent drew: the pool
is emptied in the child at fork (`os.register_at_fork`), so prefork servers, Celery and
multiprocessing's fork start method each draw their own.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

__all__ = ["ID_LENGTH", "new_op_id"]

_ID_BYTES = 15  # a multiple of 3: each id is whole base64 characters, no padding
ID_LENGTH = _ID_BYTES * 4 // 3
_POOL = 4096  # ids drawn per system call

_pool: Iterator[str] = iter(())


def new_op_id() -> str:
    """A fresh operation id: 120 random bits, as 20 URL-safe characters. Thread- and fork-safe."""
    try:
        return next(_pool)  # one step of a list iterator: atomic under the GIL
    except StopIteration:
        return next(_refill())


def _refill() -> Iterator[str]:
    global _pool
    text = base64.urlsafe_b64encode(os.urandom(_ID_BYTES * _POOL)).decode("ascii")
    # Two threads that find the pool empty at once each draw a pool; the one dropped is unused.
    _pool = iter([text[i : i + ID_LENGTH] for i in range(0, len(text), ID_LENGTH)])
    return _pool


def _forget_pool() -> None:
    global _pool
    _pool = iter(())


os.register_at_fork(after_in_child=_forget_pool)
