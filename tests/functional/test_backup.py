"""A backup taken while the service serves, restored elsewhere: every count acknowledged before
it began is in it, each exactly as of its snapshot, on each backend."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from counters.cli.backup import backup, read_backup, restore
from counters.placement import Placement

from .conftest import NamespaceFactory


@pytest.mark.slow
async def test_a_backup_under_load_holds_every_acknowledged_count_and_restores_exactly(
    make_namespace: NamespaceFactory, backend: dict[str, str], tmp_path: Path
) -> None:
    namespace = make_namespace(Placement.SHARDED, shards=2, **backend)
    names = [f"load-{i}" for i in range(16)]
    acknowledged = dict.fromkeys(names, 0)
    stop = asyncio.Event()

    async def load(name: str) -> None:
        stub = namespace.get_by_name(name)
        while not stop.is_set():
            await stub.increment()
            acknowledged[name] += 1

    tasks = [asyncio.create_task(load(name)) for name in names]
    while min(acknowledged.values()) < 5:  # hosts up and serving (PostgreSQL's first: slower)
        await asyncio.sleep(0.1)
    path = tmp_path / "counters.backup"
    before = dict(acknowledged)
    await asyncio.to_thread(backup, namespace.settings.storage(), path, "Counter")
    after = dict(acknowledged)
    await asyncio.sleep(0.3)  # and the service went on
    stop.set()
    await asyncio.gather(*tasks)

    _, objects = read_backup(path)
    backed_up = {}
    for stored in objects:
        count, version = json.loads(stored.state["count"])
        assert count == version  # increments only: one state as of one commit, not torn
        backed_up[stored.name] = count
    assert set(backed_up) == set(names)
    for name in names:
        # Each loop has one increment in flight: committed perhaps, not yet acknowledged.
        assert before[name] <= backed_up[name] <= after[name] + 1, name

    elsewhere = make_namespace(Placement.SHARDED, storage_dir=tmp_path / "restored", shards=3)
    taken = read_backup(path)
    await asyncio.to_thread(restore, taken, elsewhere.settings.storage(), Placement.SHARDED, 3)
    restored = await elsewhere.get_many(names)
    assert {value.name: value.count for value in restored} == backed_up
    assert {value.name: value.version for value in restored} == backed_up
