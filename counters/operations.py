"""The values that cross the process boundary between a client and a host actor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import CountersError

__all__ = ["Operation", "Outcome"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One RPC call on one object: ``object_name.method(*args)``."""

    object_name: str
    method: str
    args: tuple[Any, ...] = ()
    op_id: str | None = None  # a changing operation's id: sent twice, applied once


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one operation returned or raised; a batch answers with one Outcome per operation."""

    value: Any = None
    error: CountersError | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value
