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
from typing import Any

from counters.storage.sqlite import _FIND, _RECORD, _UPSERT, MIGRATIONS

# The statements the store runs on the current layout, and the one it ran on the old.
RECORD = {
    "by counter": "INSERT INTO applied (object, op_id, at, request, result) VALUES (?, ?, ?, ?, ?)",
    "recorded": _RECORD,  # (op_id, object, ...)
}


def create(db: sqlite3.Connection, layout: str) -> None:
    """The store's own migrations: up to 2 for the layout by counter, all for the current."""
    for version, sql in MIGRATIONS:
        if layout == "by counter" and version > 2:
            break
        for statement in sql.split(";"):
            if statement.strip():
                db.execute(statement)


def run(layout: str, path: Path, arguments: argparse.Namespace) -> tuple[float, float, float]:
    """µs per increment, and the commit's p50 and p99 in ms."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    create(db, layout)
    names = [f"n{i}" for i in range(arguments.names)]
    ids = (f"gJ3x9Qa{n:x}" for n in range(10**12))  # as a client makes them: prefix, counter
    db.execute("BEGIN")
    db.executemany(_UPSERT, [(name, "value", "5") for name in names])
    now = time.time()
    old = ((random.choice(names), next(ids)) for _ in range(arguments.ids))
    db.executemany(RECORD[layout], (order(layout, *pair, now, "5") for pair in old))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    commits: list[float] = []
    started = time.perf_counter()
    for n in range(arguments.commits):
        if arguments.hot:
            batch = [names[0]] * arguments.batch
        else:
            batch = random.sample(names, arguments.batch)
        pairs = [(name, next(ids)) for name in batch]
        records = [order(layout, *pair, time.time(), str(n)) for pair in pairs]
        begun = time.perf_counter()
        if layout == "recorded":  # the host looks the batch's ids up first
            marks = ", ".join("?" * len(pairs))
            db.execute(f"{_FIND} ({marks})", [op_id for _, op_id in pairs]).fetchall()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(_UPSERT, [(name, "value", str(n)) for name in dict.fromkeys(batch)])
        db.executemany(RECORD[layout], records)
        db.execute("COMMIT")
        commits.append(time.perf_counter() - begun)
    elapsed = time.perf_counter() - started
    db.close()
    commits.sort()
    per_increment = elapsed / (arguments.commits * arguments.batch) * 1e6
    return per_increment, commits[len(commits) // 2] * 1e3, commits[len(commits) * 99 // 100] * 1e3


def order(layout: str, name: str, op_id: str, at: float, result: str) -> tuple[Any, ...]:
    """A record's values in the order of its layout's statement."""
    first = (name, op_id) if layout == "by counter" else (op_id, name)
    return (*first, at, "increment(1)", result)


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
