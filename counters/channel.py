"""The direct channel: batches from a client to a host on the same node, without a Ray call each.

Why. A Ray actor call costs the caller and the actor about a millisecond of CPU between them
(submission, serialization, the actor's task loop, task events); batches amortize it, but under
HTTP load it was still the largest share of the gateway's time after aiohttp's own (see
docs/benchmarks.md). A host therefore also serves batches over a Unix socket to clients on its
node. Everything else goes through Ray as before: finding and creating hosts, passivation, stats,
the blocking client, and every client on another node.

Theory of operation.

- Opening. A client asks the host, through Ray, for its `ChannelAddress`: the node, the socket's
  path and a random token. Only a caller that can reach the actor through Ray learns the token, and
  the socket sits in a directory only this user can enter.
- Protocol. The client sends the 32-byte token, then frames: a 4-byte big-endian length and a
  pickle. A request is a list of operations as plain tuples, its reply their `Results` as a
  plain pair (plain tuples pickle without a Python call per operation, NamedTuples not). The host
  answers one connection's requests in the order they came, so, as with Ray's calls from one
  caller, a client may pipeline a few batches and they run in the order sent.
- One writer. The host applies a channel's batch under the same lock as its Ray calls
  (`runtime.py`), and refuses every batch once it has decided to exit, so a host that passivates
  never writes after its successor may have started.
- Failure. When the connection breaks, every batch still waiting for its reply fails with
  OutcomeUnknown: it may or may not have been applied, and the caller resends it with the same
  operation ids, which the host applies once (`client.py`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import os
import pickle
import secrets
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ray import cloudpickle

from .errors import OutcomeUnknown
from .operations import Operation, Outcome, Results

__all__ = ["Channel", "ChannelAddress", "ChannelServer", "dumps"]

TOKEN_BYTES = 32
MAX_FRAME = 256 * 1024 * 1024  # a corrupt length must not make us allocate without bound
_LENGTH = struct.Struct("!I")
_DIR_PREFIX = "counters-channel-"
_STARTING = 60.0  # seconds a new socket dir may stay without a listener (see _remove_stale_dirs)

log = logging.getLogger(__name__)


class ChannelAddress(NamedTuple):
    """Where and how to reach a host's channel; handed out by the host through Ray."""

    node_id: str
    path: str
    token: bytes


def dumps(value: Any) -> bytes:
    """A frame: length and pickle. Plain pickle is fast; cloudpickle takes what it cannot."""
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        data = cloudpickle.dumps(value)  # type: ignore[no-untyped-call]
    return _LENGTH.pack(len(data)) + data


class ChannelServer:
    """The host's side: a listening Unix socket and a thread per connected client.

    `serve` runs one batch and returns its outcomes, or None to refuse it (the host is exiting):
    the connection is then closed unanswered, which the client reads as "maybe not applied".
    """

    def __init__(
        self,
        node_id: str,
        serve: Callable[[Sequence[Operation]], tuple[Outcome, ...] | None],
        parent: Path | None = None,
    ) -> None:
        self._serve = serve
        parent = parent or Path(tempfile.gettempdir())
        _remove_stale_dirs(parent)
        # mkdtemp makes it mode 0700: only this user reaches the socket.
        self._dir = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=parent))
        path = self._dir / "host.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(str(path))  # OSError for a path past the 107 bytes allowed
            self._listener.listen(64)
        except BaseException:
            self._listener.close()
            self._dir.rmdir()
            raise
        self.address = ChannelAddress(node_id, str(path), secrets.token_bytes(TOKEN_BYTES))
        self.batches = 0  # batches served, over all connections
        self._counting = threading.Lock()
        threading.Thread(target=self._accept, name="counters-channel", daemon=True).start()

    def close(self) -> None:
        """Stop accepting and remove the socket; open connections end with the process."""
        self._listener.close()
        with contextlib.suppress(OSError):
            (self._dir / "host.sock").unlink()
            self._dir.rmdir()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._serve_connection,
                args=(connection,),
                name="counters-channel-conn",
                daemon=True,
            ).start()

    def _serve_connection(self, connection: socket.socket) -> None:
        with connection:
            try:
                token = _receive(connection, TOKEN_BYTES)
                if token is None or not hmac.compare_digest(token, self.address.token):
                    return
                while True:
                    header = _receive(connection, _LENGTH.size)
                    if header is None:
                        return  # the client hung up
                    (size,) = _LENGTH.unpack(header)
                    body = _receive(connection, size) if size <= MAX_FRAME else None
                    if body is None:
                        return
                    outcomes = self._serve(pickle.loads(body))
                    if outcomes is None:
                        return  # refused: the host is exiting
                    with self._counting:  # connections run on threads of their own
                        self.batches += 1
                    connection.sendall(dumps(tuple(Results.of(outcomes))))
            except OSError:
                return  # the client is gone; what it sent is applied or not, it will retry
            except Exception:  # a broken frame: drop this client, keep the host
                log.exception("channel connection failed")


def _receive(connection: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None if the peer closed first."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = connection.recv_into(view[received:])
        if count == 0:
            return None
        received += count
    return bytes(buffer)


class Channel:
    """The client's side, on one event loop: send batches, get their outcomes in order.

    A bare non-blocking socket watched by the loop rather than an asyncio transport: a binding
    outlives the loops of scripts and tests, and a socket can be closed after its loop is gone.
    """

    def __init__(self, host: str, sock: socket.socket) -> None:
        self.host = host
        self.loop = asyncio.get_running_loop()
        self._sock = sock
        self._waiting: collections.deque[asyncio.Future[Results]] = collections.deque()
        self._received = bytearray()
        self._unsent = bytearray()  # what the socket did not take at once
        self._lost: str | None = None
        self.loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def open(cls, host: str, address: ChannelAddress) -> Channel:
        """Connect to the host at `address`; raises OSError if nobody listens there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, address.path)
            channel = cls(host, sock)
        except BaseException:
            sock.close()
            raise
        channel._write(address.token)
        return channel

    @property
    def is_open(self) -> bool:
        return self._lost is None

    def call(self, operations: Sequence[Operation]) -> asyncio.Future[Results]:
        """Send one batch; a future of its results, or of OutcomeUnknown if the link breaks."""
        future: asyncio.Future[Results] = self.loop.create_future()
        if self._lost is not None:
            future.set_exception(self._unknown())
            return future
        self._waiting.append(future)
        self._write(dumps([tuple(operation) for operation in operations]))
        return future

    def close(self) -> None:
        """Hang up; safe from any thread, and after the channel's loop has closed."""
        if self.loop.is_closed():
            self._sock.close()  # the loop's selector went with it: nothing watches the socket
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._fail("closed by the client")
        else:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.loop.call_soon_threadsafe(self._fail, "closed by the client")

    def _write(self, data: bytes) -> None:
        if not self._unsent:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as error:
                self._fail(f"{type(error).__name__}: {error}")
                return
            if sent == len(data):
                return
            data = data[sent:]
            self.loop.add_writer(self._sock.fileno(), self._on_writable)
        self._unsent += data

    def _on_writable(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except BlockingIOError:
            return
        except OSError as error:
            self._fail(f"{type(error).__name__}: {error}")
            return
        del self._unsent[:sent]
        if not self._unsent:
            self.loop.remove_writer(self._sock.fileno())

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError as error:
            self._fail(f"{type(error).__name__}: {error}")
            return
        if not data:
            self._fail("closed by the host")
            return
        self._received += data
        while len(self._received) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._received)
            end = _LENGTH.size + size
            if len(self._received) < end:
                return
            try:
                values, errors = pickle.loads(self._received[_LENGTH.size : end])
            except Exception as error:  # a reply we cannot read: as good as a broken link
                self._fail(f"unreadable reply: {error}")
                return
            del self._received[:end]
            if self._waiting:
                future = self._waiting.popleft()
                if not future.done():
                    future.set_result(Results(values, errors))

    def _fail(self, why: str) -> None:
        """The link is gone: close it, and fail what waits, which may or may not have run."""
        if self._lost is None:
            self._lost = why
            self.loop.remove_reader(self._sock.fileno())
            self.loop.remove_writer(self._sock.fileno())
            self._sock.close()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._unknown())

    def _unknown(self) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"the channel to host {self.host} broke during the call ({self._lost}), which may "
            "or may not have been applied"
        )


def _remove_stale_dirs(parent: Path) -> None:
    """Remove socket dirs that nobody listens in any more: their host died without `close`.

    Told by the socket, not by the pid in the dir's name: a host in another PID namespace that
    shares this temp dir has a pid we cannot see, and is alive all the same. A young dir is left
    alone, since its host may still be between creating it and listening in it.
    """
    for stale in parent.glob(f"{_DIR_PREFIX}*"):
        try:
            age = time.time() - stale.stat().st_mtime
        except OSError:
            continue  # removed meanwhile
        if age < _STARTING or _listened(stale / "host.sock"):
            continue
        with contextlib.suppress(OSError):
            for child in stale.iterdir():
                child.unlink()
            stale.rmdir()


def _listened(path: Path) -> bool:
    """Whether a process listens on the Unix socket at `path`; True when we cannot tell."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)  # a live host with a full backlog must not block us
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False  # a socket nobody listens on (or not a socket), or none at all
        except OSError:
            return True  # busy (EAGAIN), or not ours to reach (EACCES): leave it be
    return True  # the host sees a connection that sends no token and hangs up: harmless
