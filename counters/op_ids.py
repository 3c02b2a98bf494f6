"""Operation ids: unique because made unique, unguessable because partly secret.

An id has three parts:

    prefix (12 chars)    72 random bits drawn once per process, and drawn anew in a forked child
    counter (10 hex)     this process's ids in order
    secret (10 chars)    60 random bits of its own

Prefix and counter make ids unique: no two processes share a prefix (forked children included:
prefork servers, Celery, multiprocessing's fork start method), and a process never repeats its
counter. They also make a client's ids sort in the order they were made, so a host records a
batch's ids at one point of its index instead of a page each (docs/design.md). The secret makes
them unguessable: an id that an answer reveals (a 503 names the id to retry with) tells nothing
of the next one's secret, so nobody can send a future id first and make someone else's change
look like a repeat.

Random bits are drawn a few thousand ids at a time, since a system call per id would cost more
than the rest of making it; a forked child empties the pool it inherited (`os.register_at_fork`).
"""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Iterator

__all__ = ["ID_LENGTH", "new_op_id"]

_PREFIX_BYTES = 9  # 72 bits: 12 base64 characters
_SECRET_BYTES = 15  # drawn for two ids at once: 10 characters (60 bits) each
_SECRET_LENGTH = 10
_COUNTER_DIGITS = 10
ID_LENGTH = _PREFIX_BYTES * 4 // 3 + _COUNTER_DIGITS + _SECRET_LENGTH
_POOL = 4096  # secrets drawn per system call, in pairs


def _random_text(size: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(size)).decode("ascii")


_prefix = _random_text(_PREFIX_BYTES)
_counter = itertools.count()
_secrets: Iterator[str] = iter(())


def new_op_id() -> str:
    """A fresh operation id (`ID_LENGTH` URL-safe characters). Thread- and fork-safe."""
    try:
        secret = next(_secrets)  # one step of a list iterator: atomic under the GIL
    except StopIteration:
        secret = next(_refill())
    return f"{_prefix}{next(_counter):0{_COUNTER_DIGITS}x}{secret}"


def _refill() -> Iterator[str]:
    global _secrets
    text = _random_text(_SECRET_BYTES * _POOL // 2)
    # Two threads that find the pool empty at once each draw a pool; the one dropped is unused.
    _secrets = iter([text[i : i + _SECRET_LENGTH] for i in range(0, len(text), _SECRET_LENGTH)])
    return _secrets


def _after_fork() -> None:
    global _prefix, _counter, _secrets
    _prefix = _random_text(_PREFIX_BYTES)
    _counter = itertools.count()
    _secrets = iter(())


os.register_at_fork(after_in_child=_after_fork)
