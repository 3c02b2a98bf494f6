"""The values that cross the process boundary between a client and a host actor.

They are NamedTuples rather than dataclasses: just as immutable, and they pickle as a plain tuple
behind a class reference, which matters when a busy host call carries a thousand of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .errors import CountersError

__all__ = ["Operation", "Outcome", "Results", "trimmed"]


class Operation(NamedTuple):
    """One RPC call on one object: ``object_name.method(*args)``."""

    object_name: str
    method: str
    args: tuple[Any, ...] = ()
    op_id: str | None = None  # a changing operation's id: sent twice, applied once


class Results(NamedTuple):
    """A batch's outcomes as a client reads them: every value, and the errors by position.

    Cheaper to carry than an Outcome per operation: a busy batch has no errors at all.
    """

    values: list[Any]
    errors: dict[int, CountersError]

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Results:
        return cls(
            [outcome.value for outcome in outcomes],
            {i: outcome.error for i, outcome in enumerate(outcomes) if outcome.error is not None},
        )


class Outcome(NamedTuple):
    """What one operation returned or raised; a batch answers with one Outcome per operation."""

    value: Any = None
    error: CountersError | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def trimmed(*args: Any) -> tuple[Any, ...]:
    """Positional arguments without the trailing Nones: ``increment(5)`` with no bounds stays
    just that, the request an operation id is matched to."""
    end = len(args)
    while end and args[end - 1] is None:
        end -= 1
    return args[:end]
