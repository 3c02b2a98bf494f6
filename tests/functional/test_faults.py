"""Real faults: SIGKILLed hosts, lost hosts, overload, full and read-only disks."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray
from aiohttp.test_utils import TestClient
from ray.exceptions import RayActorError

from counters.client import Namespace, new_op_id
from counters.errors import CountersError, HostUnavailable, OutcomeUnknown, Overloaded
from counters.operations import Operation
from counters.placement import Placement
from counters.testing import PostgresServer, hosts_of
from tests.functional.conftest import (
    COLD_START_DEADLINE,
    NamespaceFactory,
    gateway_server,
    wait_for,
)


async def test_sigkilled_hosts_lose_nothing_and_apply_nothing_twice(
    make_namespace: NamespaceFactory, placement: Placement, backend: dict[str, str]
) -> None:
    # Three shards, so that some host is up to be killed while the last one restarts.
    shards = {"shards": 3} if placement is Placement.SHARDED else {}
    namespace = make_namespace(placement, deadline=30.0, **shards, **backend)
    database = namespace.settings.database
    port = psycopg.conninfo.conninfo_to_dict(database).get("port") if database else None
    names = [f"c{i}" for i in range(6)]
    acknowledged: Tally[str] = Tally()
    unexpected: list[CountersError] = []
    kills = 0
    stop_killing = threading.Event()
    load_over = threading.Event()

    def killer() -> None:
        nonlocal kills
        rng = random.Random(7)
        # The load lasts 8 s and 8 kills at least (a busy machine finds its victims slower),
        # 60 s at most; kills stop when it does, so the last operations land without a killer.
        while not stop_killing.wait(0.3):
            now = time.monotonic()
            if (now >= load_ends and kills >= 8) or now >= load_ends + 52:
                break
            # This service's hosts only.
            if port is not None:
                victims = hosts_of(database_port=int(port))
            else:
                victims = hosts_of(namespace.settings.storage_path)
            if victims:
                with contextlib.suppress(Exception):
                    rng.choice(victims).send_signal(signal.SIGKILL)
                    kills += 1
        load_over.set()

    def check(error: CountersError) -> None:
        if not error.retry_safe:
            unexpected.append(error)

    def going() -> bool:
        return not load_over.is_set()

    def client(seed: int) -> Awaitable[None]:
        return careful_client(namespace, names, seed, going, acknowledged, check)

    # Create the hosts before the killer starts, so it has victims from the first round.
    await asyncio.gather(*(namespace.get_by_name(n).get_counter_value() for n in names))
    load_ends = time.monotonic() + 8
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        await asyncio.gather(*(client(seed) for seed in range(12)))
    finally:
        stop_killing.set()
        thread.join()
    assert kills >= 8
    assert unexpected == []
    values = await asyncio.gather(*(namespace.get_by_name(n).get_counter_value() for n in names))
    assert dict(zip(names, values, strict=True)) == {n: acknowledged[n] for n in names}
    assert sum(acknowledged.values()) > 50


async def test_idempotency_key_over_http(client: TestClient[Any, Any]) -> None:
    headers = {"Idempotency-Key": "order-17"}
    for _ in range(3):
        async with client.post("/increment?name=A&amount=5", headers=headers) as response:
            assert await response.text() == "Durable Object 'A' count: 5"
    async with client.post("/increment?name=A&amount=6", headers=headers) as response:
        assert response.status == 422
        assert "add(5)" in await response.text()  # what /increment asks of the counter
    async with client.post("/increment?name=A", headers={"Idempotency-Key": "é"}) as response:
        assert response.status == 400
    async with client.get("/increment?name=A", headers={"Idempotency-Key": "order-18"}) as r:
        assert await r.text() == "Durable Object 'A' count: 6"
    async with client.get("/?name=A") as response:
        assert await response.text() == "Durable Object 'A' count: 6"


async def test_an_unreachable_host_is_503_within_the_deadline(
    make_namespace: NamespaceFactory, aiohttp_client: Any, postgres_dsn: str
) -> None:
    # Hosts need a resource no node has: they can never start, and wait for one (on PostgreSQL,
    # hosts may run on any node: a node with the resource could join).
    namespace = make_namespace(deadline=1.0, host_resource="no_such_node", database=postgres_dsn)
    client = await aiohttp_client(gateway_server(namespace))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.post("/increment?name=A", headers={"Idempotency-Key": "k-1"}) as response:
        assert 1.0 <= loop.time() - started < 3.0  # the deadline, not a hang
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert response.headers["Idempotency-Key"] == "k-1"
        assert "deadline" in await response.text()
    started = loop.time()
    async with client.post("/increment?name=A") as response:
        assert 1.0 <= loop.time() - started < 3.0
        assert response.status == 503
        made = response.headers["Idempotency-Key"]  # made up, for the caller to retry with
        assert made
        assert made != "k-1"
    with pytest.raises(HostUnavailable, match="retry with the same operation id"):
        await asyncio.to_thread(namespace.get_by_name("A").blocking.increment)


async def test_operations_behind_a_call_that_never_returns_fail_at_their_own_deadlines(
    make_namespace: NamespaceFactory, postgres_dsn: str
) -> None:
    # The host can never start: the first call leaves and is never answered.
    namespace = make_namespace(deadline=3.0, host_resource="no_such_node", database=postgres_dsn)
    loop = asyncio.get_running_loop()

    def increment() -> asyncio.Future[Any]:
        return namespace.call(Operation("A", "increment", (1,), new_op_id()))

    first = increment()
    await asyncio.sleep(2.0)  # the first fails 1 s from now; a busy loop has that much margin
    later_due = loop.time() + 3.0  # their deadlines are no earlier
    later = [increment() for _ in range(3)]  # they wait behind the call in flight
    with pytest.raises(HostUnavailable, match="deadline"):
        await first
    assert loop.time() < later_due  # the first failed at its deadline, not with the others
    results = await asyncio.gather(*later, return_exceptions=True)
    assert loop.time() >= later_due  # and the others not before theirs
    assert all(isinstance(result, HostUnavailable) for result in results), results


async def test_overload_answers_at_once_and_drops_nothing_it_accepted(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace(max_queue=20)
    stub = namespace.get_by_name("hot")
    futures = [namespace.call(Operation("hot", "increment", (1,), new_op_id())) for _ in range(300)]
    # At once: refused at submission, before anything was sent or awaited.
    refused = [future for future in futures if future.done()]
    assert len(refused) == 280
    assert all(isinstance(future.exception(), Overloaded) for future in refused)
    accepted = await asyncio.gather(*(future for future in futures if not future.done()))
    assert sorted(accepted) == list(range(1, 21))
    assert await stub.get_counter_value() == 20


def live_hosts(namespace: Namespace) -> list[str]:
    """The per-name hosts alive in the namespace, by name, as Ray lists them."""
    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == namespace.settings.namespace and "/" in actor["name"]
    )


async def test_per_name_actors_are_bounded_at_creation(make_namespace: NamespaceFactory) -> None:
    # Idle hosts stay (a minute): only the bound may stop one here, however slow creating is.
    namespace = make_namespace(
        Placement.PER_NAME, idle_timeout=60.0, max_actors_per_node=3, deadline=COLD_START_DEADLINE
    )
    names = [f"p{i}" for i in range(6)]
    for name in names:  # one after another: p0 is the least recently used
        assert await namespace.get_by_name(name).increment(op_id=f"{name}-op") == 1
        # The bound holds at every moment, not after some later round.
        assert len(live_hosts(namespace)) <= 3
    assert live_hosts(namespace) == [namespace.host_for(n) for n in names[3:]]
    # Those stopped come back from disk on demand, ids included.
    assert await namespace.get_by_name("p0").increment(op_id="p0-op") == 1
    assert [await namespace.get_by_name(n).get_counter_value() for n in names] == [1] * 6


async def test_per_name_actors_exit_when_idle_and_come_back_from_disk(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace(Placement.PER_NAME, idle_timeout=2.0, deadline=COLD_START_DEADLINE)
    names = ["q0", "q1"]
    for name in names:
        assert await namespace.get_by_name(name).increment(op_id=f"{name}-op") == 1
    # Idle past the timeout, they exit by themselves: no gateway, no maintenance round.
    await wait_for(lambda: live_hosts(namespace) == [], seconds=15)
    # They come back from disk on demand, ids included.
    assert await namespace.get_by_name("q0").increment(op_id="q0-op") == 1
    assert await namespace.get_by_name("q0").increment() == 2
    assert [await namespace.get_by_name(n).get_counter_value() for n in names] == [2, 1]


async def test_a_passivation_racing_calls_loses_and_doubles_nothing(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace(Placement.PER_NAME, deadline=COLD_START_DEADLINE)
    stub = namespace.get_by_name("racy")
    host = namespace.host_for("racy")

    def increments(count: int) -> list[asyncio.Future[Any]]:
        return [
            namespace.call(Operation("racy", "increment", (1,), new_op_id())) for _ in range(count)
        ]

    actors = []
    for _ in range(4):
        await stub.get_counter_value()  # the host is up (a new actor after the last round)
        handle: Any = ray.get_actor(host, namespace=namespace.settings.namespace)
        actors.append(handle._actor_id.hex())
        # The host exits between two batches while calls are in flight: those queued behind
        # the exit, and those its channel refuses, go to its successor with their ids.
        calls = increments(15)
        exit_call = handle.passivate_if_idle.remote(0.0)
        await asyncio.sleep(0.005)
        calls += increments(15)
        await asyncio.gather(*calls)
        with pytest.raises(RayActorError):
            await exit_call  # it did exit
    assert len(set(actors)) == 4  # a new actor every round
    assert await stub.get_counter_value() == 4 * 30


async def test_sharded_hosts_drop_idle_objects_by_themselves(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace(Placement.SHARDED, shards=1, idle_timeout=0.3)
    for i in range(50):
        await namespace.get_by_name(f"s{i}").increment()
    host: Any = namespace.handle(namespace.host_for("s0"))
    assert (await host.stats.remote())["objects"] == 50

    async def emptied() -> bool:
        return bool((await host.stats.remote())["objects"] == 0)

    # Past the timeout and the host's next upkeep round (0.5 s): by themselves, no call made.
    await wait_for(emptied, seconds=15)
    stats = await host.stats.remote()
    assert (stats["objects"], stats["passivated"]) == (0, 50)
    assert await namespace.get_by_name("s7").increment() == 2


@pytest.fixture
async def on_tiny_disk(
    tiny_disk: Path, make_namespace: NamespaceFactory, aiohttp_client: Any
) -> tuple[Namespace, TestClient[Any, Any]]:
    """A gateway whose one host keeps its file on the tiny disk, with A counted once."""
    namespace = make_namespace(Placement.SHARDED, shards=1, storage_dir=tiny_disk / "store")
    client = await aiohttp_client(gateway_server(namespace))
    async with client.get("/increment?name=A") as response:
        assert response.status == 200
    return namespace, client


async def test_a_full_disk_is_507_acknowledges_nothing_and_recovers(
    tiny_disk: Path,
    make_namespace: NamespaceFactory,
    on_tiny_disk: tuple[Namespace, TestClient[Any, Any]],
) -> None:
    namespace, client = on_tiny_disk
    filler = tiny_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        out.write(b"x" * (2 * 1024 * 1024))  # fills the disk
    statuses: Tally[int] = Tally()
    long_name = "n" * 1000
    for i in range(200):
        async with client.get(f"/increment?name={long_name}{i}") as response:
            statuses[response.status] += 1
            if response.status == 507:
                assert "full" in await response.text()
                assert response.headers["Retry-After"] == "1"
    assert statuses[507] > 0
    acknowledged = statuses[200]
    filler.unlink()  # space is back: the service recovers by itself
    async with client.get("/increment?name=A") as response:
        assert await response.text() == "Durable Object 'A' count: 2"
    namespace.kill_hosts()  # a restart reads only what is on disk
    for database in (tiny_disk / "store" / "hosts").glob("*.sqlite3"):
        with contextlib.closing(sqlite3.connect(database)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    fresh = make_namespace(Placement.SHARDED, shards=1, storage_dir=tiny_disk / "store")
    values = [await fresh.get_by_name(f"{long_name}{i}").get_counter_value() for i in range(200)]
    assert sum(values) == acknowledged
    assert await fresh.get_by_name("A").get_counter_value() == 2


async def test_a_read_only_disk_is_503_and_recovers(
    tiny_disk: Path, on_tiny_disk: tuple[Namespace, TestClient[Any, Any]]
) -> None:
    namespace, client = on_tiny_disk
    namespace.kill_hosts()  # a mount in use cannot turn read-only; the next host finds it so
    for _ in range(100):  # until the killed host has let go of its files
        remount = ["mount", "-o", "remount,ro", str(tiny_disk)]
        if subprocess.run(remount, capture_output=True).returncode == 0:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the tmpfs stayed busy")
    try:
        for _ in range(3):
            async with client.get("/increment?name=A") as response:
                assert response.status == 503
                assert "Read-only file system" in await response.text()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)
    async with client.get("/increment?name=A") as response:
        assert await response.text() == "Durable Object 'A' count: 2"


async def test_postgres_stopped_and_started_under_load_answers_503_then_loses_nothing(
    make_namespace: NamespaceFactory,
) -> None:
    server = PostgresServer().start()  # its own: stopping it must not touch other tests
    try:
        namespace = make_namespace(Placement.SHARDED, shards=2, database=server.create_database())
        names = [f"c{i}" for i in range(6)]
        acknowledged: Tally[str] = Tally()
        refusals: Tally[str] = Tally()
        unexpected: list[CountersError] = []

        def check(error: CountersError) -> None:
            refusals[error.code] += 1
            if error.http_status != 503 and not isinstance(error, OutcomeUnknown):
                unexpected.append(error)

        def client(seed: int, until: float) -> Awaitable[None]:
            def going() -> bool:
                return loop.time() < until

            return careful_client(namespace, names, seed, going, acknowledged, check)

        await asyncio.gather(*(namespace.get_by_name(n).get_counter_value() for n in names))
        loop = asyncio.get_running_loop()
        load = asyncio.gather(*(client(seed, loop.time() + 6) for seed in range(8)))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.stop, "immediate")  # a crash of the database
        await asyncio.sleep(1.5)
        await asyncio.to_thread(server.start)
        await load
        assert unexpected == []
        assert refusals["storage_failed"] > 0  # it was down, and said so
        values = await asyncio.gather(
            *(namespace.get_by_name(n).get_counter_value() for n in names)
        )
        assert dict(zip(names, values, strict=True)) == {n: acknowledged[n] for n in names}
        assert sum(acknowledged.values()) > 50
    finally:
        server.remove()


async def test_a_host_that_cannot_start_where_its_files_are_is_503_at_once_and_retried(
    make_namespace: NamespaceFactory,
) -> None:
    # SQLite: hosts run only on the storage dir's node, which lacks the resource: Ray says at
    # once that the host cannot start; the client tries again until the deadline.
    namespace = make_namespace(deadline=1.0, host_resource="no_such_node")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(HostUnavailable, match="cannot start"):
        await namespace.get_by_name("A").increment()
    assert 0.4 <= loop.time() - started <= 1.5  # tried until its next try would be too late


async def careful_client(
    namespace: Namespace,
    names: list[str],
    seed: int,
    going: Callable[[], bool],
    acknowledged: Tally[str],
    check: Callable[[CountersError], None],
) -> None:
    """Increments of random names while `going()`, each sent with one id until it is
    acknowledged, as a careful client does; every error goes to `check` first."""
    rng = random.Random(seed)
    while going():
        name = rng.choice(names)
        op_id = uuid.uuid4().hex
        while True:
            try:
                await namespace.get_by_name(name).increment(op_id=op_id)
                break
            except CountersError as error:
                check(error)
                await asyncio.sleep(0.05)
        acknowledged[name] += 1
