"""What one PostgreSQL commit costs a host and the server: the store alone, side by side.

    .venv/bin/python bench/pg_commit.py [--batch 24] [--commits 3000] [--names 10000] [--hot]

`PostgresHostStore.write` on a PostgreSQL server started for the run (fsync on, in a temporary
folder, on loopback), no Ray, no HTTP: `--commits` commits of `--batch` increments, each a
counter's value written and an operation id recorded, over `--names` counters (or, with
`--hot`, one). Two variants, alternating over `--rounds` rounds, each in a new database:
"jsonb" is the store as it is; "json" is the same statements reading the batch's rows as
json, as they did before (json's ``->>`` parses an element again for every column taken from
it). Prints, per variant, the medians over the rounds of increments/s, the commit's p50 and
p99, and the CPU per increment of the server's backend and of this process (the host's side).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path
from typing import NamedTuple

from counters.applied_log import AppliedOp
from counters.op_ids import new_op_id
from counters.placement import Layout, Placement
from counters.storage import postgres
from counters.storage.interface import Applied, Change, ServiceId
from counters.storage.postgres import PostgresStorage
from counters.testing import PostgresServer

STATEMENTS = {"jsonb": (dict(postgres._PARTS), postgres._FIND)}
STATEMENTS["json"] = (
    {k: v.replace("jsonb", "json") for k, v in postgres._PARTS.items()},
    postgres._FIND.replace("jsonb", "json"),
)


class Figures(NamedTuple):
    per_second: float
    p50_ms: float
    p99_ms: float
    server_us: float  # the backend's CPU per increment
    host_us: float  # this process's CPU per increment


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: PostgresServer, variant: str, args: argparse.Namespace) -> Figures:
    postgres._PARTS.update(STATEMENTS[variant][0])
    postgres._FIND = STATEMENTS[variant][1]
    layout = Layout("Counter", Placement.SHARDED, 1)
    store = PostgresStorage(server.create_database()).open_host(
        "Counter.shard-0-of-1", layout, ServiceId("bench", "bench/pg_commit.py")
    )
    counts: dict[str, int] = {}

    def batch() -> tuple[list[Change], list[Applied]]:
        now = time.time()
        names = ["hot"] * args.batch if args.hot else random.choices(args.names, k=args.batch)
        applied: list[Applied] = []
        for name in names:
            counts[name] = counts.get(name, 0) + 1
            applied.append((name, new_op_id(), AppliedOp(now, "increment(1)", str(counts[name]))))
        return [(name, "count", str(counts[name])) for name in set(names)], applied

    try:
        for _ in range(300):  # the prepared statement, and the counters' rows
            store.write(*batch())
        pid = store._connection().info.backend_pid
        took = []
        server_before, host_before = backend_cpu(pid), time.process_time()
        started = time.perf_counter()
        for _ in range(args.commits):
            changes, applied = batch()
            began = time.perf_counter()
            store.write(changes, applied)
            took.append(time.perf_counter() - began)
        wall = time.perf_counter() - started
        server_cpu = backend_cpu(pid) - server_before
        host_cpu = time.process_time() - host_before
    finally:
        store.close()
    increments = args.commits * args.batch
    took.sort()
    return Figures(
        increments / wall,
        took[len(took) // 2] * 1e3,
        took[int(len(took) * 0.99)] * 1e3,
        server_cpu / increments * 1e6,
        host_cpu / increments * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--names", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hot", action="store_true")
    args = parser.parse_args()
    args.names = [f"n{i}" for i in range(args.names)]
    server = PostgresServer().start()
    results: dict[str, list[Figures]] = {"json": [], "jsonb": []}
    try:
        for round_ in range(args.rounds):
            order = ["json", "jsonb"] if round_ % 2 == 0 else ["jsonb", "json"]
            for variant in order:
                results[variant].append(measure(server, variant, args))
    finally:
        server.remove()
    what = "one counter" if args.hot else f"{len(args.names):,} counters"
    print(
        f"{args.commits:,} commits of {args.batch} increments over {what}, {args.rounds} round(s)"
    )
    print(f"{'':6} {'incr/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'server us':>10} {'host us':>8}")
    for variant, figures in results.items():
        medians = [statistics.median(f[i] for f in figures) for i in range(len(Figures._fields))]
        print(
            f"{variant:6} {medians[0]:9,.0f} {medians[1]:7.2f} {medians[2]:7.2f} "
            f"{medians[3]:10.1f} {medians[4]:8.1f}"
        )


if __name__ == "__main__":
    main()
