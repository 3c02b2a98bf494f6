from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counters.errors import CountOutOfRange, InvalidAmount, InvalidName
from counters.validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_NAME_BYTES,
    check_amount,
    check_count,
    parse_amount,
    validate_name,
)


@pytest.mark.parametrize(
    "name", ["A", "../../etc", "a b", "名前", "x" * MAX_NAME_BYTES, "é" * (MAX_NAME_BYTES // 2)]
)
def test_valid_names_pass_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * (MAX_NAME_BYTES + 1), "1025 bytes"),
        ("é" * (MAX_NAME_BYTES // 2 + 1), "1026 bytes"),
        ("a\x00b", "U\\+0000"),
        ("a\nb", "U\\+000A"),
        ("a\x7fb", "U\\+007F"),
        ("a\x85b", "U\\+0085"),
        ("\ud800", "surrogate"),
        (7, "text"),
        (None, "text"),
    ],
)
def test_invalid_names_say_why(name: object, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason):
        validate_name(name)


@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_every_int64_parses_back(amount: int) -> None:
    assert parse_amount(str(amount)) == amount
    assert check_amount(amount) == amount


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.5",
        "1e3",
        "0x10",
        "1_000",
        " 7",
        "7 ",
        "\u0661",
        "--1",
        "+",
        "9223372036854775808",
        "-9223372036854775809",
        "9" * 400,
    ],
)
def test_bad_amount_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text)


@pytest.mark.parametrize("amount", [True, 1.0, "1", None, INT64_MAX + 1, INT64_MIN - 1])
def test_bad_amount_values_are_refused(amount: object) -> None:
    with pytest.raises(InvalidAmount):
        check_amount(amount)


def test_check_count_bounds() -> None:
    assert check_count(INT64_MAX) == INT64_MAX
    assert check_count(INT64_MIN) == INT64_MIN
    with pytest.raises(CountOutOfRange, match="nothing was changed"):
        check_count(INT64_MAX + 1)
    with pytest.raises(CountOutOfRange):
        check_count(INT64_MIN - 1)
