"""A smoke run of the benchmark, so that the command the README gives keeps working."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).parents[2] / "bench" / "run.py"


needs_wrk_and_redis = pytest.mark.skipif(
    not os.environ.get("CI")
    and (shutil.which("wrk") is None or shutil.which("redis-server") is None),
    reason="wrk and redis-server come from Debian's packages (.ci/run installs them; in CI a "
    "missing one fails this test)",
)


@needs_wrk_and_redis
def test_benchmark_smoke_run_prints_its_table() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        (m.group(1).strip(), m.group(2).strip()): float(m.group(3).replace(",", ""))
        for m in re.finditer(r"^(.{34}) (.{24}) +([\d,]+)", result.stdout, re.MULTILINE)
    }
    for system in ("ceiling", "raw ceiling", "redis", "counters sharded", "counters postgres"):
        assert rows[("hot increments", system)] > 0, result.stdout
    for system in ("counters stub", "counters call()", "counters call() untuned"):
        assert rows[("python client", system)] > 0, result.stdout
    assert "errors)" not in result.stdout
    # With one round, the table's ratio is that round's ratio: runs are paired within a round.
    table = re.search(
        r"^hot increments +counters sharded +[\d,]+ +[\d.]+ +[\d.]+ +([\d.]+)", result.stdout, re.M
    )
    round_ = re.search(
        r"^hot increments +counters sharded +x ceiling +([\d.]+)$", result.stdout, re.M
    )
    assert table, result.stdout
    assert round_, result.stdout
    assert table.group(1) == round_.group(1), result.stdout


def test_op_ids_bench_runs_and_answers_a_retry_once() -> None:
    arguments = ["--increments", "8000", "--rate", "1000", "--floor", "2", "--max-ids", "100"]
    out = run_bench("op_ids.py", *arguments)
    assert "retried: answered once" in out, out
    assert re.search(r"^ +8,000 +[\d.]+ +\d+$", out, re.MULTILINE), out


def test_id_layout_bench_compares_both_layouts() -> None:
    out = run_bench("id_layout.py", "--names", "200", "--ids", "2000", "--commits", "200")
    for layout in ("by counter", "recorded"):
        assert re.search(rf"^{layout} +[\d.]+ +[\d.]+ +[\d.]+$", out, re.MULTILINE), out
    assert re.search(r"^recorded is [\d.]+ x as fast", out, re.MULTILINE), out


def test_pg_commit_bench_compares_both_statements() -> None:
    out = run_bench("pg_commit.py", "--names", "200", "--commits", "100", "--rounds", "1")
    for variant in ("json", "jsonb"):
        assert re.search(rf"^{variant} +[\d,]+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+$", out, re.M), out
    assert "100 commits of 24 increments over 200 counters, 1 round(s)" in out, out


@needs_wrk_and_redis
def test_compare_serves_both_versions_and_gives_each_round_its_ratio() -> None:
    arguments = ("--backend", "sqlite", "--duration", "1", "--rounds", "1")
    out = run_bench("compare.py", *arguments, timeout=300)  # two services, a Ray each
    for system in ("counters base", "counters work tree"):
        assert re.search(rf"^hot increments +{system} +[\d,]+ ", out, re.MULTILINE), out
    ratio = re.search(r"^hot increments +counters work tree +[\d,]+ .* ([\d.]+)$", out, re.M)
    each = re.search(r"^hot increments +([\d.]+)$", out, re.MULTILINE)
    assert ratio, out
    assert each, out
    assert ratio.group(1) == each.group(1), out  # one round: the median is that round's ratio
    assert "the work tree against HEAD on sqlite" in out, out


def run_bench(script: str, *arguments: str, timeout: float = 120) -> str:
    """A bench script's output, once it exited cleanly."""
    command = [sys.executable, str(BENCH.parent / script), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
