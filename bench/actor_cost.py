"""What one host actor costs: seconds to create, and private memory of its process.

    .venv/bin/python bench/actor_cost.py [--actors 20]

Starts its own local Ray, creates per-name host actors one after another (each answers a call
before the next is made), and reads each actor process's unique set size (USS: memory that
would be freed if it exited). Prints medians; stops Ray at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import psutil
import ray

from counters.client import Namespace
from counters.placement import Placement
from counters.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=20)
    arguments = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        settings = Settings.load(
            environ={}, storage_dir=storage, placement=Placement.PER_NAME.value, namespace="cost"
        )
        namespace = Namespace(settings)
        seconds: list[float] = []
        for i in range(arguments.actors):
            started = time.perf_counter()
            namespace.get_by_name(f"actor-{i}").blocking.increment()
            seconds.append(time.perf_counter() - started)
        pids = [
            process
            for process in psutil.process_iter(["cmdline"])
            if any("CounterHost" in part for part in process.info["cmdline"] or [])
        ]
        uss = [process.memory_full_info().uss / 2**20 for process in pids]
        print(f"host actors created: {arguments.actors}")
        print(
            f"create + first call: median {statistics.median(seconds):.3f} s, "
            f"max {max(seconds):.3f} s"
        )
        if uss:
            print(
                f"private memory (USS) per actor process: median {statistics.median(uss):.1f} MiB "
                f"over {len(uss)} processes"
            )
        namespace.kill_hosts()
    ray.shutdown()


if __name__ == "__main__":
    main()
