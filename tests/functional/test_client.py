"""The Python stub, bare Ray calls and HTTP all see the same objects."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import ray
from aiohttp.test_utils import TestClient

from counters.client import Namespace, new_op_id
from counters.errors import (
    ConfigError,
    CountOutOfRange,
    InvalidAmount,
    InvalidName,
    LayoutMismatch,
)
from counters.operations import Operation
from counters.placement import Placement, default_shards
from counters.runtime import get_or_create_host
from tests.functional.conftest import COLD_START_DEADLINE, NamespaceFactory


async def test_stub_http_and_bare_ray_agree(
    namespace: Namespace, client: TestClient[Any, Any]
) -> None:
    stub = namespace.get_by_name("A")
    assert await stub.increment() == 1
    assert await stub.increment(41) == 42
    async with client.get("/increment?name=A") as response:
        assert await response.text() == "Durable Object 'A' count: 43"
    # Bare Ray, as the README documents it: find the host by name, call it.
    host: Any = ray.get_actor(namespace.host_for("A"), namespace=namespace.settings.namespace)
    assert ray.get(host.call.remote("A", "get_counter_value")) == 43
    assert ray.get(host.call.remote("A", "decrement", 3)) == 40
    with pytest.raises(CountOutOfRange):
        ray.get(host.call.remote("A", "increment", 2**63 - 1))
    assert await stub.get_counter_value() == 40
    assert await asyncio.to_thread(stub.blocking.decrement, 10) == 30
    assert await asyncio.to_thread(stub.blocking.get_counter_value) == 30


def test_blocking_stub(namespace: Namespace) -> None:
    stub = namespace.get_by_name("script").blocking
    assert stub.increment() == 1
    assert stub.increment(9) == 10
    assert stub.decrement(4) == 6
    assert stub.get_counter_value() == 6
    with pytest.raises(CountOutOfRange):
        stub.increment(2**63 - 1)
    assert stub.get_counter_value() == 6


async def test_stub_refuses_bad_input_before_sending(namespace: Namespace) -> None:
    with pytest.raises(InvalidName):
        namespace.get_by_name("")
    with pytest.raises(InvalidName):
        namespace.get_by_name("a\x00")
    stub = namespace.get_by_name("A")
    with pytest.raises(InvalidAmount):
        await stub.increment(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount):
        stub.blocking.decrement(2**63)
    assert namespace.known_hosts() == []


@pytest.mark.parametrize("direct_channel", [True, False], ids=["channel", "ray-calls"])
async def test_concurrent_calls_are_coalesced(
    make_namespace: NamespaceFactory, direct_channel: bool
) -> None:
    namespace = make_namespace(Placement.SHARDED, direct_channel=direct_channel)
    stub = namespace.get_by_name("hot")
    results = await asyncio.gather(*(stub.increment() for _ in range(500)))
    assert sorted(results) == list(range(1, 501))
    host: Any = ray.get_actor(namespace.host_for("hot"), namespace=namespace.settings.namespace)
    stats: dict[str, int] = ray.get(host.stats.remote())
    assert stats["operations"] == 500
    # 500 calls in flight at once leave in a handful of batches, not 500 actor calls.
    assert stats["batches"] <= 50
    # On the host's node they travel by its Unix socket, unless that is turned off.
    assert stats["channel_batches"] == (stats["batches"] if direct_channel else 0)


async def test_a_second_call_leaves_only_while_many_operations_wait(
    make_namespace: NamespaceFactory,
) -> None:
    # A second call in flight needs a sixteenth of max_batch waiting: 10 operations here.
    namespace = make_namespace(Placement.SHARDED, max_batch=160, max_in_flight=2)
    stub = namespace.get_by_name("hot")
    assert await stub.increment() == 1  # the host and its channel are up
    lane = namespace._lanes[namespace.host_for("hot")]

    def increment() -> asyncio.Future[Any]:
        return namespace.call(Operation("hot", "increment", (1,), new_op_id()))

    # A sender takes what waits when it first runs, at our next await: until then all wait.
    calls = [increment()]
    assert lane._senders == 1  # the lane was idle: a call leaves at once
    calls += [increment() for _ in range(8)]
    assert lane._senders == 1  # 9 wait: they leave together, one call
    calls.append(increment())
    assert lane._senders == 2  # 10 wait: worth a second call in flight
    assert sorted(await asyncio.gather(*calls)) == list(range(2, 12))
    assert await stub.get_counter_value() == 11
    assert lane._senders == 0


def test_creating_one_host_from_many_callers_yields_one_actor(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace(Placement.PER_NAME)
    host = namespace.host_for("raced")
    object_class, settings, layout = namespace.object_class, namespace.settings, namespace.layout

    @ray.remote(num_cpus=0)
    def create() -> str:
        handle = get_or_create_host(object_class, host, settings, layout)
        actor_id: str = handle._actor_id.hex()
        return actor_id

    # Eight other processes and eight threads here, all at once.
    refs = [create.remote() for _ in range(8)]

    async def from_threads() -> list[str]:
        handles = await asyncio.gather(
            *(
                asyncio.to_thread(
                    get_or_create_host,
                    namespace.object_class,
                    host,
                    namespace.settings,
                    namespace.layout,
                )
                for _ in range(8)
            )
        )
        return [handle._actor_id.hex() for handle in handles]

    ids = set(ray.get(refs)) | set(asyncio.run(from_threads()))
    assert len(ids) == 1
    # The cached path of the binding finds the very same actor.
    assert namespace.handle(host)._actor_id.hex() in ids
    assert namespace.get_by_name("raced").blocking.increment() == 1


async def test_a_storage_dir_keeps_its_layout(make_namespace: NamespaceFactory) -> None:
    first = make_namespace(Placement.SHARDED, shards=2)
    assert await first.get_by_name("A").increment() == 1
    other = make_namespace(Placement.SHARDED, shards=3)
    with pytest.raises(LayoutMismatch, match="same placement and shard count"):
        await other.get_by_name("A").increment()
    assert await first.get_by_name("A").get_counter_value() == 1


async def test_hosts_reload_from_disk_after_being_killed(
    make_namespace: NamespaceFactory, placement: Placement
) -> None:
    namespace = make_namespace(placement, deadline=COLD_START_DEADLINE)
    names = [f"n{i}" for i in range(10)]
    for name in names:
        assert await namespace.get_by_name(name).increment(5) == 5
    namespace.kill_hosts()  # permanently: the next call creates them anew, from disk
    values = await asyncio.gather(*(namespace.get_by_name(n).increment() for n in names))
    assert values == [6] * 10


def test_clients_of_one_namespace_agree_on_its_settings(
    make_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    first = make_namespace(Placement.SHARDED, shards=2)
    assert first.get_by_name("A").blocking.increment() == 1
    name = first.settings.namespace
    with pytest.raises(ConfigError, match="storage dir"):
        make_namespace(Placement.SHARDED, shards=2, namespace=name, storage_dir=tmp_path / "other")
    with pytest.raises(ConfigError, match="shards 2 \\(not 3\\)"):
        make_namespace(Placement.SHARDED, shards=3, namespace=name)
    joined = Namespace.join(name)
    assert joined.settings.storage_path == first.settings.storage_path
    assert joined.get_by_name("A").blocking.increment() == 2


def test_an_unset_shard_count_is_the_services_else_the_storage_dirs_else_the_machines(
    make_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    fresh = make_namespace(Placement.SHARDED)
    assert fresh.settings.shards == default_shards(os.cpu_count())
    laid_out = make_namespace(Placement.SHARDED, shards=3, storage_dir=tmp_path / "three")
    assert laid_out.get_by_name("A").blocking.increment() == 1
    # Another client of the running service takes the service's count...
    name = laid_out.settings.namespace
    assert make_namespace(namespace=name, storage_dir=tmp_path / "three").settings.shards == 3
    # ...and a service started anew on its storage dir (after an upgrade, say) the dir's.
    laid_out.kill_hosts()
    restarted = make_namespace(storage_dir=tmp_path / "three")
    assert restarted.settings.shards == 3
    assert restarted.get_by_name("A").blocking.increment() == 2


def test_joining_a_namespace_nobody_served_is_refused() -> None:
    with pytest.raises(ConfigError, match="no counters service has run"):
        Namespace.join("never-served")


async def test_a_host_whose_socket_cannot_be_opened_is_called_by_ray(
    make_namespace: NamespaceFactory,
) -> None:
    first = make_namespace(Placement.SHARDED, shards=1)
    assert await first.get_by_name("A").increment() == 1
    handle: Any = first.handle(first.host_for("A"))
    address = await handle.channel_address.remote()
    Path(address.path).unlink()  # as a client in another container would not see the socket
    settings = first.settings
    second = make_namespace(
        Placement.SHARDED, shards=1, namespace=settings.namespace, storage_dir=settings.storage_dir
    )
    assert await second.get_by_name("A").increment() == 2
    assert await second.get_by_name("A").increment() == 3
    stats = await handle.stats.remote()
    assert (stats["batches"], stats["channel_batches"]) == (3, 1)
