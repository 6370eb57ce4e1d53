"""The ``sqlite:///`` backend: eventsourcing's SQLite datastore and application recorder."""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

import orjson
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
)

from meerkat_runtime.errors import LeaseUnavailable, StoreError
from meerkat_runtime.store._base import (
    EventStore,
    Fence,
    Lease,
    NodeInfo,
    StoreOptions,
)
from meerkat_runtime.store._eventsourcing import raw_sqlite_connection, sqlite_insert_in
from meerkat_runtime.store._group_commit import Row
from meerkat_runtime.store._mapper import EventCodec
from meerkat_runtime.store._schema import (
    EVENTS_TABLE,
    LEASES_TABLE,
    NODES_TABLE,
    SCHEMA_COMPONENT,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    foreign_tables_error,
    newer_schema_error,
    not_a_store_error,
)

__all__ = ["SQLiteEventStore"]

_T = TypeVar("_T")

# Table names are constants of this module, never input, so the statements
# below are plain literals; every value travels as a parameter.
_CREATE_SCHEMA_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS meerkat_schema ("
    "component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
)
_SELECT_SCHEMA_VERSION: Final = "SELECT version FROM meerkat_schema WHERE component = ?"
_SELECT_TABLES: Final = "SELECT name FROM sqlite_master WHERE type = 'table'"
_INSERT_SCHEMA_VERSION: Final = (
    "INSERT INTO meerkat_schema (component, version) VALUES (?, ?) "
    "ON CONFLICT (component) DO NOTHING"
)
_CREATE_SNAPSHOTS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS meerkat_snapshots ("
    "session_id TEXT PRIMARY KEY, version INTEGER NOT NULL, state BLOB NOT NULL) WITHOUT ROWID"
)
# Partial index of first events: session_ids() reads one entry per session
# instead of the whole table; later versions cost nothing to insert.
_CREATE_FIRST_EVENTS_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS meerkat_events_first_idx "
    "ON meerkat_events (originator_id) WHERE originator_version = 1"
)
_SELECT_SESSION: Final = (
    "SELECT rowid, originator_version, topic, state FROM meerkat_events "
    "WHERE originator_id = ? AND originator_version > ? ORDER BY originator_version LIMIT ?"
)
# Without statistics the planner prefers a full scan over the partial index.
_SELECT_SESSION_IDS: Final = (
    "SELECT originator_id FROM meerkat_events INDEXED BY meerkat_events_first_idx "
    "WHERE originator_version = 1 ORDER BY rowid"
)
_UPSERT_SNAPSHOT: Final = (
    "INSERT INTO meerkat_snapshots (session_id, version, state) VALUES (?, ?, ?) "
    "ON CONFLICT (session_id) DO UPDATE SET version = excluded.version, state = excluded.state "
    "WHERE meerkat_snapshots.version <= excluded.version"
)
_SELECT_SNAPSHOT: Final = "SELECT version, state FROM meerkat_snapshots WHERE session_id = ?"
# Batch reads (recovery): this many sessions per statement keeps the bound
# parameters far below SQLite's limit.
_BATCH_SESSIONS: Final = 400
_SELECT_SESSIONS_HEAD: Final = "WITH want (sid, after) AS (VALUES "
_SELECT_SESSIONS_TAIL: Final = (
    ") SELECT e.rowid, e.originator_id, e.originator_version, e.topic, e.state "
    "FROM want JOIN meerkat_events AS e "
    "ON e.originator_id = want.sid AND e.originator_version > want.after "
    "ORDER BY e.originator_id, e.originator_version"
)
_SELECT_SNAPSHOTS_HEAD: Final = (
    "SELECT session_id, version, state FROM meerkat_snapshots WHERE session_id IN ("
)
# Leases and nodes (see meerkat_runtime.cluster): times are Unix seconds of the
# processes' own clock, which they share (a SQLite file is used on one host).
_CREATE_LEASES_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS meerkat_leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "incarnation TEXT NOT NULL DEFAULT '', process TEXT NOT NULL DEFAULT '', "
    "token INTEGER NOT NULL, expires_at REAL NOT NULL, acquired_at REAL NOT NULL) WITHOUT ROWID"
)
_CREATE_NODES_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS meerkat_nodes (node_id TEXT PRIMARY KEY, "
    "incarnation TEXT NOT NULL, started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, "
    "info TEXT NOT NULL) WITHOUT ROWID"
)
_SELECT_LEASE: Final = (
    "SELECT owner, incarnation, token, expires_at FROM meerkat_leases WHERE name = ?"
)
_INSERT_LEASE: Final = (
    "INSERT INTO meerkat_leases (name, owner, incarnation, process, token, expires_at, "
    "acquired_at) VALUES (?, ?, ?, ?, 1, ?, ?)"
)
_CHECK_FENCES_HEAD: Final = "WITH f(name, owner, token) AS (VALUES "
_CHECK_FENCES_TAIL: Final = (
    ") SELECT f.name FROM f LEFT JOIN meerkat_leases AS l ON l.name = f.name "
    "WHERE l.name IS NULL OR l.owner != f.owner OR l.token != f.token "
    "OR l.expires_at <= ? LIMIT 1"
)
_RENEW_LEASE: Final = "UPDATE meerkat_leases SET expires_at = ? WHERE name = ?"
_TAKE_LEASE: Final = (
    "UPDATE meerkat_leases SET owner = ?, incarnation = ?, process = ?, token = token + 1, "
    "expires_at = ?, acquired_at = ? WHERE name = ? RETURNING token"
)
_SELECT_LEASES_HEAD: Final = (
    "SELECT name, owner, incarnation, token, expires_at FROM meerkat_leases WHERE name IN ("
)
_RELEASE_LEASES_HEAD: Final = (
    "UPDATE meerkat_leases SET expires_at = ? WHERE owner = ? AND incarnation = ? "
    "AND expires_at > ? AND name IN ("
)
_RENEW_LEASES_HEAD: Final = (
    "UPDATE meerkat_leases SET expires_at = ? WHERE owner = ? AND incarnation = ? AND name IN ("
)
_RELEASE_LEASE: Final = (
    "UPDATE meerkat_leases SET expires_at = ? WHERE name = ? AND owner = ? AND incarnation = ? "
    "AND expires_at > ?"
)
_LIST_LEASES: Final = (
    "SELECT name, owner, token, expires_at, incarnation, process FROM meerkat_leases "
    "WHERE substr(name, 1, ?) = ? ORDER BY name"
)
_HEARTBEAT_NODE: Final = (
    "INSERT INTO meerkat_nodes (node_id, incarnation, started_at, heartbeat_at, info) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
    "info = excluded.info, incarnation = excluded.incarnation, started_at = CASE "
    "WHEN meerkat_nodes.incarnation = excluded.incarnation THEN meerkat_nodes.started_at "
    "ELSE excluded.started_at END"
)
_REMOVE_NODE: Final = "DELETE FROM meerkat_nodes WHERE node_id = ? AND incarnation = ?"
_PRUNE_NODES: Final = (
    "DELETE FROM meerkat_nodes WHERE heartbeat_at < ? - ? * COALESCE(CASE WHEN "
    "json_type(info, '$.lease_ttl') IN ('integer', 'real') THEN json_extract(info, '$.lease_ttl') "
    "END, 10.0)"
)
_LIST_NODES: Final = (
    "SELECT node_id, incarnation, started_at, heartbeat_at, info FROM meerkat_nodes "
    "ORDER BY heartbeat_at DESC"
)
_PRAGMA_SYNCHRONOUS: Final = {
    "full": "PRAGMA synchronous = FULL",
    "normal": "PRAGMA synchronous = NORMAL",
}


class _ConnectionPool(SQLiteConnectionPool):
    """The library's pool plus a ``synchronous`` setting on every new connection.

    Read-only: connections open the file with ``mode=ro`` and the library's switch
    to WAL (a write) is skipped.
    """

    def __init__(
        self, *, synchronous: Literal["full", "normal"], read_only: bool, **kwargs: object
    ) -> None:
        self._synchronous_pragma = _PRAGMA_SYNCHRONOUS[synchronous]
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if read_only:
            self.is_journal_mode_wal = True

    def _create_connection(self) -> SQLiteConnection:
        conn = super()._create_connection()
        # eventsourcing's SQLite datastore has no setting for the synchronous pragma.
        raw_sqlite_connection(conn).execute(self._synchronous_pragma)
        return conn


class SQLiteEventStore(EventStore):
    """Embedded durable store in one SQLite file (WAL mode, ``synchronous=FULL`` by default)."""

    _unavailable_errors = (
        OperationalError,
        InterfaceError,
        sqlite3.OperationalError,
        sqlite3.InterfaceError,
    )
    _database_errors = (PersistenceError, sqlite3.Error)

    def __init__(
        self,
        *,
        path: str,
        url: str,
        codec: EventCodec,
        incarnation: str,
        options: StoreOptions,
    ) -> None:
        super().__init__(url=url, codec=codec, incarnation=incarnation, options=options)
        self.path = path
        self._options = options
        self._probe()
        pool_options = {
            "db_name": read_only_uri(path) if options.read_only else path,
            "lock_timeout": max(1, math.ceil(options.lock_timeout)),
            "pool_size": options.pool_size,
            "max_overflow": 2 * options.pool_size,
            # Waiting for the in-process writer lock counts against this timeout.
            "pool_timeout": max(30.0, options.lock_timeout),
        }
        self.datastore = SQLiteDatastore(originator_id_type="text", **pool_options)  # type: ignore[arg-type]
        self.datastore.pool.close()
        self.datastore.pool = _ConnectionPool(
            synchronous=options.sqlite_synchronous, read_only=options.read_only, **pool_options
        )
        try:
            self._recorder = _Recorder(self.datastore, EVENTS_TABLE)
            self._set_up()
        except BaseException:
            self.datastore.close()
            raise
        self._start()

    @contextmanager
    def _write(self, *, derived: bool = False) -> Iterator[SQLiteCursor]:
        """A write transaction that takes the write lock up front (``BEGIN IMMEDIATE``).

        A deferred ``BEGIN`` that reads first and writes later fails at once with
        "database is locked" when another connection (another process, or this
        store's writer) committed in between: SQLite cannot upgrade a stale read
        snapshot, and its busy timeout does not apply. Taking the lock first makes
        the transaction wait for the lock (up to ``lock_timeout``) instead.

        ``derived``: the rows can be derived again from the log (see
        :meth:`EventStore.transaction`), so on a ``FULL`` store the commit skips
        its fsync (``synchronous=NORMAL`` for this transaction only).
        """
        relax = derived and self._options.sqlite_synchronous == "full"
        with self.datastore.get_connection(commit=True) as conn:
            raw = raw_sqlite_connection(conn)
            if relax:
                raw.execute(_PRAGMA_SYNCHRONOUS["normal"])
            cursor = raw.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield SQLiteCursor(cursor)
                except BaseException:
                    raw.rollback()
                    raise
                raw.commit()
            finally:
                cursor.close()
                if relax:
                    self._restore_synchronous(conn)

    def _restore_synchronous(self, conn: SQLiteConnection) -> None:
        """Put a pooled connection back to ``FULL``; one that cannot be is closed, so
        that no append ever commits on it without its fsync."""
        try:
            raw_sqlite_connection(conn).execute(_PRAGMA_SYNCHRONOUS["full"])
        except BaseException:
            conn.close()
            raise

    def _probe(self) -> None:
        """Decide, reading only, whether the file holds a store we may open or create.

        Reads through a read-only connection before the pool's first connection
        switches the file to WAL, so another application's database is left as it was.
        """
        try:
            conn = sqlite3.connect(read_only_uri(self.path), uri=True)
            try:
                tables = {r[0] for r in conn.execute(_SELECT_TABLES)}
                version = None
                if SCHEMA_TABLE in tables:
                    row = conn.execute(_SELECT_SCHEMA_VERSION, (SCHEMA_COMPONENT,)).fetchone()
                    version = None if row is None else int(row[0])
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"cannot open SQLite store {self.url}: not a meerkat-runtime store "
                f"(not a SQLite database: {e})"
            ) from None
        if version is not None and version > SCHEMA_VERSION:
            raise newer_schema_error(self.url, version)
        self._has_store = version is not None
        if self._has_store:
            return
        if self._options.read_only or self._options.create_schema == "never":
            raise not_a_store_error(self.url, f"the file has no {SCHEMA_TABLE} table")
        others = sorted(t for t in tables if not t.startswith(("meerkat_", "sqlite_")))
        if others and self._options.create_schema != "force":
            raise foreign_tables_error(self.url, "the file", others)

    def _set_up(self) -> None:
        if self._options.read_only:
            return
        # One transaction: an open that fails leaves no table behind (SQLite DDL is
        # transactional); the version row says the store is complete.
        with self._write() as c:
            c.execute(_CREATE_SCHEMA_TABLE)
            c.execute(_SELECT_SCHEMA_VERSION, (SCHEMA_COMPONENT,))
            row = c.fetchone()
            if row is not None and row[0] > SCHEMA_VERSION:
                raise newer_schema_error(self.url, row[0])
            for statement in self._recorder.create_table_statements:
                c.execute(statement)
            c.execute(_CREATE_SNAPSHOTS_TABLE)
            c.execute(_CREATE_FIRST_EVENTS_INDEX)
            c.execute(_CREATE_LEASES_TABLE)
            c.execute(_CREATE_NODES_TABLE)
            c.execute(_INSERT_SCHEMA_VERSION, (SCHEMA_COMPONENT, SCHEMA_VERSION))

    def _insert(self, stored: Sequence[StoredEvent], fences: Sequence[Fence] = ()) -> list[int]:
        """Check the fences and insert ``stored`` in one write transaction.

        SQLite runs one writer at a time on a file, so no takeover (a write too)
        can commit between the check and the insert. The statements are few on
        purpose: Python's sqlite3 lets go of the GIL around each step of a
        statement, and under load getting it back waits behind the threads that
        took it meanwhile. A group commit is four steps: ``BEGIN IMMEDIATE``, one
        fence check, one multi-row ``INSERT`` per :data:`_INSERT_ROWS` events
        (:class:`_Recorder`) and ``COMMIT``.
        """
        try:
            with self._write() as c:
                if fences:
                    self._check_fences(c, fences)
                return sqlite_insert_in(self._recorder, c, stored)
        except sqlite3.IntegrityError as e:
            raise IntegrityError(e) from e

    @staticmethod
    def _check_fences(c: SQLiteCursor, fences: Sequence[Fence]) -> None:
        """:class:`LeaseUnavailable` unless each fence's lease is live with its owner and
        token: one query returning nothing when all hold (the common case, one step)."""
        now = time.time()
        distinct = list(dict.fromkeys((f.lease, f.owner, f.token) for f in fences))
        for start in range(0, len(distinct), _FENCE_ROWS):
            chunk = distinct[start : start + _FENCE_ROWS]
            params: list[Any] = [v for fence in chunk for v in fence]
            params.append(now)
            c.execute(_fence_check_statement(len(chunk)), params)
            if c.fetchone() is None:
                continue
            for lease, owner, token in chunk:  # name the first lease that does not hold
                c.execute(_SELECT_LEASE, (lease,))
                row = c.fetchone()
                live = row is not None and row["expires_at"] > now
                if not live or row["owner"] != owner or row["token"] != token:
                    # Live with another token: another node, or another incarnation
                    # of this node id (a restart) holds it now.
                    raise LeaseUnavailable(lease, row["owner"] if live else None)

    def _select_session(self, session_id: str, after_version: int, limit: int | None) -> list[Row]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(_SELECT_SESSION, (session_id, after_version, -1 if limit is None else limit))
            return [(r[0], session_id, r[1], r[2], r[3]) for r in c.fetchall()]

    def _select_all(self, after_position: int, limit: int, topics: list[str]) -> list[Row]:
        notifications = self._recorder.select_notifications(
            after_position, limit, topics=topics, inclusive_of_start=False
        )
        return [
            (n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
            for n in notifications
        ]

    def _current_version(self, session_id: str) -> int:
        last = self._recorder.select_events(session_id, desc=True, limit=1)
        return last[0].originator_version if last else 0

    def _max_position(self) -> int:
        return self._recorder.max_notification_id() or 0

    def _session_ids(self) -> list[str]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(_SELECT_SESSION_IDS)
            return [r[0] for r in c.fetchall()]

    def _put_snapshot(self, session_id: str, version: int, state: bytes) -> None:
        # A snapshot is a cache the log can refold (derived): no fsync of its own. It
        # covers only events already durable, and the next append's fsync covers it.
        with self._write(derived=True) as c:
            c.execute(_UPSERT_SNAPSHOT, (session_id, version, state))

    def _get_snapshot(self, session_id: str) -> tuple[int, bytes] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(_SELECT_SNAPSHOT, (session_id,))
            row = c.fetchone()
            return None if row is None else (row[0], bytes(row[1]))

    def _select_sessions(self, after_versions: list[tuple[str, int]]) -> list[Row]:
        rows: list[Row] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(after_versions), _BATCH_SESSIONS):
                chunk = after_versions[start : start + _BATCH_SESSIONS]
                values = ", ".join(["(?, ?)"] * len(chunk))
                params = [x for pair in chunk for x in pair]
                c.execute(_SELECT_SESSIONS_HEAD + values + _SELECT_SESSIONS_TAIL, params)
                rows.extend((r[0], r[1], r[2], r[3], r[4]) for r in c.fetchall())
        return rows

    def _get_snapshots(self, session_ids: list[str]) -> dict[str, tuple[int, bytes]]:
        out: dict[str, tuple[int, bytes]] = {}
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(session_ids), _BATCH_SESSIONS):
                chunk = session_ids[start : start + _BATCH_SESSIONS]
                c.execute(_SELECT_SNAPSHOTS_HEAD + ", ".join(["?"] * len(chunk)) + ")", chunk)
                for r in c.fetchall():
                    out[r[0]] = (r[1], bytes(r[2]))
        return out

    # -- leases ----------------------------------------------------------------------------

    def clock(self) -> datetime:
        """The time lease expiries are measured in: this host's (one file, one host)."""
        return datetime.now(UTC)

    def _has_table(self, name: str) -> bool:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
            return c.fetchone() is not None

    def _lease_write(self, what: str, fn: Callable[[SQLiteCursor, float], _T]) -> _T:
        """A write of the leases or nodes tables, committed without its fsync on a
        ``FULL`` store (as a derived transaction is).

        A lease only matters while the process that holds it runs, and every process
        sharing a SQLite file runs on this machine: a commit in WAL mode without the
        fsync survives the crash of any process, and a power loss, which can lose it,
        also ends every process that relied on it. An event appended under a lease
        cannot outlive the lease row either: the append's own fsync makes the WAL
        durable up to it, the earlier lease write included. So a session's first load
        and its passivation no longer wait for the disk twice (acquire, release).
        """

        def run() -> _T:
            with self._write(derived=True) as c:
                return fn(c, time.time())

        return self._guard(what, run)

    def acquire_lease(
        self,
        name: str,
        owner: str,
        ttl: float,
        *,
        incarnation: str = "",
        process: str = "",
        steal: int | None = None,
    ) -> int:
        def run(c: SQLiteCursor, now: float) -> int:
            c.execute(_SELECT_LEASE, (name,))
            row = c.fetchone()
            if row is None:
                c.execute(_INSERT_LEASE, (name, owner, incarnation, process, now + ttl, now))
                return 1
            if row["owner"] == owner and row["incarnation"] == incarnation:
                c.execute(_RENEW_LEASE, (now + ttl, name))
                return int(row["token"])
            if row["owner"] == owner or row["expires_at"] < now or row["token"] == steal:
                c.execute(_TAKE_LEASE, (owner, incarnation, process, now + ttl, now, name))
                return int(c.fetchone()["token"])
            raise LeaseUnavailable(name, row["owner"])

        return self._lease_write("use leases", run)

    def acquire_leases(
        self,
        names: Sequence[str],
        owner: str,
        ttl: float,
        *,
        incarnation: str = "",
        process: str = "",
    ) -> dict[str, int]:
        if not names:
            return {}
        wanted = list(dict.fromkeys(names))

        def run(c: SQLiteCursor, now: float) -> dict[str, int]:
            taken: dict[str, int] = {}
            for start in range(0, len(wanted), _BATCH_SESSIONS):
                chunk = wanted[start : start + _BATCH_SESSIONS]
                c.execute(_SELECT_LEASES_HEAD + ", ".join(["?"] * len(chunk)) + ")", chunk)
                rows = {r["name"]: r for r in c.fetchall()}
                inserts: list[tuple[str, str, str, str, float, float]] = []
                renewals: list[tuple[float, str]] = []
                for name in chunk:
                    row = rows.get(name)
                    if row is None:
                        inserts.append((name, owner, incarnation, process, now + ttl, now))
                        taken[name] = 1
                    elif row["owner"] == owner and row["incarnation"] == incarnation:
                        renewals.append((now + ttl, name))
                        taken[name] = int(row["token"])
                    elif row["owner"] == owner or row["expires_at"] < now:
                        c.execute(_TAKE_LEASE, (owner, incarnation, process, now + ttl, now, name))
                        taken[name] = int(c.fetchone()["token"])
                if inserts:
                    c.executemany(_INSERT_LEASE, inserts)
                if renewals:
                    c.executemany(_RENEW_LEASE, renewals)
            return taken

        return self._lease_write("use leases", run)

    def release_leases(self, names: Sequence[str], owner: str, *, incarnation: str = "") -> None:
        if not names:
            return

        def run(c: SQLiteCursor, now: float) -> None:
            for start in range(0, len(names), _BATCH_SESSIONS):
                chunk = list(names[start : start + _BATCH_SESSIONS])
                c.execute(
                    _RELEASE_LEASES_HEAD + ", ".join(["?"] * len(chunk)) + ")",
                    (now, owner, incarnation, now, *chunk),
                )

        self._lease_write("use leases", run)

    def renew_leases(
        self, names: Sequence[str], owner: str, ttl: float, *, incarnation: str = ""
    ) -> set[str]:
        if not names:
            return set()

        def run(c: SQLiteCursor, now: float) -> set[str]:
            renewed: set[str] = set()
            for start in range(0, len(names), _BATCH_SESSIONS):
                chunk = list(names[start : start + _BATCH_SESSIONS])
                placeholders = ", ".join(["?"] * len(chunk))
                c.execute(
                    _RENEW_LEASES_HEAD + placeholders + ") RETURNING name",
                    (now + ttl, owner, incarnation, *chunk),
                )
                renewed.update(r[0] for r in c.fetchall())
            return renewed

        return self._lease_write("renew leases", run)

    def release_lease(self, name: str, owner: str, *, incarnation: str = "") -> None:
        def run(c: SQLiteCursor, now: float) -> None:
            c.execute(_RELEASE_LEASE, (now, name, owner, incarnation, now))

        self._lease_write("use leases", run)

    def list_leases(self, prefix: str = "") -> list[Lease]:
        def run() -> list[Lease]:
            now = time.time()
            if not self._has_table(LEASES_TABLE):
                return []  # a store written before leases came to SQLite, opened read-only
            with self.datastore.transaction(commit=False) as c:
                c.execute(_LIST_LEASES, (len(prefix), prefix))
                return [
                    Lease(r[0], r[1], int(r[2]), _utc(r[3]), r[3] > now, r[4], r[5])
                    for r in c.fetchall()
                ]

        return self._guard("use leases", run)

    def heartbeat_node(
        self, node_id: str, info: dict[str, Any] | None = None, *, incarnation: str | None = None
    ) -> None:
        text = orjson.dumps(info or {}).decode()

        def run(c: SQLiteCursor, now: float) -> None:
            c.execute(_HEARTBEAT_NODE, (node_id, incarnation or self.incarnation, now, now, text))

        self._lease_write("record a node heartbeat", run)

    def remove_node(self, node_id: str, incarnation: str | None = None) -> None:
        def run(c: SQLiteCursor, _: float) -> None:
            c.execute(_REMOVE_NODE, (node_id, incarnation or self.incarnation))

        self._lease_write("remove a node", run)

    def prune_nodes(self, retention_ttls: float) -> int:
        def run(c: SQLiteCursor, now: float) -> int:
            c.execute(_PRUNE_NODES, (now, float(retention_ttls)))
            return int(c.sqlite_cursor.rowcount)

        return self._lease_write("prune dead nodes", run)

    def list_nodes(self) -> list[NodeInfo]:
        def run() -> list[NodeInfo]:
            if not self._has_table(NODES_TABLE):
                return []
            with self.datastore.transaction(commit=False) as c:
                c.execute(_LIST_NODES)
                return [
                    NodeInfo(r[0], r[1], _utc(r[2]), _utc(r[3]), dict(orjson.loads(r[4])))
                    for r in c.fetchall()
                ]

        return self._guard("list nodes", run)

    @contextmanager
    def _sql_transaction(self) -> Iterator[SQLiteCursor]:
        """A write transaction on the store's SQLite file (``BEGIN IMMEDIATE``); on a
        read-only store, a read transaction (writes fail)."""
        if self.read_only:
            with self.datastore.transaction(commit=False) as rc:
                yield rc
            return
        with self._write() as c:
            yield c

    @contextmanager
    def _sql_derived_transaction(self) -> Iterator[SQLiteCursor]:
        """A :meth:`_sql_transaction` whose commit does not wait for the disk (see
        :meth:`EventStore.transaction`, ``derived``)."""
        if self.read_only:
            with self._sql_transaction() as rc:
                yield rc
            return
        with self._write(derived=True) as c:
            yield c

    @contextmanager
    def _sql_read_transaction(self) -> Iterator[SQLiteCursor]:
        """A read-only snapshot of the file.

        A deferred ``BEGIN``: in WAL mode the first read fixes the snapshot for the
        rest of the transaction, and writers (this store's and other processes')
        carry on meanwhile. Always rolled back.
        """
        with self.datastore.get_connection(commit=False) as conn:
            raw = raw_sqlite_connection(conn)
            cursor = raw.cursor()
            try:
                cursor.execute("BEGIN")
                try:
                    yield SQLiteCursor(cursor)
                finally:
                    raw.rollback()
            finally:
                cursor.close()

    def _close_backend(self) -> None:
        self.datastore.close()


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def create_database_file(path: str, url: str) -> None:
    """Create an empty database file readable by its owner only, if there is none.

    Refuses (``StoreError``) a path whose directory does not exist: creating
    directories would hide a mistyped path.
    """
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StoreError(
            f"cannot open store {url}: directory {directory!r} does not exist; "
            f"create it first or fix the path (meerkat-runtime creates no directories)"
        )
    if os.path.isdir(path):
        raise StoreError(f"cannot open store {url}: {path!r} is a directory, not a database file")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise StoreError(f"cannot create database file for store {url}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, the events are the owner's only
    finally:
        os.close(fd)


def read_only_uri(path: str) -> str:
    """A ``file:`` URI opening ``path`` read-only (``?``, ``#`` and ``%`` in it escaped)."""
    return f"file:{quote(path)}?mode=ro"


# Rows per multi-row INSERT (4 parameters each) and fences per check (3 each): both far
# below SQLite's 32,766 parameters per statement.
_INSERT_ROWS: Final = 500
_FENCE_ROWS: Final = 500


@functools.cache
def _fence_check_statement(fences: int) -> str:
    """The first fence (name, owner, token) whose lease is missing, expired at the last
    parameter (now), or held with another owner or token; no row when all hold."""
    return _CHECK_FENCES_HEAD + ",".join(["(?,?,?)"] * fences) + _CHECK_FENCES_TAIL


class _Recorder(SQLiteApplicationRecorder):
    """The library's recorder, inserting an append's rows with one statement per
    :data:`_INSERT_ROWS` instead of one per row.

    Each ``execute`` is a step with the GIL let go and then taken back, which under
    load waits behind other threads (BENCHMARKS.md section 1); the rows, table and
    notification ids are the library's.
    """

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert in order; return the notification ids (rowids).

        Each new row gets the table's highest rowid plus one, and the transaction
        holds the file's write lock, so the rows of one statement get consecutive
        rowids ending at ``lastrowid``.
        """
        ids: list[int] = []
        for start in range(0, len(stored_events), _INSERT_ROWS):
            chunk = stored_events[start : start + _INSERT_ROWS]
            params: list[Any] = []
            for s in chunk:
                params += (s.originator_id, s.originator_version, s.topic, s.state)
            # The library's one-row statement, with more rows of values.
            c.execute(self.insert_events_statement + ",(?,?,?,?)" * (len(chunk) - 1), params)
            last: int = c.lastrowid  # a statement inserts all its rows or raises
            ids += range(last - len(chunk) + 1, last + 1)
        return ids
