"""Two versions of `counters` side by side in one run: is a change faster, or slower?

    python bench/compare.py                              # HEAD against the work tree
    python bench/compare.py --base HEAD~3 --backend sqlite --rounds 8

This machine's speed drifts by tens of percent from one minute to the next, so figures of two
versions taken apart cannot tell a change of a few percent, nor often of twenty. Here both serve
at once: each a `counters serve` with a local Ray and storage of its own (a database each on one
PostgreSQL server, or a storage dir each), sharded as `./dev bench` runs it. wrk loads one, then
the other, in the opposite order every other round (`run.rounds`), and each round gives the work
tree's ratio to the base in that round. The table shows the medians; every round's ratio follows
it, and their spread says how far to trust the median. The base is the revision's files
(`git archive`), served from a temporary folder with this checkout's virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import run as bench

ROOT = Path(__file__).resolve().parents[1]
BASE, WORK = "counters base", "counters work tree"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare with (HEAD)")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    arguments = parser.parse_args()
    bench.ensure_tools()
    with (
        tempfile.TemporaryDirectory(prefix="counters-compare-") as tmp_name,
        contextlib.ExitStack() as services,
    ):
        tmp = Path(tmp_name)
        trees = {BASE: _export(arguments.base, tmp / "base"), WORK: ROOT}
        databases = (
            services.enter_context(bench.postgres_databases(len(trees)))
            if arguments.backend == "postgres"
            else []
        )
        systems = {}
        for index, (system, tree) in enumerate(trees.items()):
            port = bench.free_port()
            flags = ("--database", databases[index]) if databases else ()
            log = tmp / f"{index}.log"
            storage = tmp / f"storage-{index}"
            services.enter_context(
                bench.counters_serve(port, storage, "sharded", log, *flags, tree=tree)
            )
            systems[system] = f"http://127.0.0.1:{port}"
        for base in systems.values():
            bench.warm_up_http(base, arguments, bench.SPREAD_NAMES)
        results = bench.rounds(systems, arguments, "compare")
    print_comparison(results, arguments)
    return 0


def print_comparison(results: list[bench.Result], arguments: argparse.Namespace) -> None:
    ratios = bench.paired_ratios(results, BASE)
    print(
        f"\n{'scenario':<34} {'system':<20} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'x base':>7}"
    )
    for r in sorted(bench.medians(results), key=lambda r: (r.scenario, r.system != BASE)):
        ratio = f"{statistics.median(ratios[r.scenario, r.system]):.2f}" if r.system == WORK else ""
        errors = f"  ({r.errors} errors)" if r.errors else ""
        print(
            f"{r.scenario:<34} {r.system:<20} {r.rps:>9,.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{ratio:>7}{errors}"
        )
    print(
        f"\nthe work tree against {arguments.base} on {arguments.backend}; medians of "
        f"{arguments.rounds} round(s); wrk -t{arguments.threads} -c{arguments.connections} "
        f"-d{arguments.duration:g}s on loopback\n\nthe ratio in each round:"
    )
    for (scenario, system), each in sorted(ratios.items()):
        if system == WORK:
            print(f"{scenario:<34} {' '.join(f'{ratio:.2f}' for ratio in each)}")


def _export(revision: str, folder: Path) -> Path:
    """The files of `revision`, as git holds them, in `folder`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision],
        check=True,
        capture_output=True,
    ).stdout
    folder.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


if __name__ == "__main__":
    sys.exit(main())
