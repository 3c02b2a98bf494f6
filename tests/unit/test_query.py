from __future__ import annotations

import pytest

from counters.errors import InvalidInput
from gateway.query import QueryParams


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("name=A", "A"),
        ("name=A&name=B", "A"),
        ("x=1&name=a+b", "a b"),
        ("name=a%2Bb", "a+b"),
        ("name=%E5%90%8D", "名"),
        ("na%6De=C", "C"),
        ("name=", ""),
        ("name", ""),
        ("other=1", None),
        ("", None),
        ("bad=%zz&name=ok", "ok"),
        ("name=..%2F..%2Fetc", "../../etc"),
    ],
)
def test_first_value_is_decoded(raw: str, expected: str | None) -> None:
    assert QueryParams(raw).first("name") == expected


def test_later_sources_count_after_earlier_ones() -> None:
    assert QueryParams("", "name=body").first("name") == "body"
    assert QueryParams("name=query", "name=body").first("name") == "query"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("name=%", "percent-encoding"),
        ("name=%4", "percent-encoding"),
        ("name=%zz", "percent-encoding"),
        ("name=%FF", "UTF-8"),
        ("name=%C3", "UTF-8"),
        ("name=%ED%A0%80", "UTF-8"),  # an encoded surrogate
    ],
)
def test_broken_encoding_is_refused(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        QueryParams(raw).first("name")
