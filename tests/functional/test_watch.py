"""Live updates: watchers in one process see changes made through another, over SSE and in
Python, resume where they left, survive a host restart, and never hold a host's writer."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
import ray
from aiohttp.test_utils import TestClient

from counters import CounterValue, Namespace, WatcherDropped
from counters.operations import Operation
from counters.placement import Placement
from gateway import Gateway

from .conftest import GatewayTestServer, NamespaceFactory, gateway_server, wait_for

Client = TestClient[Any, Any]
WITHIN = 10.0  # seconds an expected event may take on a loaded CI machine


async def next_value(values: Any) -> CounterValue:
    value: CounterValue = await asyncio.wait_for(anext(values), WITHIN)
    return value


async def test_a_watcher_sees_the_value_then_every_change_made_elsewhere(
    namespace: Namespace, make_namespace: NamespaceFactory
) -> None:
    await namespace.get_by_name("A").increment(5)
    other = Namespace.join(namespace.settings.namespace)  # another client: its own lanes, hub
    watch = namespace.get_by_name("A").watch()
    try:
        assert await next_value(watch) == CounterValue("A", 5, 1)
        stub = other.get_by_name("A")
        await stub.increment(2)
        await stub.decrement(10)
        await other.get_by_name("unwatched").increment()
        await stub.delete()
        await asyncio.gather(*(stub.increment() for _ in range(20)))  # a batch or a few
        seen = [await next_value(watch) for _ in range(23)]
        assert seen[:3] == [
            CounterValue("A", 7, 2),
            CounterValue("A", -3, 3),
            CounterValue("A", 0, 4),
        ]
        assert seen[3:] == [CounterValue("A", n, 4 + n) for n in range(1, 21)]  # one each
    finally:
        await watch.aclose()
        other.close()


async def test_sse_streams_changes_from_another_gateway_and_resumes(
    make_namespace: NamespaceFactory,
    placement: Placement,
    backend: dict[str, str],
    aiohttp_client: Callable[..., Any],
) -> None:
    namespace = make_namespace(placement, **backend)
    other = Namespace.join(namespace.settings.namespace)
    try:
        await sse_across_gateways(
            await aiohttp_client(gateway_server(namespace)),
            await aiohttp_client(gateway_server(other)),
        )
    finally:
        other.close()


async def sse_across_gateways(watching: Client, changing: Client) -> None:
    await changing.post("/increment?name=A&amount=3")
    async with watching.get("/watch?name=A&name=B") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        events = [await read_event(response) for _ in range(2)]  # each name now, either order
        assert {data["name"]: data for _, data in events} == {
            "A": {"name": "A", "count": 3, "version": 1},
            "B": {"name": "B", "count": 0, "version": 0},
        }
        assert events[-1][0] == "1,0"  # the id says what was seen of every name
        await changing.post("/increment?name=B&amount=4")
        assert await read_event(response) == ("1,1", {"name": "B", "count": 4, "version": 1})
    for _ in range(3):  # while away: A changes three times, B not
        await changing.post("/increment?name=A")
    resumed = {"Last-Event-ID": "1,1"}
    async with watching.get("/watch?name=A&name=B", headers=resumed) as response:
        assert await read_event(response) == ("4,1", {"name": "A", "count": 6, "version": 4})
        await changing.post("/decrement?name=B")
        assert await read_event(response) == ("4,2", {"name": "B", "count": 3, "version": 2})
    for bad in ("4", "x,1", "1,2,3"):  # not an id of this stream: resumes nothing
        async with watching.get("/watch?name=A&name=B", headers={"Last-Event-ID": bad}) as r:
            events = [await read_event(r) for _ in range(2)]  # the names in either order
            assert sorted(data["name"] for _, data in events) == ["A", "B"], bad
            assert events[-1][0] == "4,2"
    async with watching.get("/watch") as response:
        assert response.status == 400
    async with watching.post("/watch?name=A") as response:
        assert (response.status, response.headers["Allow"]) == (405, "GET")


async def read_event(response: Any) -> tuple[str, Any]:
    """The next event's id and data, skipping comments (heartbeats)."""
    while True:
        block = await asyncio.wait_for(response.content.readuntil(b"\n\n"), WITHIN)
        fields = dict(
            line.split(": ", 1) for line in block.decode().strip().split("\n") if line[:1] != ":"
        )
        if fields:
            return fields["id"], json.loads(fields["data"])


async def test_a_watcher_survives_its_host_restarting(namespace: Namespace) -> None:
    stub = namespace.get_by_name("R")
    await stub.increment()
    watch = stub.watch()
    try:
        assert await next_value(watch) == CounterValue("R", 1, 1)
        host = ray.get_actor(namespace.host_for("R"), namespace=namespace.settings.namespace)
        ray.kill(host, no_restart=False)  # a crash: Ray starts it again
        await stub.increment(10)  # retried by the client until the new host answers
        assert await next_value(watch) == CounterValue("R", 11, 2)
        await stub.increment()
        assert await next_value(watch) == CounterValue("R", 12, 3)
    finally:
        await watch.aclose()


async def test_waiting_watchers_never_hold_the_writer(namespace: Namespace) -> None:
    stub = namespace.get_by_name("W")
    await stub.increment()
    host = ray.get_actor(namespace.host_for("W"), namespace=namespace.settings.namespace)
    incarnation, last = await host.watch.remote(["W"])
    waiting = [host.changes.remote(incarnation, last, ["W"], f"process-{i}") for i in range(5)]
    await asyncio.sleep(0.2)
    for _ in range(10):  # each a batch of its own through the writer, while they wait
        await host.apply.remote((Operation("other", "increment", (1,), None),))
    ready, _ = ray.wait(waiting, num_returns=5, timeout=0)
    assert ready == []  # still waiting: the writer ran past them
    await stub.increment()
    answers = await asyncio.gather(*waiting)
    assert [changes for _, _, changes in answers] == [[("W", [2, 2])]] * 5


async def test_a_slow_watcher_is_dropped_not_buffered(make_namespace: NamespaceFactory) -> None:
    namespace = make_namespace(max_watch_backlog=5)
    stub = namespace.get_by_name("S")
    async with await namespace.watching(["S"]) as watch:
        for _ in range(8):  # nobody takes them
            await stub.increment()
        # Dropped once its poller has offered it more than the backlog: a poller on a busy
        # machine may still be behind the acknowledged increments here.
        await wait_for(lambda: watch.dropped, seconds=WITHIN)
        taken: list[CounterValue] = []
        with pytest.raises(WatcherDropped):
            await take_all(watch, taken)
        # The first value, then 5 changes (the backlog), then it was let go.
        assert [value.version for value in taken] == [0, 1, 2, 3, 4, 5]
    async with await namespace.watching(["S"]) as watch:  # resumes from the latest value
        assert await asyncio.wait_for(anext(watch), WITHIN) == CounterValue("S", 8, 8)


async def take_all(watch: Any, into: list[CounterValue]) -> None:
    while True:
        into.append(await asyncio.wait_for(anext(watch), WITHIN))


async def test_a_gateway_serves_max_watchers_then_503(
    make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any]
) -> None:
    client: Client = await aiohttp_client(gateway_server(make_namespace(max_watchers=1)))
    async with client.get("/watch?name=A") as first:
        await read_event(first)
        async with client.get("/watch?name=B", headers={"Accept": "application/json"}) as second:
            assert (second.status, second.headers["Retry-After"]) == (503, "1")
            assert (await second.json())["error"] == "overloaded"
    # The first one left: its slot is free once the gateway sees it gone (within a second).
    for _ in range(int(WITHIN / 0.2)):
        async with client.get("/watch?name=B") as again:
            if again.status == 200:
                assert await read_event(again) == ("0", {"name": "B", "count": 0, "version": 0})
                return
        await asyncio.sleep(0.2)
    pytest.fail("the slot of a watcher that left was never freed")


async def test_a_reader_that_never_reads_loses_its_connection(
    make_namespace: NamespaceFactory,
) -> None:
    """Dropped for being slow, its connection goes too: a peer cannot hold the gateway's
    memory (what it would have buffered) once its slot is free."""
    namespace = make_namespace(max_watch_backlog=20)
    name = "n" * 1000  # big events fill the socket's buffers soon
    await namespace.get_by_name(name).increment()
    gateway = Gateway(namespace)
    server = GatewayTestServer(gateway.handle)
    await server.start_server()
    peer = socket.socket()
    try:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.connect(("127.0.0.1", server.port or 0))
        peer.sendall(f"GET /watch?name={name} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        for _ in range(60):  # changes it never reads, until it falls behind and is dropped
            await asyncio.gather(
                *(namespace.call(Operation(name, "add", (1,))) for _ in range(500))
            )
            if gateway.streams == 0:
                break
            await asyncio.sleep(0.5)
        assert gateway.streams == 0

        def until_closed() -> bool:
            peer.settimeout(10)
            try:
                while peer.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            return True

        assert await asyncio.to_thread(until_closed)  # the gateway closed it, data and all
    finally:
        peer.close()
        await server.close()


async def test_watching_never_makes_other_per_name_counters_unavailable(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace(Placement.PER_NAME, max_actors_per_node=2)
    async with await namespace.watching(["A", "B"]) as watch:  # every host the cap allows
        assert {(await next_value(watch)).name for _ in range(2)} == {"A", "B"}
        assert await namespace.get_by_name("C").increment() == 1  # room made: a watched one left
        await namespace.get_by_name("A").increment(5)
        await namespace.get_by_name("B").increment(7)
        seen = {value.name: value for value in [await next_value(watch) for _ in range(2)]}
        assert seen == {"A": CounterValue("A", 5, 1), "B": CounterValue("B", 7, 1)}
