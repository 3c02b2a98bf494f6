"""Export and import through real gateways: a round trip is exact, a second import changes
nothing, a bad file changes nothing."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from counters.cli.remote import Remote, RemoteConfig
from counters.cli.transfer import export_counters, import_counters, parse_export

from .conftest import NamespaceFactory, gateway_server


async def _remote(
    make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any], folder: Path
) -> Remote:
    client = await aiohttp_client(gateway_server(make_namespace(storage_dir=folder)))
    return Remote(RemoteConfig(f"http://127.0.0.1:{client.port}"))


async def test_export_then_import_elsewhere_is_exact_and_a_second_import_changes_nothing(
    make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    source = await _remote(make_namespace, aiohttp_client, tmp_path / "source")
    target = await _remote(make_namespace, aiohttp_client, tmp_path / "target")
    with source, target:
        await _round_trip(source, target)


async def _round_trip(source: Remote, target: Remote) -> None:
    counts = {f"t-{i:03}": (i * 7) % 23 - 5 for i in range(1200)}  # past one read of 1,000
    counts["ünï ✓"] = 2**62
    for name, count in counts.items():
        await asyncio.to_thread(source.set, name, count)
    await asyncio.to_thread(target.set, "t-001", 999)  # differs: set
    await asyncio.to_thread(target.set, "t-002", counts["t-002"])  # already right: untouched

    out = io.StringIO()
    assert await asyncio.to_thread(export_counters, source, out) == len(counts)
    lines = out.getvalue().splitlines()
    exported = {json.loads(line)["name"]: json.loads(line)["count"] for line in lines}
    assert exported == counts
    assert 0 in exported.values()  # a counter set to 0 exists, and is made again

    parsed = parse_export(lines)
    first = await asyncio.to_thread(import_counters, target, parsed)
    assert (first.set, first.unchanged, first.conflicts) == (len(parsed) - 1, 1, [])
    after_first = await asyncio.to_thread(lambda: list(target.list()))
    assert {v.name: v.count for v in after_first} == exported

    second = await asyncio.to_thread(import_counters, target, parsed)
    assert (second.set, second.unchanged, second.conflicts) == (0, len(parsed), [])
    assert await asyncio.to_thread(lambda: list(target.list())) == after_first  # versions too
