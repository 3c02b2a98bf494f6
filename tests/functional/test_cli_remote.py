"""The command line against the real gateway on a loopback port: `counters get`, `incr`,
`decr`, `set`, `delete`, `list` and `watch` run as a person or a script runs them
(``python -m counters ...``, a process each), their output and exit codes exact.

A TCP proxy of real sockets stands between a command and the gateway where the network must
fail: it loses an answer on its way back, cuts the connections, refuses new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from counters import CounterValue, Namespace
from counters.placement import Placement
from gateway import Gateway

from .conftest import GatewayTestServer, NamespaceFactory, gateway_server

Client = TestClient[Any, Any]
TOKEN = "cli-t0ken_0123456789"
WITHIN = 20.0  # seconds a command or an expected line may take on a loaded machine


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


def environment(**extra: str) -> dict[str, str]:
    """A user's shell: none of our variables inherited from the test run."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERS_")}
    return inherited | {"RAY_USAGE_STATS_ENABLED": "0"} | extra


# `python -m counters`, with Ctrl-C as a terminal delivers it: a test run started in the
# background of a shell without job control inherits SIGINT ignored, and so would the command.
COUNTERS = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from counters.cli import main; sys.exit(main())"
)


async def start(url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        COUNTERS,
        *args,
        *(["--url", url] if url else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment() if env is None else env,
    )


async def run(url: str, *args: str, env: dict[str, str] | None = None) -> Ran:
    """`counters ARGS --url URL` to its end (without blocking the gateway, on this loop)."""
    process = await start(url, *args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), WITHIN)
    assert "Traceback" not in err.decode(), err.decode()
    return Ran(process.returncode, out.decode(), err.decode())


@dataclass
class Served:
    url: str
    namespace: Namespace
    client: Client


@pytest.fixture
async def served(make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any]) -> Served:
    namespace = make_namespace(Placement.SHARDED)
    client: Client = await aiohttp_client(gateway_server(namespace))
    return Served(str(client.make_url("")).rstrip("/"), namespace, client)


async def test_changes_and_reads_print_exact_values(served: Served) -> None:
    url = served.url
    assert await run(url, "incr", "A") == Ran(0, "Durable Object 'A' count: 1\n", "")
    assert (await run(url, "incr", "A", "5")).out == "Durable Object 'A' count: 6\n"
    assert (await run(url, "decr", "A", "2")).out == "Durable Object 'A' count: 4\n"
    assert (await run(url, "decr", "A")).out == "Durable Object 'A' count: 3\n"
    assert (await run(url, "incr", "A", "-10")).out == "Durable Object 'A' count: -7\n"
    assert (await run(url, "set", "B", "-3")).out == "Durable Object 'B' count: -3\n"
    assert await run(url, "get", "A", "B", "never") == Ran(
        0,
        "NAME   COUNT  VERSION\n"
        "A         -7        5\n"
        "B         -3        1\n"
        "never      0        0\n",
        "",
    )
    assert (await run(url, "delete", "A")).out == "Durable Object 'A' count: 0\n"
    assert await served.namespace.get_by_name("A").get() == CounterValue("A", 0, 6)


async def test_json_is_one_object_a_line(served: Served) -> None:
    url = served.url
    incremented = await run(url, "incr", "J", "4", "--json")
    assert (incremented.code, json.loads(incremented.out)) == (
        0,
        {"name": "J", "count": 4, "version": 1},
    )
    replaced = json.loads((await run(url, "set", "J", "9", "--json")).out)
    assert replaced == {
        "name": "J",
        "count": 9,
        "version": 2,
        "previous": {"count": 4, "version": 1},
    }
    deleted = json.loads((await run(url, "delete", "J", "--json")).out)
    assert deleted == {
        "name": "J",
        "count": 0,
        "version": 3,
        "previous": {"count": 9, "version": 2},
    }
    read = await run(url, "get", "J", "K", "--json")
    assert [json.loads(line) for line in read.out.splitlines()] == [
        {"name": "J", "count": 0, "version": 3},
        {"name": "K", "count": 0, "version": 0},
    ]


async def test_bounds_and_versions_refuse_with_exit_1_and_the_gateways_message(
    served: Served,
) -> None:
    url = served.url
    await run(url, "set", "stock", "5")
    assert (await run(url, "decr", "stock", "3", "--min", "0")).out == (
        "Durable Object 'stock' count: 2\n"
    )
    refused = await run(url, "decr", "stock", "3", "--min", "0")
    assert (refused.code, refused.out) == (1, "")
    assert refused.err.startswith("counters: ")
    assert refused.err.endswith(" (409 out_of_bounds)\n")
    over = await run(url, "incr", "stock", "9", "--max", "10", "--json")
    assert over.code == 1
    error = json.loads(over.err)
    assert (error["status"], error["error"]) == (409, "out_of_bounds")
    assert error["idempotency_key"]
    stale = await run(url, "set", "stock", "100", "--if-version", "1")
    assert stale.code == 1
    assert "(412 version_mismatch)" in stale.err
    assert (await run(url, "incr", "stock", "--if-version", "2")).code == 0  # it is at 2
    assert await served.namespace.get_by_name("stock").get() == CounterValue("stock", 3, 3)


async def test_bad_input_is_400_and_bad_usage_is_2(served: Served) -> None:
    url = served.url
    too_long = await run(url, "incr", "x" * 1025)
    assert (too_long.code, too_long.out) == (1, "")
    assert "(400 invalid_name)" in too_long.err
    too_much = await run(url, "incr", "A", str(2**63))
    assert too_much.code == 1
    assert "(400 invalid_amount)" in too_much.err
    for usage in (["incr", "A", "five"], ["set", "A"], ["get"], ["list", "--page-size", "0"]):
        wrong = await run(url, *usage)
        assert (wrong.code, wrong.out) == (2, ""), usage
        assert "usage: counters" in wrong.err
    assert await served.namespace.get_by_name("A").get() == CounterValue(
        "A", 0, 0
    )  # nothing was changed


async def test_the_same_idempotency_key_is_applied_once(served: Served) -> None:
    url = served.url
    first = await run(url, "incr", "K", "5", "--idempotency-key", "my-key-1")
    again = await run(url, "incr", "K", "5", "--idempotency-key", "my-key-1")
    assert first.out == again.out == "Durable Object 'K' count: 5\n"
    reused = await run(url, "decr", "K", "--idempotency-key", "my-key-1")
    assert (reused.code, "(422 idempotency_key_reused)" in reused.err) == (1, True)
    assert await served.namespace.get_by_name("K").get() == CounterValue("K", 5, 1)


async def test_many_names_at_once(served: Served) -> None:
    await served.namespace.get_by_name("n1000").increment(7)
    names = [f"n{i}" for i in range(1001)]  # past the 1,000 names of one request
    read = await run(served.url, "get", *names)
    lines = read.out.splitlines()
    assert read.code == 0
    assert len(lines) == 1002
    assert lines[0] == "NAME   COUNT  VERSION"
    assert lines[1] == "n0         0        0"
    assert lines[-1] == "n1000      7        1"


async def test_list_follows_every_page(served: Served) -> None:
    stubs = served.namespace
    for i in range(7):
        await stubs.get_by_name(f"user:{i}").increment(i + 1)
    await stubs.get_by_name("user:gone").increment()
    await stubs.get_by_name("user:gone").delete()  # deleted: not listed
    await stubs.get_by_name("userx").increment()  # another prefix
    listed = await run(served.url, "list", "--prefix", "user:", "--page-size", "2")
    assert listed == Ran(
        0,
        "NAME    COUNT  VERSION\n" + "".join(f"user:{i}      {i + 1}        1\n" for i in range(7)),
        "",
    )
    as_json = await run(served.url, "list", "--prefix", "user:", "--page-size", "3", "--json")
    assert [json.loads(line) for line in as_json.out.splitlines()] == [
        {"name": f"user:{i}", "count": i + 1, "version": 1} for i in range(7)
    ]
    everything = await run(served.url, "list", "--json")
    assert [json.loads(line)["name"] for line in everything.out.splitlines()] == [
        *(f"user:{i}" for i in range(7)),
        "userx",
    ]
    assert await run(served.url, "list", "--prefix", "nobody") == Ran(0, "", "")


async def test_a_gateway_with_a_token(
    make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    namespace = make_namespace(Placement.SHARDED)
    server = GatewayTestServer(Gateway(namespace, auth_token=TOKEN).handle)
    client: Client = await aiohttp_client(server)
    url = str(client.make_url("")).rstrip("/")
    without = await run(url, "incr", "A")
    assert (without.code, without.out) == (1, "")
    assert "(401 unauthorized)" in without.err
    assert "--auth-token-file" in without.err
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    flag = await run(url, "incr", "A", "--auth-token-file", str(token))
    assert flag == Ran(0, "Durable Object 'A' count: 1\n", "")
    env = environment(COUNTERS_AUTH_TOKEN_FILE=str(token), COUNTERS_URL=url)
    assert await run("", "get", "A", env=env) == Ran(
        0, "NAME  COUNT  VERSION\nA         1        1\n", ""
    )
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    refused = await run(url, "get", "A", "--auth-token-file", str(wrong))
    assert (refused.code, refused.err) == (
        1,
        "counters: the gateway refused the token (401 unauthorized)\n",
    )
    missing = await run(url, "get", "A", "--auth-token-file", str(tmp_path / "missing"))
    assert missing.code == 2
    assert "cannot read it" in missing.err
    watch = await run(url, "watch", "A")  # a watch refused is an error, not a retry for ever
    assert watch.code == 1
    assert "(401 unauthorized)" in watch.err


class Proxy:
    """A TCP proxy on a loopback port in front of `upstream`, that fails as a network does:
    it loses answers on their way back (`lose`), cuts every connection (`cut`), and closes
    new ones at once while `refusing`. `sent` holds what each connection's client sent."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.lose = 0  # answers to lose: the connection closes instead
        self.refusing = False
        self.refused = 0  # connections closed at once while refusing
        self.sent: list[bytearray] = []
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        lose, self.lose = self.lose > 0, max(0, self.lose - 1)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        sent = bytearray()
        self.sent.append(sent)
        self._open |= {writer, up_writer}

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bytearray | None
        ) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    if record is not None:
                        record += data
                    if record is None and lose:
                        return  # the gateway answered: the client never hears it
                    sink.write(data)
                    await sink.drain()

        tasks = [
            asyncio.create_task(pipe(reader, up_writer, sent)),
            asyncio.create_task(pipe(up_reader, writer, None)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for each in (writer, up_writer):
                self._open.discard(each)
                each.transport.abort()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def proxy(served: Served) -> AsyncIterator[Proxy]:
    port = served.client.server.port
    assert port is not None
    proxy = Proxy(port)
    yield proxy
    await proxy.close()


def header(sent: bytearray, name: str) -> str | None:
    for line in bytes(sent).split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


async def test_a_change_whose_answer_is_lost_is_sent_again_and_applied_once(
    served: Served, proxy: Proxy
) -> None:
    url = await proxy.start()
    proxy.lose = 1
    assert await run(url, "incr", "A", "5") == Ran(0, "Durable Object 'A' count: 5\n", "")
    assert len(proxy.sent) == 2  # the first answer was lost, the second one arrived
    keys = [header(sent, "Idempotency-Key") for sent in proxy.sent]
    assert keys[0] is not None
    assert keys[0] == keys[1]
    assert await served.namespace.get_by_name("A").get() == CounterValue("A", 5, 1)  # applied once
    proxy.lose = 3  # every attempt: no answer at all
    lost = await run(url, "set", "A", "9")
    assert (lost.code, lost.out) == (3, "")
    key = header(proxy.sent[-1], "Idempotency-Key")
    assert lost.err == (
        f"counters: cannot reach {url}: the connection closed without an answer; the change "
        "may or may not have been applied: run the same command with --idempotency-key "
        f"{key} to apply it at most once\n"
    )
    assert await served.namespace.get_by_name("A").get() == CounterValue("A", 9, 2)  # it was, once
    again = await run(url, "set", "A", "9", "--idempotency-key", str(key))
    assert again.out == "Durable Object 'A' count: 9\n"
    assert await served.namespace.get_by_name("A").get() == CounterValue("A", 9, 2)  # not twice


async def readline(process: Any) -> str:
    line: bytes = await asyncio.wait_for(process.stdout.readline(), WITHIN)
    assert line, "the watch ended"
    return line.decode()


async def test_watch_prints_each_change_resumes_and_ends_on_ctrl_c(
    served: Served, proxy: Proxy
) -> None:
    url = await proxy.start()
    client = served.client
    await client.post("/increment?name=A&amount=3")
    watch = await start(url, "watch", "A", "B")
    try:
        first = {await readline(watch), await readline(watch)}  # each name now, either order
        assert first == {"A: 3 (version 1)\n", "B: 0 (version 0)\n"}
        await client.post("/increment?name=B&amount=4")
        assert await readline(watch) == "B: 4 (version 1)\n"
        await client.post("/decrement?name=A")
        assert await readline(watch) == "A: 2 (version 2)\n"
        # The connection drops; while it is down A changes three times and B not at all.
        proxy.refusing = True
        proxy.cut()
        while not proxy.refused:  # the watch has tried to come back, and failed
            await asyncio.sleep(0.05)
        for _ in range(3):
            await client.post("/increment?name=A")
        proxy.refusing = False
        # Resumed from where it was: only what changed, at its latest value.
        assert await readline(watch) == "A: 5 (version 5)\n"
        await client.post("/set?name=B&value=10")
        assert await readline(watch) == "B: 10 (version 2)\n"
        assert header(proxy.sent[-1], "Last-Event-ID") == "2,1"
        watch.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(watch.wait(), WITHIN) == 0
        assert await watch.stdout.read() == b""
        err = (await watch.stderr.read()).decode()
        assert err.startswith("counters: the stream broke ("), err
        assert err.endswith("); resuming\n"), err
        assert err.count("\n") == 1, err  # once, however many attempts it took
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()


async def test_watch_as_json_lines(served: Served) -> None:
    watch = await start(served.url, "watch", "W", "--json")
    try:
        assert json.loads(await readline(watch)) == {"name": "W", "count": 0, "version": 0}
        await served.client.post("/set?name=W&value=-2")
        assert json.loads(await readline(watch)) == {"name": "W", "count": -2, "version": 1}
        watch.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(watch.wait(), WITHIN) == 0
        assert await watch.stderr.read() == b""
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
