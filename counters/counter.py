"""The counter object: the example's Durable Object, method for method.

Plain Python. It reads and writes its value through the storage it is given and never thinks
about concurrency: its host runs one operation at a time, so read-modify-write is safe, as
Durable Objects' input gates make it there.
"""

from __future__ import annotations

from typing import ClassVar

from .object_storage import ObjectStorage
from .validation import check_amount, check_count

__all__ = ["Counter"]


class Counter:
    """A named 64-bit signed counter that starts at 0."""

    __slots__ = ("storage",)

    # Methods that change nothing. Every other method is a change, and a client sends each change
    # with an operation id, so that resending it after a lost answer cannot apply it twice.
    READS: ClassVar[frozenset[str]] = frozenset({"get_counter_value"})

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage

    def get_counter_value(self) -> int:
        value: int = self.storage.get("value", 0)
        return value

    def increment(self, amount: int = 1) -> int:
        value = check_count(self.get_counter_value() + check_amount(amount))
        self.storage.put("value", value)
        return value

    def decrement(self, amount: int = 1) -> int:
        value = check_count(self.get_counter_value() - check_amount(amount))
        self.storage.put("value", value)
        return value
