"""An export file is checked whole before an import sets anything."""

from __future__ import annotations

import pytest

from counters.cli.transfer import parse_export
from counters.errors import ConfigError


def test_a_good_file_reads_as_names_and_counts() -> None:
    lines = ['{"name": "a", "count": 1, "version": 4}', "", '{"name": "ü ✓", "count": -3}']
    assert parse_export(lines) == [("a", 1), ("ü ✓", -3)]


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("not json", "line 2: not JSON"),
        ('{"name": "", "count": 1}', "line 2: "),
        ('{"count": 1}', "line 2: "),
        ('{"name": "b", "count": 1.5}', "line 2: count must be a 64-bit integer"),
        ('{"name": "b", "count": true}', "line 2: count must be a 64-bit integer"),
        ('{"name": "b", "count": 9223372036854775808}', "line 2: count must be"),
        ('{"name": "a", "count": 2}', "line 2: 'a' appears twice"),
        ("[1, 2]", "line 2: not an object"),
    ],
)
def test_a_bad_line_is_named(line: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_export(['{"name": "a", "count": 1}', line], "export.jsonl")
