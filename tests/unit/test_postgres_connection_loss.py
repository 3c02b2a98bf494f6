"""A connection to PostgreSQL lost while a write runs: outcome unknown, resent, applied once.

Between the host and a real PostgreSQL server sits a real TCP relay on loopback, which can let a
write reach the server and then drop the connection before the answer comes back: the commit
happened, and the host cannot know it. The host must say so (OutcomeUnknown, never "not
applied"), and the same operations sent again must be answered, not applied a second time.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from counters.counter import Counter
from counters.errors import OutcomeUnknown, StorageDirInUse, StorageFailed
from counters.host import ObjectHost
from counters.operations import Operation
from counters.placement import Layout, Placement
from counters.storage import ServiceId
from counters.storage.postgres import PostgresStorage

LAYOUT = Layout("Counter", Placement.SHARDED, 1)


class Relay:
    """Relays TCP connections to `upstream`; told to, drops the next answer from the server."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.drop_next_answer = threading.Event()
        self.dropped = threading.Event()  # an answer was dropped, with its connection
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        armed = False  # the client has sent since we were told: its answer is dropped
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [])
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    armed = armed or self.drop_next_answer.is_set()
                    server.sendall(data)
                if server in readable:
                    data = server.recv(65536)
                    if not data:
                        return
                    if armed:
                        self.drop_next_answer.clear()
                        self.dropped.set()
                        return  # the server answered; the client never hears it
                    client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self._closing = True
        self.listener.close()


@pytest.fixture
def relayed_dsn(postgres_dsn: str) -> Iterator[tuple[str, Relay]]:
    parts = urlsplit(postgres_dsn)
    assert parts.hostname is not None
    assert parts.port is not None
    relay = Relay((parts.hostname, parts.port))
    netloc = f"{parts.username}@127.0.0.1:{relay.port}"
    yield urlunsplit(parts._replace(netloc=netloc)), relay
    relay.close()


def test_a_write_whose_answer_is_lost_is_outcome_unknown_and_applied_once(
    relayed_dsn: tuple[str, Relay], postgres_dsn: str
) -> None:
    dsn, relay = relayed_dsn
    host = ObjectHost(Counter, "Counter.shard-0-of-1", PostgresStorage(dsn), LAYOUT)
    try:
        # Both objects in memory: the batch's one query is then its write.
        warm = [Operation("A", "increment", (1,), "warm"), Operation("B", "get_counter_value")]
        assert [outcome.unwrap() for outcome in host.apply(warm)] == [1, 0]
        batch = [Operation("A", "increment", (1,), f"id-{i}") for i in range(10)]
        batch.append(Operation("B", "increment", (7,), "id-b"))
        relay.drop_next_answer.set()
        with pytest.raises(OutcomeUnknown, match="may or may not"):
            host.apply(batch)
        assert relay.dropped.is_set()
        # It was committed: the server says so through a connection of its own.
        with psycopg.connect(postgres_dsn) as db:
            stored = db.execute("SELECT count(*) FROM counters_applied WHERE op_id LIKE 'id-%'")
            assert stored.fetchone() == (11,)
        # The client sends the same batch again: every operation answered, none applied anew.
        answers = [outcome.unwrap() for outcome in host.apply(batch)]
        assert answers == [*range(2, 12), 7]
        assert host.call("A", "get_counter_value") == 11
        assert host.call("B", "get_counter_value") == 7
    finally:
        host.close()


def test_a_batch_that_cannot_reach_storage_leaves_nothing_in_memory(postgres_dsn: str) -> None:
    """The connection lost, and another service holding the database when the host connects
    again: the batch fails, and nothing of it is kept, to be stored later without its id."""
    storage = PostgresStorage(postgres_dsn)
    host = ObjectHost(Counter, "Counter.shard-0-of-1", storage, LAYOUT)
    try:
        assert host.call("A", "increment", 1, op_id="warm") == 1
        with psycopg.connect(postgres_dsn, autocommit=True) as db:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StorageFailed):  # a read finds the connection gone
            host.call("A", "get_counter_value")
        release = storage.hold(ServiceId("another", "another service"))
        try:
            with pytest.raises(StorageDirInUse):
                host.call("A", "increment", 10, op_id="n1")
        finally:
            release()
        assert host.call("A", "increment", 100, op_id="n2") == 101
        assert host.call("A", "increment", 10, op_id="n1") == 111  # its client sends it again
        assert host.call("A", "increment", 10, op_id="n1") == 111
    finally:
        host.close()
