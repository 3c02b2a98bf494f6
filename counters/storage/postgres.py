"""The PostgreSQL backend: every host's data in one database, reachable from any node.

With it, host actors may run on any node of a Ray cluster, and a host restarted elsewhere finds
its counters where it left them. The contract is `interface.py`'s; here is how it is kept:

- Persisted before acknowledged: `write` returns after COMMIT. How durable a commit is, is the
  server's to say (``synchronous_commit``, a synchronous standby): its durability is the boundary.
- All or nothing: a `write` is one statement, which the server runs as one transaction: its
  rows, its ids and the ids it forgets, as data-modifying CTEs (one round trip, where a
  BEGIN ... COMMIT of separate statements took five). An error rolls all of it back
  (StorageFailed; StorageFull for a full disk); a connection lost while the statement ran leaves
  the outcome unknown (OutcomeUnknown), and the client resends with the same operation ids. The
  next call connects again by itself, so the host recovers once the server is back.
- One writer, checked in every commit: a host takes its data over by raising its row's epoch in
  ``counters_hosts``; every write's statement first locks that row ``FOR SHARE`` where the epoch
  is still ours, and each of its changes is made only if that row was found. A host that took
  over since we opened has a newer epoch there: we store nothing and raise Fenced. The row lock
  orders the two: a takeover waits for a commit that already holds the row, and a commit after
  the takeover finds the new epoch (PostgreSQL checks a locked row's condition again once the
  lock is granted). (Orleans' ADO.NET storage and Temporal's shards do the same: the check lives
  in the write's own transaction, because a partitioned node's process can outlive what the
  cluster believes about it.)
- Numbered migrations, each in its own transaction, under an advisory lock so that hosts
  starting together migrate once.

psycopg 3, synchronous: a host runs one batch at a time on its own thread, so a blocking
connection is what it needs, and it costs no event loop in the host. A batch's rows travel as
one JSON parameter, which the server unpacks: Python's json is C, where psycopg quotes the
elements of a text array one by one in Python (measured: 76 against 273 microseconds of the
host's CPU for a statement of 64 records). The server reads it as jsonb, parsed once, where
json's `->>` parses each element again for every column taken from it (a tenth of the server's
time per commit). jsonb holds at most 256 MiB: a batch whose rows add up to more fails whole
with StorageFailed (a counter's rows are a few dozen bytes; the direct channel's frames have
the same bound).
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Set
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
from .interface import (
    SCAN_BATCH,
    Applied,
    Change,
    IdsAlreadyRecorded,
    Oldest,
    Row,
    Rows,
    ServiceId,
    StoredObject,
    merged_objects,
    objects_of,
    scan_rows,
)

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
    (
        2,
        # Listing walks names in code point order, whatever the database's collation: the
        # primary key's own order, so no second index costs every new counter an insert.
        """
        ALTER TABLE counters_kv ALTER COLUMN object TYPE TEXT COLLATE "C",
            ALTER COLUMN key TYPE TEXT COLLATE "C";
        """,
    ),
)

_MIGRATION_LOCK = 0x636F756E74657273  # "counters": one migration at a time per database
_SERVICE_LOCK = 0x636F756E74657274  # held shared by every host of the owning service
_TAKE_OVER = (
    "INSERT INTO counters_hosts (name, epoch, writer) VALUES (%s, 1, %s) "
    "ON CONFLICT (name) DO UPDATE SET epoch = counters_hosts.epoch + 1, writer = excluded.writer "
    "RETURNING epoch"
)
# A write is one statement: the owner row locked if the epoch is still ours, and every change
# made only if it was (`_PARTS`, those the write needs); it answers whether it was. Rows come
# as JSON arrays of columns in order.
_OWNED = "WITH owner AS (SELECT FROM counters_hosts WHERE name = %s AND epoch = %s FOR SHARE)"
_PARTS = {
    "upsert": (
        "upserted AS (INSERT INTO counters_kv (object, key, value) "
        "SELECT r->>0, r->>1, r->>2 FROM jsonb_array_elements(%s::jsonb) r "
        "WHERE EXISTS (SELECT FROM owner) "
        "ON CONFLICT (object, key) DO UPDATE SET value = excluded.value)"
    ),
    # Index look-ups only, whatever the plan cached for the prepared statement (see _FIND):
    # the keys' two columns as arrays bound the scan, and the pairs then pick exactly.
    "delete": (
        "gone AS (SELECT r->>0 AS object, r->>1 AS key FROM jsonb_array_elements(%s::jsonb) r), "
        "deleted AS (DELETE FROM counters_kv WHERE EXISTS (SELECT FROM owner) "
        "AND object = ANY (ARRAY(SELECT object FROM gone)) "
        "AND key = ANY (ARRAY(SELECT key FROM gone)) "
        "AND (object, key) IN (SELECT object, key FROM gone))"
    ),
    "record": (
        "recorded AS (INSERT INTO counters_applied (host, op_id, object, at, request, result) "
        "SELECT %s, r->>0, r->>1, (r->>2)::float8, r->>3, r->>4 "
        "FROM jsonb_array_elements(%s::jsonb) r WHERE EXISTS (SELECT FROM owner))"
    ),
    # Of this host's oldest `count` ids, those before the first recorded at or after a time:
    # oldest first, so a clock that stepped back stops the forgetting early (more kept).
    "forget": (
        "forgotten AS (DELETE FROM counters_applied WHERE EXISTS (SELECT FROM owner) "
        "AND seq = ANY (ARRAY(SELECT seq FROM (SELECT seq, bool_or(at >= %s) OVER (ORDER BY seq) "
        "AS stop FROM (SELECT seq, at FROM counters_applied WHERE host = %s "
        "ORDER BY host, seq LIMIT %s) oldest) marked WHERE NOT stop)) RETURNING 1)"
    ),
}
# One index look-up per id, whatever the table's size: the LIMIT keeps the planner from making
# the LATERAL a join, whose plan, cached for the prepared statement while the table was small,
# walked the whole index (7 ms per batch at 60,000 ids, growing with them).
_FIND = (
    "SELECT a.op_id, a.object, a.at, a.request, a.result "
    "FROM jsonb_array_elements(%s::jsonb) w, LATERAL (SELECT * FROM counters_applied "
    "WHERE op_id = w->>0 AND object = w->>1 LIMIT 1) a"
)
# ORDER BY host too: the index on (host, seq) then serves it, never a walk of the whole table's
# seq order past other hosts' ids.
_OLDEST = "SELECT at FROM counters_applied WHERE host = %s ORDER BY host, seq LIMIT 1"


# Names in code point order (COLLATE "C"), as Python and SQLite order them.
_FIRST_ROWS = (
    'SELECT object, key, value FROM counters_kv WHERE object COLLATE "C" > %s '
    'AND object COLLATE "C" >= %s ORDER BY object COLLATE "C", key COLLATE "C" '
    f"LIMIT {SCAN_BATCH}"
)
_NEXT_ROWS = (
    'SELECT object, key, value FROM counters_kv WHERE (object COLLATE "C", key COLLATE "C") '
    '> (%s, %s) ORDER BY object COLLATE "C", key COLLATE "C" '
    f"LIMIT {SCAN_BATCH}"
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

    def scan(self, prefix: str, after: str) -> Generator[tuple[str, dict[str, str]]]:
        """Every host's objects are rows of one table: one index walk, a batch per query."""
        with _connect(self.dsn) as db:

            def fetch(position: tuple[str, str] | None) -> list[Row]:
                with _translated("cannot read"):
                    if position is None:
                        if _recorded_layout(db) is None:
                            return []  # no host has opened this database yet: no tables
                        return db.execute(_FIRST_ROWS, (after, prefix)).fetchall()
                    return db.execute(_NEXT_ROWS, position).fetchall()

            yield from objects_of(scan_rows(fetch, prefix))

    def clear(self) -> None:
        with _connect(self.dsn) as db, _translated("cannot clear"), db.transaction():
            if _recorded_layout(db) is None:
                return  # no tables: nothing stored
            db.execute("DELETE FROM counters_kv")
            db.execute("DELETE FROM counters_applied")
            db.execute("DELETE FROM counters_meta WHERE key = 'layout'")

    def snapshot(self) -> Generator[StoredObject]:
        """One repeatable-read transaction (`interface.Storage.snapshot`): every host's data
        as of one moment, read by server-side cursors a batch at a time."""
        with _connect(self.dsn) as db:
            db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            db.read_only = True
            with _translated("cannot read"), db.transaction():
                if _recorded_layout(db) is None:
                    return  # no host has opened this database yet: no tables
                with (
                    db.cursor(name="counters_snapshot_kv") as rows,
                    db.cursor(name="counters_snapshot_ids") as ids,
                ):
                    rows.execute("SELECT object, key, value FROM counters_kv ORDER BY object, key")
                    ids.execute(
                        "SELECT object, op_id, at, request, result FROM counters_applied "
                        'ORDER BY object COLLATE "C", seq'
                    )
                    yield from merged_objects(iter(rows), iter(ids))


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
        self._where = redacted(dsn)
        self._remembered: int | None = None
        with self._failing("take over"), db.transaction():
            (epoch,) = _one(db, _TAKE_OVER, (host, writer))
            oldest = db.execute(_OLDEST, (host,)).fetchone()
        self.epoch = str(epoch)
        self._epoch = int(epoch)
        # No id recorded before this time is left: a commit tries to forget ids only once
        # they may be old enough, and so, most of the time, spends nothing on it.
        self._oldest_at: float = math.inf if oldest is None else oldest[0]

    def load(self, object_name: str) -> dict[str, str]:
        with self._failing("read"):
            rows = self._connection().execute(
                "SELECT key, value FROM counters_kv WHERE object = %s", (object_name,)
            )
            return {key: value for key, value in rows}

    def find_applied(self, wanted: Set[tuple[str, str]]) -> dict[tuple[str, str], AppliedOp]:
        if not wanted:
            return {}
        pairs = _json([(op_id, name) for name, op_id in wanted])
        with self._failing("read"):
            rows = self._connection().execute(_FIND, (pairs,))
            return {(name, op_id): AppliedOp(*rest) for op_id, name, *rest in rows}

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
        forgotten = self._commit(upserts, deletes, records, forget_oldest)
        self._count(len(records) - forgotten)
        if records and self._oldest_at == math.inf:
            self._oldest_at = min(at for _, _, at, _, _ in records)

    def forget_applied_before(self, at: float) -> int:
        forgotten = self._commit([], [], [], (self.applied_count(), at))
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

    def _commit(
        self,
        upserts: list[tuple[str, str, str]],
        deletes: list[tuple[str, str]],
        records: list[tuple[str, str, float, str, str]],
        forget_oldest: Oldest | None,
    ) -> int:
        """Store the rows in one statement if we still own the data, else Fenced; how many ids
        it forgot."""
        sql, params = [_OWNED], [self._host, self._epoch]
        if upserts:
            sql.append(_PARTS["upsert"])
            params.append(_json(upserts))
        if deletes:
            sql.append(_PARTS["delete"])
            params.append(_json(deletes))
        if records:
            sql.append(_PARTS["record"])
            params += [self._host, _json(records)]
        count, before = forget_oldest or (0, 0.0)
        forgets = count > 0 and self._oldest_at < before
        if forgets:
            sql.append(_PARTS["forget"])
            params += [before, self._host, count]
        answer = "SELECT EXISTS (SELECT FROM owner), "
        answer += "(SELECT count(*) FROM forgotten)" if forgets else "0"
        with self._failing("write", ", nothing of it was stored"):
            db = self._connection()
            try:
                owned, forgotten = _one(db, ", ".join(sql) + " " + answer, tuple(params))
            except psycopg.OperationalError as error:
                if db.broken:
                    raise OutcomeUnknown(
                        f"the connection to {self._where} broke while writing, which may or "
                        f"may not have stored the call: {error}"
                    ) from None
                raise
        if not owned:
            raise self._fenced()
        if forgets and forgotten < count:
            self._oldest_at = before  # all of them, as far as the oldest `count` went
        return int(forgotten)

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

    def _fenced(self, row: Any = None) -> Fenced:
        newer = "" if row is None else f"epoch {row[0]}, "
        return Fenced(
            f"host {self._host}'s data in {self._where} was taken over by a newer writer "
            f"({newer}ours {self.epoch}); nothing of this call was stored"
        )

    @contextmanager
    def _failing(self, doing: str, consequence: str = "") -> Iterator[None]:
        # The message is made only on failure: redacting the address parses it (36 us).
        try:
            yield
        except pg_errors.UniqueViolation as error:
            if error.diag.constraint_name != "counters_applied_by_id":
                raise _translation(error, f"cannot {doing} {self._where}") from None
            raise IdsAlreadyRecorded(str(error).strip()) from None
        except psycopg.Error as error:
            raise _translation(error, f"cannot {doing} {self._where}{consequence}") from None


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """psycopg's errors as the StorageFailed every caller handles (StorageFull if full)."""
    try:
        yield
    except psycopg.Error as error:
        raise _translation(error, what) from None


def _translation(error: psycopg.Error, what: str) -> StorageFailed:
    full = isinstance(error, pg_errors.DiskFull | pg_errors.OutOfMemory)
    kind = StorageFull if full else StorageFailed
    return kind(f"{what}: {str(error).strip()}")


def _connect(dsn: str) -> psycopg.Connection[Any]:
    with _translated(f"cannot connect to PostgreSQL at {redacted(dsn)}"):
        # Every query here has an index made for it. A table that grew faster than autovacuum
        # analyzes it looks small to the planner, which then scans it whole (a batch's id
        # look-up took 2 ms at ten thousand ids, and grows with the table): never scan.
        # Text as UTF-8 whatever the server's encoding: on a SQL_ASCII database, psycopg
        # would hand back bytes, and a host would not find its own counters.
        return psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=5,
            client_encoding="utf8",
            options="-c enable_seqscan=off",
        )


def _json(rows: list[tuple[Any, ...]]) -> str:
    # Not escaped to ASCII: a database whose encoding is not UTF-8 (SQL_ASCII, LATIN1) cannot
    # turn a \uXXXX escape into text, where it takes the characters themselves as they come.
    return json.dumps(rows, ensure_ascii=False)


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
