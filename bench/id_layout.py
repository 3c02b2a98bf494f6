"""Operation ids kept by counter against in the order recorded: the cost of a commit, side by side.

    .venv/bin/python bench/id_layout.py [--names 10000] [--ids 300000] [--batch 24] [--hot]

Plain `sqlite3` with the host's settings (WAL, ``synchronous=FULL``), one file per layout: the
values of `--names` counters and `--ids` ids already remembered, then `--commits` (3,000) commits
of `--batch` increments, each a value written and an id recorded, over as many counters (or, with
`--hot`, one). "by counter" is the layout before migration 3 (ids keyed by (object, op_id));
"recorded" is the current one (numbered in the order recorded, found by an index on (op_id,
object)), and looks up the batch's ids first, as the host does. Prints µs per increment, the
commit's p50 and p99, and the ratio.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from pathlib import Path

BY_COUNTER = """
CREATE TABLE applied (object TEXT NOT NULL, op_id TEXT NOT NULL, at REAL NOT NULL,
    request TEXT NOT NULL, result TEXT NOT NULL, PRIMARY KEY (object, op_id)) WITHOUT ROWID
"""
RECORDED = """
CREATE TABLE applied (seq INTEGER PRIMARY KEY, op_id TEXT NOT NULL, object TEXT NOT NULL,
    at REAL NOT NULL, request TEXT NOT NULL, result TEXT NOT NULL);
CREATE UNIQUE INDEX applied_by_id ON applied (op_id, object)
"""
KV = """
CREATE TABLE kv (object TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (object, key)) WITHOUT ROWID
"""
UPSERT = (
    "INSERT INTO kv (object, key, value) VALUES (?, 'value', ?) "
    "ON CONFLICT (object, key) DO UPDATE SET value = excluded.value"
)
RECORD = "INSERT INTO applied (object, op_id, at, request, result) VALUES (?, ?, ?, ?, ?)"


def run(layout: str, path: Path, arguments: argparse.Namespace) -> tuple[float, float, float]:
    """µs per increment, and the commit's p50 and p99 in ms."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(KV + ";" + (RECORDED if layout == "recorded" else BY_COUNTER))
    names = [f"n{i}" for i in range(arguments.names)]
    ids = (f"gJ3x9Qa{n:x}" for n in range(10**12))  # as a client makes them: prefix, counter
    db.execute("BEGIN")
    db.executemany(UPSERT, [(name, "5") for name in names])
    now = time.time()
    old = (
        (random.choice(names), next(ids), now, "increment(1)", "5") for _ in range(arguments.ids)
    )
    db.executemany(RECORD, old)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    commits: list[float] = []
    started = time.perf_counter()
    for n in range(arguments.commits):
        if arguments.hot:
            batch = [names[0]] * arguments.batch
        else:
            batch = random.sample(names, arguments.batch)
        records = [(name, next(ids), time.time(), "increment(1)", str(n)) for name in batch]
        begun = time.perf_counter()
        if layout == "recorded":
            marks = ", ".join("?" * len(records))
            db.execute(f"SELECT * FROM applied WHERE op_id IN ({marks})", [r[1] for r in records])
        db.execute("BEGIN IMMEDIATE")
        db.executemany(UPSERT, [(name, str(n)) for name in dict.fromkeys(batch)])
        db.executemany(RECORD, records)
        db.execute("COMMIT")
        commits.append(time.perf_counter() - begun)
    elapsed = time.perf_counter() - started
    db.close()
    commits.sort()
    per_increment = elapsed / (arguments.commits * arguments.batch) * 1e6
    return per_increment, commits[len(commits) // 2] * 1e3, commits[len(commits) * 99 // 100] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=10_000)
    parser.add_argument("--ids", type=int, default=300_000, help="ids remembered before")
    parser.add_argument("--batch", type=int, default=24, help="increments per commit")
    parser.add_argument("--hot", action="store_true", help="all of them to one counter")
    parser.add_argument("--commits", type=int, default=3000)
    arguments = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="counters-id-layout-") as tmp:
        print(f"{'layout':<12} {'µs/incr':>8} {'p50 ms':>7} {'p99 ms':>7}")
        for layout in ("by counter", "recorded"):
            results[layout] = run(layout, Path(tmp) / f"{layout[:2]}.sqlite3", arguments)
            per_increment, p50, p99 = results[layout]
            print(f"{layout:<12} {per_increment:>8.1f} {p50:>7.2f} {p99:>7.2f}")
    ratio = results["by counter"][0] / results["recorded"][0]
    print(f"recorded is {ratio:.2f} x as fast per increment")


if __name__ == "__main__":
    main()
