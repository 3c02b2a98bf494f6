"""Names and amounts: what a caller may send, checked before anything runs.

Pure functions, no I/O. Both the gateway and the Python client call them at the edge, and the
counter checks again inside the host, so a bad value never reaches storage whichever way it came.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from .errors import CountOutOfRange, InvalidAmount, InvalidInput, InvalidName

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_NAME_BYTES",
    "MAX_OP_ID_CHARS",
    "OP_ID_RULE",
    "check_amount",
    "check_count",
    "check_text",
    "is_op_id",
    "parse_amount",
    "parse_integer",
    "validate_name",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_NAME_BYTES = 1024
MAX_OP_ID_CHARS = 255
OP_ID_RULE = f"operation ids are text of 1 to {MAX_OP_ID_CHARS} characters without controls"

# C0 controls, DEL and C1 controls: invisible in logs and dashboards, and NUL breaks C strings.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# ASCII digits only: int() would also take "1_000", " 7 " and non-ASCII digits.
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")


def validate_name(name: object) -> str:
    """Return `name` if it is a valid object name, else raise InvalidName.

    A name is any non-empty text of at most 1024 bytes of UTF-8 without control characters.
    It is never used as a path: `../../etc` is just a name.
    """
    if isinstance(name, str) and not name:
        raise InvalidName("name must not be empty")
    return _checked_text(name, "name", MAX_NAME_BYTES, InvalidName)


def check_text(text: object, what: str, max_bytes: int) -> str:
    """Return `text` if it is text of at most `max_bytes` of UTF-8 without control characters
    (empty allowed: a listing's prefix or cursor), else raise InvalidInput naming `what`."""
    return _checked_text(text, what, max_bytes, InvalidInput)


def _checked_text(text: object, what: str, max_bytes: int, error: type[InvalidInput]) -> str:
    if not isinstance(text, str):
        raise error(f"{what} must be text, not {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise error(f"{what} must be valid Unicode text (no lone surrogates)") from None
    if size > max_bytes:
        raise error(f"{what} is {size} bytes of UTF-8; at most {max_bytes} are allowed")
    found = _CONTROL.search(text)
    if found:
        raise error(
            f"{what} must not contain control characters (found U+{ord(found.group()):04X})"
        )
    return text


def is_op_id(op_id: object) -> TypeGuard[str]:
    """Whether `op_id` is a usable operation id: text of 1 to 255 characters, valid Unicode,
    without control characters. (The gateway takes visible ASCII only; bare Ray callers may
    send anything, and storage must not meet a NUL or a lone surrogate.)"""
    if type(op_id) is not str or not 0 < len(op_id) <= MAX_OP_ID_CHARS:
        return False
    if op_id.isascii():  # every id the clients make: the quick way
        return _CONTROL.search(op_id) is None
    try:
        op_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return _CONTROL.search(op_id) is None


def check_amount(amount: object, what: str = "amount") -> int:
    """Return `amount` if it is an int in the signed 64-bit range, else raise InvalidAmount
    naming it as `what` (amount, value, floor, ceiling, if_version)."""
    if type(amount) is not int:  # bool is an int subclass, and True is no amount
        raise InvalidAmount(f"{what} must be an integer, not {type(amount).__name__}")
    if not INT64_MIN <= amount <= INT64_MAX:
        raise InvalidAmount(f"{what} {amount} is outside the signed 64-bit range")
    return amount


def parse_amount(text: str) -> int:
    """Parse the text of an `amount` parameter: an optional sign and ASCII digits."""
    return parse_integer(text, "amount")


def parse_integer(text: str, what: str) -> int:
    """Parse the text of an integer parameter (`what`: amount, min, max, value) in int64."""
    if not _INTEGER.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidAmount(f"{what} must be an integer, got {shown!r}")
    return check_amount(int(text), what)


def check_count(count: int) -> int:
    """Return `count` if it fits a signed 64-bit integer, else raise CountOutOfRange."""
    if not INT64_MIN <= count <= INT64_MAX:
        raise CountOutOfRange(
            f"the count would become {count}, outside the signed 64-bit range; nothing was changed"
        )
    return count
