"""Memory and disk after touching many distinct counters (one million by default).

    .venv/bin/python bench/million.py [--names 1000000] [--shards 4]

Starts its own local Ray, increments every name once through the async Python client (many calls
in flight, so they travel in batches), then prints the host actors' private memory (USS, summed
over all hosts), objects kept in memory, rows on disk and disk bytes per counter. Stops Ray.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from counters.client import Namespace
from counters.settings import Settings
from counters.testing import host_processes

IN_FLIGHT = 4096


async def touch_all(namespace: Namespace, names: int) -> float:
    started = time.perf_counter()
    for first in range(0, names, IN_FLIGHT):
        batch = range(first, min(first + IN_FLIGHT, names))
        await asyncio.gather(*(namespace.get_by_name(f"counter-{i}").increment() for i in batch))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    arguments = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="counters-million-") as tmp:
        settings = Settings.load(storage_dir=tmp, shards=arguments.shards, namespace="million")
        namespace = Namespace(settings)
        seconds = asyncio.run(touch_all(namespace, arguments.names))
        handles: list[Any] = [namespace.handle(h) for h in namespace.known_hosts()]
        stats: list[dict[str, int]] = ray.get([h.stats.remote() for h in handles])
        uss = sum(p.memory_full_info().uss for p in host_processes())
        files = list(Path(tmp, "hosts").iterdir())
        disk = sum(f.stat().st_size for f in files)
        rows = 0
        for f in files:
            if f.suffix == ".sqlite3":
                with sqlite3.connect(f) as db:
                    rows += db.execute("SELECT count(*) FROM kv").fetchone()[0]
        print(
            f"names touched: {arguments.names:,} in {seconds:.1f} s "
            f"({arguments.names / seconds:,.0f} increments/s), {arguments.shards} shards"
        )
        print(
            f"host memory (USS, all hosts): {uss / 2**20:.0f} MiB; objects in memory: "
            f"{sum(s['objects'] for s in stats):,}; passivated: "
            f"{sum(s['passivated'] for s in stats):,}"
        )
        print(
            f"rows on disk: {rows:,}; disk: {disk / 2**20:.1f} MiB in {len(files)} files, "
            f"{disk / arguments.names:.0f} bytes per counter"
        )
        namespace.kill_hosts()
    ray.shutdown()


if __name__ == "__main__":
    main()
