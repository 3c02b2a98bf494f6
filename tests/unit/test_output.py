from __future__ import annotations

import json

from counters.cli.output import as_json, change_line, table, watch_line
from counters.values import CounterValue, Replaced


def test_a_table_aligns_names_left_and_numbers_right() -> None:
    rows = table(
        [
            CounterValue("A", 5, 3),
            CounterValue("user:1234", -120, 17),
            CounterValue("é", 0, 0),
        ]
    )
    assert rows == [
        "NAME       COUNT  VERSION",
        "A              5        3",
        "user:1234   -120       17",
        "é              0        0",
    ]


def test_a_table_widens_for_the_header_and_the_longest_value() -> None:
    assert table([CounterValue("B", -9223372036854775808, 9)]) == [
        "NAME                 COUNT  VERSION",
        "B     -9223372036854775808        9",
    ]
    assert table([]) == ["NAME  COUNT  VERSION"]


def test_lines_for_a_change_and_a_watch() -> None:
    assert change_line(CounterValue("A", 6, 2)) == "Durable Object 'A' count: 6"
    assert change_line(CounterValue("it's", -1, 1)) == "Durable Object 'it's' count: -1"
    assert watch_line(CounterValue("A", 6, 2)) == "A: 6 (version 2)"


def test_json_is_the_gateways_shape_on_one_line() -> None:
    assert as_json(CounterValue("A", 5, 7)) == '{"name": "A", "count": 5, "version": 7}'
    replaced = Replaced(CounterValue("A", 5, 7), CounterValue("A", 0, 8))
    line = as_json(replaced)
    assert "\n" not in line
    assert json.loads(line) == {
        "name": "A",
        "count": 0,
        "version": 8,
        "previous": {"count": 5, "version": 7},
    }
    assert json.loads(as_json(CounterValue('tab\t"q"', 1, 1)))["name"] == 'tab\t"q"'
