"""The PostgreSQL backend: every host's data in one database, reachable from any node.

With it, host actors may run on any node of a Ray cluster, and a host restarted elsewhere finds
its counters where it left them. The contract is `interface.py`'s; here is how it is kept:

- Persisted before acknowledged: `write` returns after COMMIT. How durable a commit is, is the
  server's to say (``synchronous_commit``, a synchronous standby): its durability is the boundary.
- All or nothing: one transaction per `write`. An error before COMMIT rolls it back
  (StorageFailed; StorageFull for a full disk); a connection lost during COMMIT leaves the
  outcome unknown (OutcomeUnknown), and the client resends with the same operation ids. The next
  call connects again by itself, so the host recovers once the server is back.
- One writer, checked in every commit: a host takes its data over by raising its row's epoch in
  ``counters_hosts``; every writing transaction first reads that row ``FOR SHARE``, inside the
  transaction. A host that took over since we opened has a newer epoch there: we store nothing
  and raise Fenced. The row lock orders the two: a takeover waits for a commit that already
  holds the row, and a commit after the takeover sees the new epoch. (Orleans' ADO.NET storage
  and Temporal's shards do the same: the check lives in the write's own transaction, because a
  partitioned node's process can outlive what the cluster believes about it.)
- Numbered migrations, each in its own transaction, under an advisory lock so that hosts
  starting together migrate once.

psycopg 3, synchronous: a host runs one batch at a time on its own thread, so a blocking
connection is what it needs; psycopg pipelines `executemany`, so a batch of a thousand upserts
costs a few round trips, not a thousand.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Set
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..applied_log import AppliedOp
from ..errors import (
    Fenced,
    LayoutMismatch,
    OutcomeUnknown,
    StorageDirInUse,
    StorageFailed,
    StorageFull,
)
from ..placement import Layout, Placement
from .interface import Applied, Change, Oldest, Rows, ServiceId

__all__ = ["MIGRATIONS", "PostgresHostStore", "PostgresStorage", "redacted"]

# (version, SQL). Append only: a released step is never edited.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE counters_kv (
            object TEXT NOT NULL,
            key    TEXT NOT NULL,
            value  TEXT NOT NULL,
            PRIMARY KEY (object, key)
        );
        CREATE TABLE counters_applied (
            seq     BIGSERIAL PRIMARY KEY,
            host    TEXT NOT NULL,
            op_id   TEXT NOT NULL,
            object  TEXT NOT NULL,
            at      DOUBLE PRECISION NOT NULL,
            request TEXT NOT NULL,
            result  TEXT NOT NULL
        );
        CREATE UNIQUE INDEX counters_applied_by_id ON counters_applied (op_id, object);
        CREATE INDEX counters_applied_by_host ON counters_applied (host, seq);
        CREATE TABLE counters_hosts (
            name   TEXT PRIMARY KEY,
            epoch  BIGINT NOT NULL,
            writer TEXT NOT NULL
        );
        CREATE TABLE counters_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    ),
)

_MIGRATION_LOCK = 0x636F756E74657273  # "counters": one migration at a time per database
_SERVICE_LOCK = 0x636F756E74657274  # held shared by every host of the owning service
_EPOCH = "SELECT epoch FROM counters_hosts WHERE name = %s FOR SHARE"
_TAKE_OVER = (
    "INSERT INTO counters_hosts (name, epoch, writer) VALUES (%s, 1, %s) "
    "ON CONFLICT (name) DO UPDATE SET epoch = counters_hosts.epoch + 1, writer = excluded.writer "
    "RETURNING epoch"
)
# A batch's rows go as arrays, one statement each: psycopg adapts an array in C, where a row
# at a time costs Python work per row (measured: 2.0 ms for a batch of 32 ids by executemany).
_UPSERT = (
    "INSERT INTO counters_kv (object, key, value) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) "
    "ON CONFLICT (object, key) DO UPDATE SET value = excluded.value"
)
_DELETE = (
    "DELETE FROM counters_kv WHERE (object, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
)
_RECORD = (
    "INSERT INTO counters_applied (host, op_id, object, at, request, result) "
    "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[], %s::text[])"
)
_OLDEST = "SELECT seq, at FROM counters_applied WHERE host = %s ORDER BY seq LIMIT 1"
# Among this host's oldest `count` ids, the first recorded at or after a time.
_FIRST_SINCE = (
    "SELECT seq, at FROM (SELECT seq, at FROM counters_applied WHERE host = %s "
    "ORDER BY seq LIMIT %s) oldest WHERE at >= %s ORDER BY seq LIMIT 1"
)
_LAST_OF = (
    "SELECT max(seq) FROM (SELECT seq FROM counters_applied WHERE host = %s "
    "ORDER BY seq LIMIT %s) oldest"
)


def redacted(dsn: str) -> str:
    """`dsn` without its password: what logs, errors and the service record may show."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "a PostgreSQL database (unreadable address)"
    parts.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **{k: str(v) for k, v in parts.items()})


class PostgresStorage:
    """The PostgreSQL backend (`interface.Storage`): a database address."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def open_host(self, host: str, layout: Layout, service: ServiceId) -> PostgresHostStore:
        db = _connect(self.dsn)
        try:
            _migrate(db)
            _bind_layout(db, layout)
            _claim(db, service)
            writer = f"pid {os.getpid()} on {socket.gethostname()}, {service.description}"
            return PostgresHostStore(self.dsn, db, host, writer, service)
        except BaseException:
            db.close()
            raise

    def recorded_shards(self, class_name: str) -> int | None:
        try:
            with _connect(self.dsn) as db:
                recorded = _recorded_layout(db)
        except (StorageFailed, psycopg.Error):
            return None
        if recorded is None or recorded.get("class_name") != class_name:
            return None
        shards = recorded.get("shards")
        sharded = recorded.get("placement") == Placement.SHARDED.value
        return shards if sharded and isinstance(shards, int) else None

    def hold(self, service: ServiceId) -> Callable[[], None]:
        db = _connect(self.dsn)
        try:
            _migrate(db)
            _claim(db, service)
        except BaseException:
            db.close()
            raise
        return db.close

    def refuse_if_in_use(self, service: ServiceId) -> None:
        with _connect(self.dsn) as db:
            _migrate(db)
            owner = _owner(db)
            if owner is None or owner.id == service.id:
                return
            (free,) = _one(db, "SELECT pg_try_advisory_lock(%s)", (_SERVICE_LOCK,))
            if not free:
                raise StorageDirInUse(_in_use_message(self, owner))

    def describe(self) -> str:
        return f"PostgreSQL database {redacted(self.dsn)}"


class PostgresHostStore:
    """One host's data in the database (`interface.HostStore`); see the module's contract."""

    def __init__(
        self,
        dsn: str,
        db: psycopg.Connection[Any],
        host: str,
        writer: str,
        service: ServiceId,
    ) -> None:
        self._dsn = dsn
        self._service = service
        self._db: psycopg.Connection[Any] | None = db
        self._host = host
        self._remembered: int | None = None
        self._oldest_at: float | None = None  # as in sqlite.py: inf when none
        with self._failing("take over"), db.transaction():
            (epoch,) = _one(db, _TAKE_OVER, (host, writer))
        self.epoch = str(epoch)

    def load(self, object_name: str) -> dict[str, str]:
        with self._failing("read"):
            rows = self._connection().execute(
                "SELECT key, value FROM counters_kv WHERE object = %s", (object_name,)
            )
            return {key: value for key, value in rows}

    def find_applied(self, wanted: Set[tuple[str, str]]) -> dict[tuple[str, str], AppliedOp]:
        if not wanted:
            return {}
        ids = list({op_id for _, op_id in wanted})
        found: dict[tuple[str, str], AppliedOp] = {}
        with self._failing("read"):
            rows = self._connection().execute(
                "SELECT op_id, object, at, request, result FROM counters_applied "
                "WHERE op_id = ANY(%s)",
                (ids,),
            )
            for op_id, name, *rest in rows:
                if (name, op_id) in wanted:
                    found[name, op_id] = AppliedOp(*rest)
        return found

    def applied_count(self) -> int:
        if self._remembered is None:
            with self._failing("read"):
                (count,) = _one(
                    self._connection(),
                    "SELECT count(*) FROM counters_applied WHERE host = %s",
                    (self._host,),
                )
            self._remembered = int(count)
        return self._remembered

    def write(
        self,
        changes: Iterable[Change],
        applied: Iterable[Applied] = (),
        forget_oldest: Oldest | None = None,
    ) -> None:
        upserts, deletes, records = rows = Rows.of(changes, applied)
        if rows.nothing(forget_oldest):
            return
        with self._owned_transaction("write", ", nothing of it was stored") as db:
            if upserts:
                db.execute(_UPSERT, _columns(upserts))
            if deletes:
                db.execute(_DELETE, _columns(deletes))
            if records:
                db.execute(_RECORD, (self._host, *_columns(records)))
            forgotten = 0 if forget_oldest is None else self._forget_oldest(db, *forget_oldest)
        self._count(len(records) - forgotten)
        if records and self._oldest_at == math.inf:
            self._oldest_at = None

    def forget_applied_before(self, at: float) -> int:
        with self._owned_transaction("sweep") as db:
            forgotten = self._forget_oldest(db, self.applied_count(), at)
        self._count(-forgotten)
        return forgotten

    def check_owner(self) -> None:
        with self._failing("read"):
            row = (
                self._connection()
                .execute("SELECT epoch FROM counters_hosts WHERE name = %s", (self._host,))
                .fetchone()
            )
        if row is None or str(row[0]) != self.epoch:
            raise self._fenced(row)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _count(self, change: int) -> None:
        if self._remembered is not None:
            self._remembered = max(0, self._remembered + change)

    def _forget_oldest(self, db: psycopg.Connection[Any], count: int, before: float) -> int:
        if count <= 0:
            return 0
        if self._oldest_at is None:
            oldest = db.execute(_OLDEST, (self._host,)).fetchone()
            self._oldest_at = math.inf if oldest is None else oldest[1]
        if self._oldest_at >= before:
            return 0  # nothing old enough, and no query spent finding out
        young = db.execute(_FIRST_SINCE, (self._host, count, before)).fetchone()
        if young is not None:
            end = young[0]
        else:
            (last,) = _one(db, _LAST_OF, (self._host, count))
            end = (last or 0) + 1
        self._oldest_at = None
        deleted = db.execute(
            "DELETE FROM counters_applied WHERE host = %s AND seq < %s", (self._host, end)
        )
        return deleted.rowcount

    def _connection(self) -> psycopg.Connection[Any]:
        """The connection, made again if it was lost: ownership of the host's data stays with
        the epoch, and the service's claim, which went with the old connection, is taken again
        (StorageDirInUse if another service took the database meanwhile)."""
        if self._db is None or self._db.closed or self._db.broken:
            if self._db is not None:
                self._db.close()
            self._db = None
            db = _connect(self._dsn)
            try:
                _claim(db, self._service)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    @contextmanager
    def _owned_transaction(
        self, doing: str, consequence: str = ""
    ) -> Iterator[psycopg.Connection[Any]]:
        """One transaction that commits only if the data is still ours, else Fenced."""
        with self._failing(doing, consequence):
            db = self._connection()
            committing = False
            try:
                with db.transaction():
                    row = db.execute(_EPOCH, (self._host,)).fetchone()
                    if row is None or str(row[0]) != self.epoch:
                        raise self._fenced(row)
                    yield db
                    committing = True  # leaving the block commits
            except psycopg.OperationalError as error:
                if committing and db.broken:
                    raise OutcomeUnknown(
                        f"the connection to {redacted(self._dsn)} broke while committing, which "
                        f"may or may not have stored the call: {error}"
                    ) from None
                raise

    def _fenced(self, row: Any) -> Fenced:
        epoch = "none" if row is None else row[0]
        return Fenced(
            f"host {self._host}'s data in {redacted(self._dsn)} was taken over by a newer "
            f"writer (epoch {epoch}, ours {self.epoch}); nothing of this call was stored"
        )

    @contextmanager
    def _failing(self, doing: str, consequence: str = "") -> Iterator[None]:
        with _translated(f"cannot {doing} {redacted(self._dsn)}{consequence}"):
            yield


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """psycopg's errors as the StorageFailed every caller handles (StorageFull if full)."""
    try:
        yield
    except psycopg.Error as error:
        full = isinstance(error, pg_errors.DiskFull | pg_errors.OutOfMemory)
        kind = StorageFull if full else StorageFailed
        raise kind(f"{what}: {str(error).strip()}") from None


def _connect(dsn: str) -> psycopg.Connection[Any]:
    with _translated(f"cannot connect to PostgreSQL at {redacted(dsn)}"):
        # Every query here has an index made for it. A table that grew faster than autovacuum
        # analyzes it looks small to the planner, which then scans it whole (a batch's id
        # look-up took 2 ms at ten thousand ids, and grows with the table): never scan.
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=5, options="-c enable_seqscan=off"
        )


def _columns(rows: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Rows as one list per column: the arrays `unnest` takes."""
    return tuple(list(column) for column in zip(*rows, strict=True))


def _one(db: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def _migrate(db: psycopg.Connection[Any]) -> None:
    with _translated("cannot migrate the database"):
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute(
                "CREATE TABLE IF NOT EXISTS counters_schema_version ("
                "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
        for version, sql in MIGRATIONS:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                done = db.execute(
                    "SELECT 1 FROM counters_schema_version WHERE version = %s", (version,)
                ).fetchone()
                if done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT INTO counters_schema_version (version, applied_at) VALUES (%s, %s)",
                    (version, datetime.now(timezone.utc).isoformat()),
                )


def _recorded_layout(db: psycopg.Connection[Any]) -> dict[str, Any] | None:
    exists = db.execute("SELECT to_regclass('counters_meta')").fetchone()
    if exists is None or exists[0] is None:
        return None
    row = db.execute("SELECT value FROM counters_meta WHERE key = 'layout'").fetchone()
    return None if row is None else dict(json.loads(row[0]))


def _bind_layout(db: psycopg.Connection[Any], layout: Layout) -> None:
    wanted = {
        "class_name": layout.class_name,
        "placement": layout.placement.value,
        "shards": layout.shards if layout.placement is Placement.SHARDED else None,
    }
    with _translated("cannot bind the layout"):
        db.execute(
            "INSERT INTO counters_meta (key, value) VALUES ('layout', %s) "
            "ON CONFLICT (key) DO NOTHING",
            (json.dumps(wanted),),
        )
        recorded = _recorded_layout(db)
    if recorded != wanted:
        raise LayoutMismatch(
            f"the database holds data laid out as {recorded}, but this service is configured "
            f"as {wanted}; use the same placement and shard count, or another database"
        )


def _owner(db: psycopg.Connection[Any]) -> ServiceId | None:
    row = db.execute("SELECT value FROM counters_meta WHERE key = 'owner'").fetchone()
    if row is None:
        return None
    recorded = json.loads(row[0])
    return ServiceId(recorded["id"], recorded["description"])


def _claim(db: psycopg.Connection[Any], service: ServiceId, wait: float = 1.0) -> None:
    """Hold the database for `service` for as long as this connection lives.

    As the SQLite dir's owner lock, with PostgreSQL's advisory locks, which the server drops
    with the connection: every host holds the lock shared; the owner recorded may change only
    while nobody holds it. Hosts of one service starting together may race for that moment;
    the losers find the winner's record, which is theirs too.
    """
    give_up = time.monotonic() + wait
    with _translated("cannot claim the database"):
        while True:
            db.execute("SELECT pg_advisory_lock_shared(%s)", (_SERVICE_LOCK,))
            owner = _owner(db)
            if owner is not None and owner.id == service.id:
                return
            db.execute("SELECT pg_advisory_unlock_shared(%s)", (_SERVICE_LOCK,))
            (free,) = _one(db, "SELECT pg_try_advisory_lock(%s)", (_SERVICE_LOCK,))
            if free:
                try:
                    db.execute(
                        "INSERT INTO counters_meta (key, value) VALUES ('owner', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (json.dumps(service._asdict()),),
                    )
                finally:
                    db.execute("SELECT pg_advisory_unlock(%s)", (_SERVICE_LOCK,))
                continue  # back to shared, and check again that it is still ours
            if time.monotonic() >= give_up:
                storage = PostgresStorage(db.info.dsn)
                raise StorageDirInUse(_in_use_message(storage, owner or ServiceId("", "?")))
            time.sleep(random.uniform(0.005, 0.02))


def _in_use_message(storage: PostgresStorage, owner: ServiceId) -> str:
    return (
        f"{storage.describe()} is in use by {owner.description}; two services on one database "
        "would fence each other's hosts without end. Stop that service, join it (same Ray "
        "address and namespace), or use another database"
    )
