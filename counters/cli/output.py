"""How the command line shows counters: aligned tables and lines for people, JSON for scripts.

Pure: each function makes text, the caller prints it. JSON has the gateway's shapes
(``{"name", "count", "version"}``, with ``previous`` after a set or delete), one object a line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..values import CounterValue, Replaced

__all__ = ["as_json", "change_line", "table", "watch_line"]

HEADER = ("NAME", "COUNT", "VERSION")


def table(values: Iterable[CounterValue]) -> list[str]:
    """A header and a row per counter: names to the left, numbers to the right, columns two
    spaces apart, no trailing spaces."""
    rows = [HEADER, *((v.name, str(v.count), str(v.version)) for v in values)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER))]
    return [
        f"{name:<{widths[0]}}  {count:>{widths[1]}}  {version:>{widths[2]}}"
        for name, count, version in rows
    ]


def change_line(value: CounterValue) -> str:
    """A counter after a change, as the gateway's text answer says it."""
    return f"Durable Object '{value.name}' count: {value.count}"


def watch_line(value: CounterValue) -> str:
    """A counter as watched: its name and count, as ``/counters`` lists them, and its version."""
    return f"{value.name}: {value.count} (version {value.version})"


def as_json(value: CounterValue | Replaced) -> str:
    """One line of JSON, as the gateway answers it."""
    return json.dumps(_shape(value))


def _shape(value: CounterValue | Replaced) -> dict[str, Any]:
    if isinstance(value, CounterValue):
        return {"name": value.name, "count": value.count, "version": value.version}
    previous = {"count": value.previous.count, "version": value.previous.version}
    return {**_shape(value.current), "previous": previous}
