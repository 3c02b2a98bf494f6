"""What schemathesis needs to know that the contract says in words: a name's format, and that
/counters takes names or a listing, not both."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st

from counters.validation import MAX_NAME_BYTES
from gateway.openapi import NAME_FORMAT

# Text without control characters (nor lone surrogates), at most 1024 bytes of UTF-8.
_CHARACTERS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
schemathesis.openapi.format(
    NAME_FORMAT,
    st.text(_CHARACTERS, min_size=1, max_size=64).filter(
        lambda name: len(name.encode()) <= MAX_NAME_BYTES
    ),
)


@schemathesis.hook
def filter_query(ctx: schemathesis.HookContext, query: dict[str, Any] | None) -> bool:
    """No request both names counters and lists them: JSON Schema cannot say that of separate
    parameters, and the gateway answers it 400."""
    if not query or "name" not in query:
        return True
    return not any(key in query for key in ("prefix", "after", "limit"))
