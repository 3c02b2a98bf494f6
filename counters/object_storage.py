"""The storage API an object sees, in the spirit of Durable Objects' ``ctx.storage``.

Theory of operation. Each hosted object owns one `ObjectStorage`: a view of its keys with three
layers, read top-down:

    op layer       writes of the operation now running
    batch layer    writes of earlier operations of this batch that succeeded
    committed      what is on disk (loaded when the object was activated)

The host runs a batch of operations one after another. When an operation ends, `end_operation`
keeps its writes (folds them into the batch layer) or discards them, so an operation that raised
leaves no trace. After the batch is written to disk in one transaction, `commit` folds the batch
layer into the committed layer; if that write failed, `abort` drops it. Values are stored as
JSON text, so a caller can never alias or mutate what storage holds.

No I/O happens here: the host hands `staged()` to the file store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["DELETED", "ObjectStorage", "decode_value", "encode_value"]


class _Deleted:
    """Marks a key deleted in a layer above the committed one."""

    def __repr__(self) -> str:
        return "DELETED"


DELETED: Any = _Deleted()


def encode_value(value: Any) -> str:
    if type(value) is int:  # the counter's hot path: skip the JSON encoder
        return str(value)
    if type(value) is list and len(value) == 2 and type(value[0]) is type(value[1]) is int:
        return f"[{value[0]},{value[1]}]"  # a counter's state, [count, version]
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"storage values must be JSON-serializable: {error}") from None


def decode_value(text: str) -> Any:
    if text[:1] == "[":  # a pair of integers, as a counter's state: skip the JSON decoder
        first, comma, second = text[1:-1].partition(",")
        if comma and _is_integer(first) and _is_integer(second) and text[-1] == "]":
            return [int(first), int(second)]
    elif _is_integer(text):  # an integer, likewise
        return int(text)
    return json.loads(text)


def _is_integer(text: str) -> bool:
    digits = text[1:] if text[:1] == "-" else text
    return digits.isascii() and digits.isdigit()


class ObjectStorage:
    """Key-value storage of one object: ``get``, ``put``, ``delete``, ``list``."""

    __slots__ = ("_batch", "_committed", "_op")

    def __init__(self, committed: Mapping[str, str] | None = None) -> None:
        self._committed: dict[str, str] = dict(committed or {})
        self._batch: dict[str, Any] = {}  # key -> JSON text or DELETED
        self._op: dict[str, Any] = {}

    # The object's API.

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under `key`, or `default` when there is none."""
        text = self._lookup(key)
        return default if text is DELETED or text is None else decode_value(text)

    def put(self, key: str, value: Any) -> None:
        """Store `value` (anything JSON can hold) under `key`."""
        if not isinstance(key, str):
            raise TypeError(f"storage keys are text, not {type(key).__name__}")
        self._op[key] = encode_value(value)

    def delete(self, key: str) -> bool:
        """Remove `key`; True if it held a value."""
        existed = self._lookup(key) not in (None, DELETED)
        self._op[key] = DELETED
        return existed

    def list(self, prefix: str = "") -> dict[str, Any]:
        """Every key starting with `prefix` and its value, in key order."""
        merged: dict[str, Any] = {
            **self._committed,
            **self._batch,
            **self._op,
        }
        return {
            key: decode_value(text)
            for key, text in sorted(merged.items())
            if key.startswith(prefix) and text is not DELETED
        }

    # The host's side: operation and batch boundaries.

    def end_operation(self, keep: bool) -> bool:
        """Keep the running operation's writes in the batch, or drop them; True if it wrote."""
        wrote = bool(self._op)
        if keep:
            self._batch.update(self._op)
        self._op.clear()
        return wrote

    def staged(self) -> Iterator[tuple[str, Any]]:
        """The batch's writes: (key, JSON text) pairs, DELETED for a deletion."""
        return iter(self._batch.items())

    def has_staged(self) -> bool:
        return bool(self._batch)

    def commit(self) -> None:
        """The batch is on disk: make it the committed state."""
        for key, text in self._batch.items():
            if text is DELETED:
                self._committed.pop(key, None)
            else:
                self._committed[key] = text
        self._batch.clear()

    def abort(self) -> None:
        """The batch did not reach the disk: forget it."""
        self._batch.clear()
        self._op.clear()

    def _lookup(self, key: str) -> Any:
        for layer in (self._op, self._batch):
            if key in layer:
                return layer[key]
        return self._committed.get(key)
