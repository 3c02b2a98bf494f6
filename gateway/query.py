"""Strict parsing of URL query strings and form bodies. Pure, no I/O.

Browsers' ``URLSearchParams`` never fail: they turn broken percent-encoding into replacement
characters, so ``%FF`` and ``%EF%BF%BD`` would name the same counter. We refuse instead: a value
we use must be valid percent-encoding of valid UTF-8, or the request fails with 400.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from counters.errors import InvalidInput

__all__ = ["QueryParams"]

_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _unquote(text: str, what: str) -> str:
    """Decode ``+`` and ``%XX`` strictly; raise InvalidInput on anything malformed."""
    if "%" not in text and "+" not in text:
        return text  # nothing to decode: the common case, kept cheap
    if "%" in _ESCAPE.sub("", text):
        raise InvalidInput(f"{what} has invalid percent-encoding")
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not valid UTF-8 once percent-decoded") from None


class QueryParams:
    """The parameters of one request, in order; only the ones asked for are decoded."""

    def __init__(self, *raw_sources: str) -> None:
        self._pairs: list[tuple[str, str]] = []
        self._first: dict[str, str] | None = None  # decoded name -> its first raw value
        for raw in raw_sources:
            for part in raw.split("&"):
                if not part:
                    continue
                key, _, value = part.partition("=")
                self._pairs.append((key, value))

    def first(self, name: str) -> str | None:
        """The decoded value of the first parameter called `name`, as ``searchParams.get`` does."""
        if self._first is None:  # one pass for every name asked: a change asks for four
            self._first = {}
            for raw_key, raw_value in self._pairs:
                try:
                    key = _unquote(raw_key, "a parameter name")
                except InvalidInput:
                    continue  # a broken parameter we do not use is none of our business
                self._first.setdefault(key, raw_value)
        raw = self._first.get(name)
        return None if raw is None else _unquote(raw, f"parameter {name!r}")

    def names(self) -> set[str]:
        """The names of every parameter given (those that decode)."""
        self.first("")  # decodes every name once
        assert self._first is not None
        return set(self._first)

    def all(self, name: str) -> list[str]:
        """The decoded values of every parameter called `name`, in order (``getAll``)."""
        values = []
        for raw_key, raw_value in self._pairs:
            try:
                key = _unquote(raw_key, "a parameter name")
            except InvalidInput:
                continue
            if key == name:
                values.append(_unquote(raw_value, f"parameter {name!r}"))
        return values
