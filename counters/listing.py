"""Listing: the counters that exist, in name order, a page at a time.

A page is read from storage, not from the hosts: what is committed there is what was
acknowledged, for every host of both placements, and a read there takes nothing from a host's
single writer. The cursor of the next page is the last name of this one, so a client may also
start after any name it likes; names stored later show up in a later page if they sort after
the cursor. A page may hold fewer than `limit` counters, even none, when deleted ones lie in
between: follow `next` until it is None.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any, NamedTuple

from .errors import InvalidInput
from .object_storage import ObjectStorage
from .storage import Storage
from .validation import MAX_NAME_BYTES, check_text

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "check_page", "list_page"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_READ = 10 * MAX_LIMIT  # objects one page reads at most, deleted ones included


class Page(NamedTuple):
    """Up to `limit` (name, what `read()` answers) in name order; `next` the cursor or None."""

    items: list[tuple[str, Any]]
    next: str | None


def check_page(prefix: str, after: str, limit: int) -> None:
    """Raise InvalidInput unless these are a listing's prefix, cursor and page size."""
    check_text(prefix, "prefix", MAX_NAME_BYTES)
    check_text(after, "after", MAX_NAME_BYTES)
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r:.40}")


def list_page(
    storage: Storage, object_class: type, prefix: str = "", after: str = "", limit: int = 100
) -> Page:
    """The objects that exist (`exists()`), with names starting with `prefix`, after `after`."""
    check_page(prefix, after, limit)
    with closing(storage.scan(prefix, after)) as objects:
        return page_of(objects, object_class, limit)


def page_of(
    objects: Iterator[tuple[str, dict[str, str]]],
    object_class: type,
    limit: int,
    max_read: int = MAX_READ,
) -> Page:
    """The first `limit` objects that exist, and whether any more follows. Pure: no I/O.

    Deleted counters keep their row (their version lives on), so a page may have to read past
    many: after `max_read` objects it ends short, with the cursor of the last one read, and the
    next page goes on from there. `next` is None only at the end.
    """
    items: list[tuple[str, Any]] = []
    read = 0
    for name, keys in objects:
        instance = object_class(ObjectStorage(keys))
        read += 1
        if not instance.exists():
            if read >= max_read:
                return Page(items, name)
            continue  # never changed, or deleted
        if len(items) == limit:
            return Page(items, items[-1][0])
        items.append((name, instance.read()))
    return Page(items, None)
