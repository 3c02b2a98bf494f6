"""The direct channel without Ray: a real host, real Unix sockets, a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from counters.channel import Channel, ChannelAddress, ChannelServer
from counters.counter import Counter
from counters.errors import InvalidAmount, InvalidName, OutcomeUnknown
from counters.group_commit import GroupCommit
from counters.host import ObjectHost
from counters.operations import Operation, Outcome, Results
from counters.placement import Layout, Placement

LAYOUT = Layout("Counter", Placement.SHARDED, 1)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder of our own under /tmp: a Unix socket's path may not pass 107 bytes, which a
    socket in pytest's `tmp_path` can (under pytest-xdist, its paths are longer)."""
    folder = Path(tempfile.mkdtemp(prefix="channel-test-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Served:
    """A host behind a channel server, as `runtime.py` wires them, with a switch to refuse."""

    def __init__(self, short_tmp: Path) -> None:
        self.storage_dir = str(short_tmp / "storage")
        self.host = ObjectHost(Counter, "Counter.shard-0-of-1", self.storage_dir, LAYOUT)
        self.lock = threading.RLock()
        self.refusing = False
        self.group = GroupCommit(self.host.apply, self.lock, lambda: self.refusing)
        self.server = ChannelServer("node-1", self.serve, parent=short_tmp)

    def serve(self, operations: Sequence[Operation]) -> tuple[Outcome, ...] | None:
        return self.group.apply(operations, refusable=True)

    def value(self, name: str) -> int:
        with self.lock:
            value: int = self.host.call(name, "get_counter_value")
            return value


@pytest.fixture
def served(short_tmp: Path) -> Iterator[Served]:
    served = Served(short_tmp)
    yield served
    served.server.close()


def increments(name: str, count: int, prefix: str = "op") -> tuple[Operation, ...]:
    return tuple(Operation(name, "increment", (1,), f"{prefix}-{i}") for i in range(count))


async def test_pipelined_batches_are_answered_in_order_and_on_disk(served: Served) -> None:
    channel = await Channel.open("h", served.server.address)
    batches = [increments("A", 3, prefix=f"b{i}") for i in range(5)]
    answers = await asyncio.gather(*(channel.call(batch) for batch in batches))
    assert [value for results in answers for value in results.values] == list(range(1, 16))
    assert all(results.errors == {} for results in answers)
    assert served.server.batches == 5
    channel.close()
    served.host.close()
    reloaded = ObjectHost(Counter, "Counter.shard-0-of-1", served.storage_dir, LAYOUT)
    assert reloaded.call("A", "get_counter_value") == 15


async def test_a_batch_larger_than_the_socket_buffer_goes_through(served: Served) -> None:
    channel = await Channel.open("h", served.server.address)
    # Tens of megabytes of names: the socket takes it in pieces, both ways.
    batch = tuple(
        Operation(f"n{i}-" + "x" * 900, "increment", (1,), f"id{i}") for i in range(30_000)
    )
    outcomes = await channel.call(batch)
    assert outcomes == Results([1] * len(batch), {})
    channel.close()


async def test_a_resent_batch_is_answered_without_a_second_effect(served: Served) -> None:
    channel = await Channel.open("h", served.server.address)
    batch = increments("A", 2)
    first = await channel.call(batch)
    again = await channel.call(batch)
    assert first == again == Results([1, 2], {})
    assert served.value("A") == 2
    channel.close()


async def test_a_wrong_token_is_hung_up_on(served: Served) -> None:
    address = served.server.address._replace(token=b"x" * len(served.server.address.token))
    channel = await Channel.open("h", address)
    with pytest.raises(OutcomeUnknown, match="may or may not have been applied"):
        await channel.call(increments("A", 1))
    assert served.value("A") == 0
    assert not channel.is_open


async def test_a_host_that_is_exiting_refuses_and_applies_nothing(served: Served) -> None:
    channel = await Channel.open("h", served.server.address)
    served.refusing = True
    with pytest.raises(OutcomeUnknown):
        await channel.call(increments("A", 1))
    with pytest.raises(OutcomeUnknown):  # a broken channel stays broken: open a new one
        await channel.call(increments("A", 1))
    served.refusing = False
    assert served.value("A") == 0


async def test_errors_come_back_by_position_and_fail_alone(served: Served) -> None:
    channel = await Channel.open("h", served.server.address)
    batch = (
        Operation("A", "increment", (1,), "a"),
        Operation("A", "increment", ("x",), "b"),
        Operation("", "increment", (1,), "c"),
        Operation("A", "increment", (2,), "d"),
    )
    results = await channel.call(batch)
    assert results.values == [1, None, None, 3]
    assert {i: type(error) for i, error in results.errors.items()} == {
        1: InvalidAmount,
        2: InvalidName,
    }
    channel.close()


async def test_nobody_listening_is_an_os_error(short_tmp: Path) -> None:
    address = ChannelAddress("node-1", str(short_tmp / "nobody.sock"), b"t" * 32)
    with pytest.raises(FileNotFoundError):
        await Channel.open("h", address)


def test_closing_after_the_loop_is_gone_leaves_no_socket_open(served: Served) -> None:
    async def use() -> Channel:
        channel = await Channel.open("h", served.server.address)
        assert (await channel.call(increments("A", 1))).values == [1]
        return channel

    channel = asyncio.run(use())
    channel.close()  # filterwarnings=error: an unclosed socket would fail this test
    assert channel._sock.fileno() == -1


def bound_socket_dir(parent: Path, name: str) -> tuple[Path, socket.socket]:
    """A socket dir as a host makes it, its socket bound but not yet listening."""
    directory = parent / name
    directory.mkdir(mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(directory / "host.sock"))
    return directory, sock


def test_socket_dirs_nobody_listens_in_are_removed_whatever_their_pid(short_tmp: Path) -> None:
    # A live host in another PID namespace that shares the temp dir: a pid we do not see.
    foreign, listener = bound_socket_dir(short_tmp, "counters-channel-999999999-abc")
    listener.listen()
    # A killed host leaves its socket file, which nobody listens on; the pid in the name may
    # well be a live process's again (here: ours).
    dead, killed = bound_socket_dir(short_tmp, f"counters-channel-{os.getpid()}-def")
    killed.close()
    empty = short_tmp / "counters-channel-999999998-ghi"  # killed before it bound its socket
    empty.mkdir()
    an_hour_ago = time.time() - 3600
    for directory in (foreign, dead, empty):
        os.utime(directory, (an_hour_ago, an_hour_ago))
    starting = short_tmp / "counters-channel-999999997-jkl"  # a host about to bind and listen
    starting.mkdir()
    try:
        server = ChannelServer("node-1", lambda operations: None, parent=short_tmp)
        server.close()
        assert (foreign / "host.sock").is_socket()
        assert starting.exists()
        assert not dead.exists()
        assert not empty.exists()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(foreign / "host.sock"))  # still reachable
    finally:
        listener.close()


def test_a_socket_dir_is_private_and_removed_on_close(short_tmp: Path) -> None:
    server = ChannelServer("node-1", lambda operations: None, parent=short_tmp)
    assert Path(server.address.path).is_socket()
    assert oct(Path(server.address.path).parent.stat().st_mode & 0o777) == "0o700"
    server.close()
    assert not Path(server.address.path).parent.exists()


def test_a_socket_path_too_long_is_an_os_error_that_leaves_nothing_open(short_tmp: Path) -> None:
    deep = short_tmp / ("d" * 100)
    deep.mkdir()
    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="too long"):
        ChannelServer("node-1", lambda operations: None, parent=deep)
    assert len(os.listdir("/proc/self/fd")) == open_before  # the listening socket was closed
    assert list(deep.iterdir()) == []  # and its folder removed
