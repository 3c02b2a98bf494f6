"""Promises about changes that are easy to break without noticing, on the shared real Ray.

- A change is applied once per request, never less: operation ids are random per call, so
  forked clients, a key that an answer reveals, or a change sent without an id never make the
  host take a new change for an old one.
- Idempotency keys are scoped per counter.
- Reads keep a host's memory within its cap.
- A lane answers every operation by its deadline, whatever fails inside the client.
- A host that dies holding a change makes the caller's answer `outcome_unknown`, over HTTP too.
- One storage dir, one service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import ray
from aiohttp.test_utils import TestClient

from counters.channel import Channel
from counters.client import Namespace, new_op_id
from counters.counter import Counter
from counters.errors import ConfigError, HostUnavailable, OutcomeUnknown, StorageDirInUse
from counters.op_ids import ID_LENGTH
from counters.operations import Operation, Results
from counters.placement import Placement
from counters.settings import Settings
from counters.storage.sqlite import SqliteStore
from counters.storage.storage_dir import StorageDir
from counters.testing import Service
from counters.validation import INT64_MAX

from .conftest import NamespaceFactory, gateway_server

Client = TestClient[Any, Any]
URL_SAFE_ID = re.compile(rf"[A-Za-z0-9_-]{{{ID_LENGTH}}}")
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
JSON = {"Accept": "application/json"}


@pytest.fixture
def own_namespaces(tmp_path: Path) -> Iterator[Callable[..., Namespace]]:
    """Namespaces of any class or subclass, set up as `make_namespace` does; hosts killed after.

    Hosts are killed by name as well as by handle: one that crashed (and was restarted by Ray)
    may no longer have a handle in its binding.
    """
    made: list[Namespace] = []

    def make(
        namespace_class: type[Namespace] = Namespace,
        object_class: type = Counter,
        **overrides: Any,
    ) -> Namespace:
        settings = Settings.load(
            environ={},
            namespace=f"test-{uuid.uuid4().hex[:12]}",
            storage_dir=str(tmp_path / "storage"),
            placement=Placement.SHARDED.value,
            **overrides,
        )
        namespace = namespace_class(settings, object_class)
        made.append(namespace)
        return namespace

    yield make
    for namespace in made:
        hosts = {namespace.layout.host_for(name) for name in ("A", "B")}
        namespace.kill_hosts()
        for host in hosts:
            with contextlib.suppress(ValueError):
                actor = ray.get_actor(host, namespace=namespace.settings.namespace)
                ray.kill(actor, no_restart=True)


async def count_of(client: Client, name: str) -> int:
    async with client.get("/", params={"name": name}, headers=JSON) as response:
        assert response.status == 200
        count: int = (await response.json())["count"]
        return count


async def increment(
    client: Client, name: str, amount: int = 1, key: str | None = None
) -> tuple[int, dict[str, Any], str | None]:
    """POST /increment: status, JSON body, and the Idempotency-Key header of the answer."""
    headers = dict(JSON)
    if key is not None:
        headers["Idempotency-Key"] = key
    params = {"name": name, "amount": str(amount)}
    async with client.post("/increment", params=params, headers=headers) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body, response.headers.get("Idempotency-Key")


def successor(key: str, step: int) -> str:
    """`key` with its last character stepped up `step` places in the base64url alphabet."""
    return key[:-1] + BASE64URL[(BASE64URL.index(key[-1]) + step) % len(BASE64URL)]


# 1. Forked clients ------------------------------------------------------------------------------

FORKING_CLIENT = """
import os, sys
import ray
from counters import Namespace, new_op_id

address, ray_namespace = sys.argv[1:]
new_op_id()  # the pool of ids is drawn before the forks
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ray.init(address=address, namespace=ray_namespace, log_to_driver=False)
            Namespace.join(ray_namespace).get_by_name("forked").blocking.increment()
            ray.shutdown()
            code = 0
        finally:
            os._exit(code)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
sys.exit(0 if codes == [0, 0, 0] else f"children exited with {codes}")
"""


def test_clients_forked_from_one_process_each_apply_their_change(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace()  # the service the children join
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            FORKING_CLIENT,
            ray.get_runtime_context().gcs_address,
            namespace.settings.namespace,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr
    assert namespace.get_by_name("forked").blocking.get_counter_value() == 3


# 2. Keys an answer reveals ----------------------------------------------------------------------


async def test_a_key_an_answer_reveals_cannot_swallow_later_changes(
    make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any]
) -> None:
    client = await aiohttp_client(gateway_server(make_namespace(shards=1)))
    assert (await increment(client, "B", INT64_MAX))[0] == 200
    status, body, revealed = await increment(client, "B")  # past the range: 422, with its key
    assert (status, body["error"]) == (422, "count_out_of_range")
    assert revealed is not None
    # Someone who saw that answer sends the key, the keys with its last character stepped, and
    # the keys the same process makes next (its counter stepped) with the secret part kept.
    prefix, counter, secret = revealed[:12], int(revealed[12:22], 16), revealed[22:]
    guesses = [revealed] + [successor(revealed, step) for step in (1, 2, 3)]
    guesses += [f"{prefix}{counter + step:010x}{secret}" for step in (1, 2, 3)]
    for count, key in enumerate(guesses, start=1):
        answer = (200, {"name": "A", "count": count, "version": count})
        assert (await increment(client, "A", key=key))[:2] == answer
    # Everybody else's changes, with keys the gateway makes: each one applies.
    for count in (8, 9, 10):
        status, body, made = await increment(client, "A")
        assert (status, body) == (200, {"name": "A", "count": count, "version": count})
        assert made is None  # a success names no key
    assert await count_of(client, "A") == 10


async def test_keys_the_gateway_makes_each_keep_a_secret(
    make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any]
) -> None:
    client = await aiohttp_client(gateway_server(make_namespace(shards=1)))
    assert (await increment(client, "B", INT64_MAX))[0] == 200
    answers = await asyncio.gather(*(increment(client, "B") for _ in range(1000)))
    from_answers = [key for status, _, key in answers if status == 422 and key is not None]
    assert len(from_answers) == 1000
    made = [new_op_id() for _ in range(1000)]  # the function the gateway calls
    for keys in (from_answers, made):
        assert [k for k in keys if not URL_SAFE_ID.fullmatch(k)] == []
        assert len({key[-10:] for key in keys}) == 1000  # 60 random bits each
    assert await count_of(client, "B") == INT64_MAX


# 3. Keys are per counter ------------------------------------------------------------------------


async def test_an_idempotency_key_is_scoped_to_its_counter(
    make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any]
) -> None:
    client = await aiohttp_client(gateway_server(make_namespace(shards=1)))
    key = "order-17"
    for _ in range(2):
        assert await increment(client, "A", 5, key) == (
            200,
            {"name": "A", "count": 5, "version": 1},
            None,
        )
    # The same key on another counter is another change: applied there, once.
    for _ in range(2):
        assert await increment(client, "B", 5, key) == (
            200,
            {"name": "B", "count": 5, "version": 1},
            None,
        )
    # The same key on A for another amount is refused, and names the key.
    status, body, echoed = await increment(client, "A", 6, key)
    assert (status, body["error"], echoed) == (422, "idempotency_key_reused", key)
    assert "add(5)" in body["message"]  # what /increment asks of the counter: add 5
    assert (await count_of(client, "A"), await count_of(client, "B")) == (5, 5)


# 4. A change sent without an id gets one --------------------------------------------------------


def applied_rows(namespace: Namespace, name: str) -> list[tuple[Any, ...]]:
    """The ids the host of `name` recorded for it, read from its file with a plain connection."""
    path = StorageDir(namespace.settings.storage_path).host_path(namespace.host_for(name))
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(
            "SELECT op_id, request, result FROM applied_ids WHERE object = ? ORDER BY seq",
            (name,),
        ).fetchall()


async def test_a_change_without_an_id_is_recorded_with_a_fresh_one(namespace: Namespace) -> None:
    assert await namespace.call(Operation("A", "increment", (1,))) == 1
    rows = applied_rows(namespace, "A")
    assert [(request, result) for _, request, result in rows] == [("increment(1)", "1")]
    assert URL_SAFE_ID.fullmatch(rows[0][0])

    blocking = await asyncio.to_thread(namespace.call_blocking, Operation("A", "increment", (2,)))
    assert blocking == 3
    rows = applied_rows(namespace, "A")
    assert [(request, result) for _, request, result in rows] == [
        ("increment(1)", "1"),
        ("increment(2)", "3"),
    ]
    assert URL_SAFE_ID.fullmatch(rows[1][0])
    assert rows[0][0] != rows[1][0]

    assert await namespace.call(Operation("A", "get_counter_value")) == 3
    read = Operation("A", "get_counter_value")
    assert await asyncio.to_thread(namespace.call_blocking, read) == 3
    assert len(applied_rows(namespace, "A")) == 2  # reads record nothing


# 5. Reads keep the memory cap -------------------------------------------------------------------


async def test_reads_of_new_names_keep_a_host_within_its_memory_cap(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace(shards=1, max_objects_per_host=5, idle_timeout=3600.0)
    for i in range(50):
        assert await namespace.get_by_name(f"never-written-{i}").get_counter_value() == 0
    host = namespace.host_for("never-written-0")
    stats = await namespace.handle(host).stats.remote()
    assert (stats["objects"], stats["passivated"], stats["operations"]) == (5, 45, 50)


# 6. A lane never stalls -------------------------------------------------------------------------


class ChannelOpeningFailsOnce(Namespace):
    """Opening a host's channel raises, the first time, an error nobody planned for.

    The method is replaced whole, its own fallback to Ray calls included: what a bug in it
    would do. (`NodeLookupFailsOnce` fails inside it, where the fallback applies.)
    """

    failures = 0

    async def _open_channel(self, host: str, handle: Any) -> Channel | None:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError("boom")
        return await super()._open_channel(host, handle)


class NodeLookupFailsOnce(Namespace):
    """Inside the channel's opening, the first look-up of this node raises."""

    failures = 0

    def _node_id(self) -> str:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError("boom")
        return super()._node_id()


async def submit_all(namespace: Namespace, count: int) -> list[BaseException | int]:
    """`count` increments of A at once, each answered within 6 s: its value or its error.

    The host is started first, by a Ray call that opens no channel: the deadline is for the
    lane, not for Ray starting an actor process on a busy machine.
    """
    await namespace.handle(namespace.host_for("A")).stats.remote()
    loop = asyncio.get_running_loop()
    started = loop.time()
    futures = [namespace.call(Operation("A", "increment", (1,), new_op_id())) for _ in range(count)]
    done, _ = await asyncio.wait(futures, timeout=6)
    assert len(done) == count, f"{count - len(done)} of {count} unanswered after 6 s"
    assert loop.time() - started < 6
    return [f.exception() or f.result() for f in futures]


class FailsThenHangs(Namespace):
    """A host that cannot start, then a call that never returns: the deadline passes while
    the operation is out again."""

    sent = 0

    def send(self, host: str, operations: Sequence[Operation]) -> asyncio.Future[Results]:
        self.sent += 1
        future: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
        if self.sent == 1:
            future.set_exception(HostUnavailable(f"host {host} cannot start: no node fits"))
        return future


async def test_an_operation_out_at_its_deadline_is_told_its_last_failure(
    own_namespaces: Callable[..., Namespace],
) -> None:
    namespace = own_namespaces(FailsThenHangs, deadline=1.0)
    assert isinstance(namespace, FailsThenHangs)
    with pytest.raises(HostUnavailable, match=r"deadline .*cannot start: no node fits"):
        await namespace.call(Operation("A", "increment", (1,), new_op_id()))
    assert namespace.sent == 2  # resent, and out when its time was up


async def test_a_lane_answers_every_operation_when_opening_a_channel_raises(
    own_namespaces: Callable[..., Namespace],
) -> None:
    # Four operations a batch, one batch at a time: sixteen wait behind the batch that fails.
    namespace = own_namespaces(ChannelOpeningFailsOnce, deadline=5.0, max_batch=4, max_in_flight=1)
    outcomes = await submit_all(namespace, 20)
    # The batch that met the error fails, as an unknown outcome to retry with its ids (never a
    # bare exception); those behind it leave, and apply, in order.
    failed, applied = outcomes[:4], outcomes[4:]
    assert all(
        isinstance(o, OutcomeUnknown) and "RuntimeError('boom')" in o.message for o in failed
    )
    assert applied == list(range(1, 17))
    succeeded = sum(isinstance(o, int) for o in outcomes)
    assert await namespace.get_by_name("A").get_counter_value() == succeeded
    assert await namespace.get_by_name("A").increment() == succeeded + 1


async def test_a_channel_that_cannot_be_opened_falls_back_to_ray(
    own_namespaces: Callable[..., Namespace],
) -> None:
    namespace = own_namespaces(NodeLookupFailsOnce, deadline=5.0)
    outcomes = await submit_all(namespace, 20)
    assert [o if isinstance(o, int) else repr(o) for o in outcomes] == list(range(1, 21))
    assert await namespace.get_by_name("A").increment() == 21
    stats = await namespace.handle(namespace.host_for("A")).stats.remote()
    assert (stats["operations"], stats["channel_batches"]) == (21, 0)


# 7. outcome_unknown over HTTP -------------------------------------------------------------------


class Crashing(Counter):
    """A counter whose change (what /increment calls) kills the host's process mid-call."""

    __slots__ = ()

    def add(
        self,
        amount: int = 1,
        floor: int | None = None,
        ceiling: int | None = None,
        if_version: int | None = None,
    ) -> NoReturn:
        os._exit(1)


async def test_a_host_dying_with_the_change_is_outcome_unknown_over_http(
    own_namespaces: Callable[..., Namespace], aiohttp_client: Callable[..., Any]
) -> None:
    namespace = own_namespaces(object_class=Crashing, deadline=1.0, shards=1)
    client = await aiohttp_client(gateway_server(namespace))
    # The host up first, by a call free of the short deadline; then a read opens its channel.
    await namespace.handle(namespace.host_for("A")).stats.remote()
    assert await count_of(client, "A") == 0
    headers = {"Idempotency-Key": "k-7", **JSON}
    async with client.post("/increment?name=A", headers=headers) as response:
        assert response.status == 503
        body = await response.json()
        assert body["error"] == "outcome_unknown"
        assert "k-7" in body["message"]
        assert response.headers["Retry-After"] == "1"
        assert response.headers["Idempotency-Key"] == "k-7"


# 8. One storage dir, one service ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_service_on_a_storage_dir_in_use_refuses_to_start(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    with Service(storage) as first:
        for count in (1, 2, 3):
            assert first.get("/increment?name=A") == (200, f"Durable Object 'A' count: {count}")
        second = Service(storage)
        try:
            with pytest.raises(RuntimeError, match="serve exited early") as refused:
                second.start()
        finally:
            if second.process is not None and second.process.poll() is None:
                second.kill_everything()  # it started after all: leave nothing running
        assert "is in use by" in str(refused.value)
        assert second.process is not None
        assert second.process.returncode == 2
        for count in (4, 5):
            assert first.get("/increment?name=A") == (200, f"Durable Object 'A' count: {count}")
        assert first.stop(signal.SIGTERM) == 0
        assert first.leftovers() == []
    with Service(storage) as third:
        assert third.get("/?name=A") == (200, "Durable Object 'A' count: 5")


async def test_a_namespace_on_another_services_storage_dir_is_refused(
    make_namespace: NamespaceFactory,
) -> None:
    first = make_namespace(namespace=f"test-a-{uuid.uuid4().hex[:8]}")
    for count in (1, 2, 3):
        assert await first.get_by_name("A").increment() == count
    second = make_namespace(namespace=f"test-b-{uuid.uuid4().hex[:8]}")
    assert second.settings.storage_path == first.settings.storage_path
    with pytest.raises(StorageDirInUse, match="is in use by"):
        await second.get_by_name("A").increment()
    assert await first.get_by_name("A").get_counter_value() == 3
    assert await first.get_by_name("A").increment() == 4


# 9. A host fenced behind its back --------------------------------------------------------------


@pytest.mark.parametrize("direct_channel", [True, False], ids=["channel", "ray-calls"])
async def test_a_fenced_host_leaves_and_its_successor_serves_what_is_stored(
    make_namespace: NamespaceFactory, direct_channel: bool
) -> None:
    namespace = make_namespace(shards=1, direct_channel=direct_channel)
    stub = namespace.get_by_name("A")
    for count in (1, 2, 3):
        assert await stub.increment() == count
    host = namespace.host_for("A")
    before: Any = ray.get_actor(host, namespace=namespace.settings.namespace)
    # Another writer takes the file over behind the host's back (as on a filesystem without
    # locks) and stores 100.
    path = StorageDir(namespace.settings.storage_path).host_path(host)
    other = SqliteStore(path, host)
    other.write([("A", "count", "[100,3]")])
    other.close()
    # The host finds itself fenced at its next commit: it stores nothing, the batch goes to a
    # new host, which reads what is stored.
    assert await stub.increment() == 101
    assert await stub.increment() == 102
    after: Any = ray.get_actor(host, namespace=namespace.settings.namespace)
    assert after._actor_id != before._actor_id
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT key, value FROM kv WHERE object = 'A' ORDER BY key").fetchall()
        assert rows == [("count", "[102,5]")]  # the count and its version


# 10. The service's settings, whoever creates its actors -----------------------------------------


async def test_hosts_take_the_services_settings_whichever_client_creates_them(
    make_namespace: NamespaceFactory,
) -> None:
    service = make_namespace(shards=1, max_objects_per_host=3)
    name = service.settings.namespace
    # Another client, with its own (default) settings, is the first to reach the host.
    other = make_namespace(shards=1, namespace=name)
    assert other.settings.max_objects_per_host != 3
    for i in range(40):
        assert await other.get_by_name(f"r{i}").get_counter_value() == 0
    stats = await other.handle(other.host_for("r0")).stats.remote()
    assert (stats["objects"], stats["passivated"]) == (3, 37)
    # A client that would retry longer than the hosts keep ids is refused.
    with pytest.raises(ConfigError, match="too long for this service"):
        make_namespace(shards=1, namespace=name, deadline=31)


async def test_per_name_hosts_stay_within_the_cap_when_many_processes_create_them(
    make_namespace: NamespaceFactory,
) -> None:
    namespace = make_namespace(Placement.PER_NAME, max_actors_per_node=2, deadline=60)
    name = namespace.settings.namespace

    @ray.remote(num_cpus=0)
    def client(seed: int) -> list[int]:
        # Creations wait for room one at a time at the directory: a deadline for all of them.
        os.environ["COUNTERS_DEADLINE"] = "60"
        counters = Namespace.join(name)
        return [counters.get_by_name(f"p{seed}-{i}").blocking.increment() for i in range(4)]

    peak = 0
    calls = [client.remote(seed) for seed in range(3)]
    while True:
        done, _ = ray.wait(calls, num_returns=len(calls), timeout=0.05)
        peak = max(peak, len(live_per_name_hosts(name)))
        if len(done) == len(calls):
            break
    assert [ray.get(call) for call in calls] == [[1, 1, 1, 1]] * 3
    assert peak == 2  # the bound, reached and never passed
    for seed in range(3):
        for i in range(4):
            stub = namespace.get_by_name(f"p{seed}-{i}")
            assert await stub.get_counter_value() == 1


def live_per_name_hosts(namespace: str) -> list[str]:
    return [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == namespace and "/" in actor["name"]
    ]
