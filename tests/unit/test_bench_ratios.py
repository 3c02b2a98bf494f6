"""The benchmark's arithmetic: ratios pair the runs of one round (plain Python, no runs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_run", Path(__file__).parents[2] / "bench" / "run.py"
)
assert _spec is not None
assert _spec.loader is not None
bench_run = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = bench_run
_spec.loader.exec_module(bench_run)
Result = bench_run.Result

HOT = "hot increments"


def runs(system: str, *rates: float) -> list[Any]:
    return [Result(HOT, system, rps, 1.0, 2.0, round=f"sharded {i}") for i, rps in enumerate(rates)]


def test_a_ratio_pairs_the_runs_of_one_round() -> None:
    # The machine slows down in round 1 and the project in round 2: paired, the ratios are
    # 0.9, 0.9 and 0.5; of the medians it would be 60 / 100.
    results = runs("ceiling", 100, 50, 120) + runs("counters sharded", 90, 45, 60)
    ratios = bench_run.paired_ratios(results, "ceiling")
    assert ratios == {(HOT, "counters sharded"): pytest.approx([0.9, 0.9, 0.5])}


def test_the_table_gives_the_median_of_the_rounds_and_every_round(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = runs("ceiling", 100, 50, 120) + runs("counters sharded", 90, 45, 60)
    # Measured apart (no round shared with the references): a ratio of medians.
    results += [Result(HOT, "counters per-name", 30, 1.0, 2.0, round="per-name 0")]
    bench_run.print_table(results, "footer")
    out = capsys.readouterr().out
    assert "0.90" in next(line for line in out.splitlines() if "counters sharded" in line)
    assert "0.30" in next(line for line in out.splitlines() if "counters per-name" in line)
    assert "x ceiling         0.90 0.90 0.50" in out
