"""Export and import: counters as JSON lines, through a running service's HTTP API.

    {"name": "A", "count": 5, "version": 3}

An export lists the counters that exist (a page at a time, as `GET /counters` does), so it
needs only the gateway's address, whatever the backend; it is not one snapshot (a backup is).

An import sets each counter to the count in the file, and is idempotent: it reads the counters
first and leaves alone those already at their count (and existing, for a count of 0), so the
same file imported twice changes nothing the second time (no version moves). Each change is a
compare-and-set on the version just read (``If-Match``), so a counter changed meanwhile by
someone else is read again rather than overwritten blindly, with an ``Idempotency-Key`` made
from what it sets, so a resend after a lost connection is applied once. The whole file is
checked before anything is set: a bad line changes nothing. Versions are the target's own: an
import sets counts, not histories.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from ..errors import ConfigError, CountersError
from ..validation import INT64_MAX, INT64_MIN, validate_name
from .progress import Progress, quiet
from .remote import MAX_NAMES, ErrorAnswer, Remote

__all__ = ["ImportSummary", "export_counters", "import_counters", "parse_export"]

ATTEMPTS = 3  # reads and sets of one counter that others keep changing, at most


@dataclass
class ImportSummary:
    set: int = 0  # counters set to the file's count
    unchanged: int = 0  # already at it
    conflicts: list[str] = field(default_factory=list)  # changed by others at every attempt


def export_counters(
    remote: Remote, out: TextIO, prefix: str = "", progress: Progress = quiet
) -> int:
    """Write every counter whose name starts with `prefix` to `out`; how many."""
    written = 0
    for value in remote.list(prefix):
        out.write(json.dumps({"name": value.name, "count": value.count, "version": value.version}))
        out.write("\n")
        written += 1
        progress(1)
    return written


def parse_export(lines: Iterable[str], source: str = "input") -> list[tuple[str, int]]:
    """(name, count) of every line, checked: ConfigError naming the first bad line."""
    counters: list[tuple[str, int]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ConfigError(f"{where}: not JSON ({error})") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: not an object with a name and a count")
        count = record.get("count")
        try:
            name = validate_name(record.get("name"))
        except CountersError as error:
            raise ConfigError(f"{where}: {error.message}") from None
        if type(count) is not int or not INT64_MIN <= count <= INT64_MAX:
            raise ConfigError(f"{where}: count must be a 64-bit integer, not {count!r:.40}")
        if name in seen:
            raise ConfigError(f"{where}: {name!r:.80} appears twice")
        seen.add(name)
        counters.append((name, count))
    return counters


def import_counters(
    remote: Remote, counters: list[tuple[str, int]], progress: Progress = quiet
) -> ImportSummary:
    """Set each counter to its count (see the module); what was done."""
    summary = ImportSummary()
    for start in range(0, len(counters), MAX_NAMES):
        chunk = counters[start : start + MAX_NAMES]
        current = remote.get([name for name, _ in chunk])
        for (name, count), now in zip(chunk, current, strict=True):
            _import_one(remote, name, count, now.count, now.version, summary)
        progress(len(chunk))
    return summary


def _import_one(
    remote: Remote, name: str, count: int, now: int, version: int, summary: ImportSummary
) -> None:
    for _ in range(ATTEMPTS):
        if now == count and (count != 0 or _exists(remote, name, version)):
            summary.unchanged += 1
            return
        try:
            answer = remote.set(name, count, if_version=version, key=_key(name, count, version))
            if answer.current.count == count:
                summary.set += 1
                return
            # An answer replayed for the key (its id remembered from before), not this change:
            # nothing was set. Read again; if it stays so, the counter is reported.
        except ErrorAnswer as error:
            if error.status != 412:  # version_mismatch: changed since read, read again
                raise
        [value] = remote.get([name])
        now, version = value.count, value.version
    summary.conflicts.append(name)


def _exists(remote: Remote, name: str, version: int) -> bool:
    """Whether a counter that reads 0 exists (it was set to 0), as listings show it: a counter
    never changed (version 0) or deleted does not, and an exported 0 makes it again."""
    if version == 0:
        return False
    first = next(iter(remote.list(name, page_size=1)), None)
    return first is not None and first.name == name


def _key(name: str, count: int, version: int) -> str:
    """The same set, sent again, has the same key: applied once."""
    digest = hashlib.sha256(f"{name}\0{count}\0{version}".encode()).hexdigest()
    return f"import-{digest[:40]}"
