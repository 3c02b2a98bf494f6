"""Operation ids under a long load: the host's memory, its CPU per increment, reactivation.

    .venv/bin/python bench/op_ids.py [--names 1] [--increments 600000] [--rate 15000]

Drives one `ObjectHost` (no Ray, a real SQLite file) with batches of 20 increments, each with its
own id, as the gateway sends them: of one hot counter (``--names 1``), or round-robin over
`--names` counters (every counter takes many increments: a long spread load). Time is simulated
at `--rate` increments per second, so the retry floor (`--floor` seconds) is reached without
waiting for it. Prints, per phase, the CPU per increment and the process's resident memory, the
ids on disk, then how long a counter takes to come back after it left memory, and checks that an
id from within the floor, retried then, is answered with its first result.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

from counters.applied_log import Retention
from counters.counter import Counter
from counters.host import HostConfig, ObjectHost
from counters.operations import Operation
from counters.placement import Layout, Placement
from counters.storage import StorageDir

BATCH = 20


class SimulatedClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1, help="counters, round-robin")
    parser.add_argument("--increments", type=int, default=600_000)
    parser.add_argument("--rate", type=float, default=15_000.0, help="simulated increments/s")
    parser.add_argument("--floor", type=float, default=20.0, help="retry floor, seconds")
    parser.add_argument("--max-ids", type=int, default=100_000, help="ids the host remembers")
    arguments = parser.parse_args()
    clock = SimulatedClock()

    def name_of(op: int) -> str:
        return f"counter-{op % arguments.names}"

    retention = Retention(max_ids=arguments.max_ids, floor=arguments.floor)
    config = HostConfig(retention, 1.0)
    with tempfile.TemporaryDirectory(prefix="counters-hot-ids-") as tmp:
        layout = Layout("Counter", Placement.SHARDED, 1)
        host = ObjectHost(Counter, "Counter.shard-0-of-1", tmp, layout, config, clock)
        step = BATCH / arguments.rate
        phases = 4
        per_phase = arguments.increments // phases // BATCH
        sent = 0
        print(f"{'increments':>10} {'CPU µs/incr':>12} {'RSS MiB':>8}")
        for _ in range(phases):
            started = time.process_time()
            for _ in range(per_phase):
                ids = range(sent, sent + BATCH)
                host.apply([Operation(name_of(i), "increment", (1,), f"id-{i}") for i in ids])
                sent += BATCH
                clock.now += step
            cpu = (time.process_time() - started) / (per_phase * BATCH) * 1e6
            print(f"{sent:>10,} {cpu:>12.1f} {rss_mib():>8.0f}")
        path = StorageDir(Path(tmp)).host_path(host.host_name)
        with sqlite3.connect(path) as db:
            on_disk = db.execute("SELECT count(*) FROM applied_ids").fetchone()[0]
        clock.now += 1.1  # idle past the timeout: the sweep passivates every counter
        host.sweep()
        # An id from half the floor ago, past the bound: a client may still retry it.
        old = sent - int(arguments.rate * arguments.floor / 2)
        name = name_of(old)
        started = time.perf_counter()
        value = host.call(name, "get_counter_value")
        back = time.perf_counter() - started
        retried = host.call(name, "increment", 1, op_id=f"id-{old}")
        first = old // arguments.names + 1  # the answer it got the first time
        print(
            f"ids on disk: {on_disk:,} (floor {arguments.floor:g} s at {arguments.rate:,.0f}/s); "
            f"{name} back in memory after {back * 1e3:.1f} ms with count {value:,}; "
            f"id-{old:,} retried: {'answered once' if retried == first else 'APPLIED AGAIN'}"
        )


if __name__ == "__main__":
    main()
