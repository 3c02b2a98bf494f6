"""What a client is answered about a counter: values, not handles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["CounterValue", "Replaced"]


@dataclass(frozen=True, slots=True)
class CounterValue:
    """A counter as read: its name, its count and its version (0 for a counter never changed).

    (A dataclass: as a NamedTuple, its `count` would hide the tuple's method of that name.)
    """

    name: str
    count: int
    version: int


class Replaced(NamedTuple):
    """What `set` and `delete` answer: the counter before, and after."""

    previous: CounterValue
    current: CounterValue
