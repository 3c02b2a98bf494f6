"""Many connections at once: every increment lands exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient

from counters.placement import Placement, host_file_name
from tests.functional.conftest import COLD_START_DEADLINE, NamespaceFactory, gateway_server

NAMES = [f"counter-{i}" for i in range(20)]
TOTAL = 2000
CONNECTIONS = 64


@pytest.mark.parametrize(
    ("placement", "direct_channel"),
    [(Placement.SHARDED, True), (Placement.PER_NAME, True), (Placement.SHARDED, False)],
    ids=["sharded", "per-name", "sharded-ray-calls"],
)
async def test_2000_concurrent_increments_over_20_names_end_exactly_right(
    make_namespace: NamespaceFactory,
    placement: Placement,
    direct_channel: bool,
    aiohttp_client: Callable[..., Any],
    backend: dict[str, str],
) -> None:
    namespace = make_namespace(
        placement, deadline=COLD_START_DEADLINE, direct_channel=direct_channel, **backend
    )
    client: TestClient[Any, Any] = await aiohttp_client(gateway_server(namespace))
    plan = [NAMES[i % len(NAMES)] for i in range(TOTAL)]
    url = client.make_url("/increment")
    seen: list[int] = []
    connector = aiohttp.TCPConnector(limit=CONNECTIONS, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(name: str) -> None:
            async with session.post(url, params={"name": name}) as response:
                assert response.status == 200, await response.text()
                body = await response.text()
                seen.append(int(body.rsplit(" ", 1)[1]))

        await asyncio.gather(*(one(name) for name in plan))
        for name, expected in Tally(plan).items():
            async with session.get(client.make_url("/"), params={"name": name}) as response:
                assert await response.text() == f"Durable Object '{name}' count: {expected}"
    # Each increment was acknowledged with a distinct count: none applied twice, none lost.
    assert len(seen) == TOTAL
    per_name = TOTAL // len(NAMES)
    assert sorted(seen) == sorted(list(range(1, per_name + 1)) * len(NAMES))
    # And storage agrees with the answers.
    on_disk: dict[str, int] = {}
    if namespace.settings.database:
        with psycopg.connect(namespace.settings.database) as db:
            rows = db.execute("SELECT object, value FROM counters_kv WHERE key = 'count'")
            on_disk.update((name, json.loads(state)[0]) for name, state in rows)
    for host in namespace.known_hosts() if not namespace.settings.database else ():
        path: Path = namespace.settings.storage_path / "hosts" / host_file_name(host)
        with contextlib.closing(sqlite3.connect(path)) as sqlite:
            states = sqlite.execute("SELECT object, value FROM kv WHERE key = 'count'")
            on_disk.update((name, json.loads(state)[0]) for name, state in states)
    assert on_disk == dict.fromkeys(NAMES, per_name)
