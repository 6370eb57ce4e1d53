"""The ``postgresql://`` backend: eventsourcing's PostgreSQL datastore and application recorder."""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from meerkat_runtime.errors import LeaseUnavailable, StoreError
from meerkat_runtime.store._base import (
    EventStore,
    Fence,
    Lease,
    NodeInfo,
    SQLCursor,
    StoreOptions,
)
from meerkat_runtime.store._group_commit import Row
from meerkat_runtime.store._mapper import EventCodec
from meerkat_runtime.store._schema import (
    EVENTS_TABLE,
    LEASES_TABLE,
    NODES_TABLE,
    SCHEMA_COMPONENT,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    SNAPSHOTS_TABLE,
    foreign_tables_error,
    newer_schema_error,
    not_a_store_error,
)

__all__ = ["PostgresEventStore"]

logger = logging.getLogger(__name__)

# Wait between two attempts of a store call whose connection was lost or refused.
_RETRY_WAIT = 0.2
# Batch reads (recovery): sessions per statement, so one result stays a modest size.
_BATCH_SESSIONS = 1000


# The SQLSTATE the append function raises when a fence does not hold (see APPEND_FUNCTION;
# written there as text: the SQL of this package interpolates identifiers only).
FENCE_SQLSTATE = "MKF01"

APPEND_FUNCTION = "meerkat_append_v2"
"""The server-side append (one per schema, created by a writable open): table lock,
NOTIFY, fence check and INSERT in one statement (see :class:`FencedPostgresRecorder`).

Version 2 takes the events as four arrays in binary format; version 1 (a composite
array) may stay in the schema for nodes of an older release and is left alone."""


class FencedPostgresRecorder(PostgresApplicationRecorder):
    """The library's recorder with an append that is one statement, its own transaction.

    An append calls :data:`APPEND_FUNCTION` on an autocommit connection: it sets the
    lock timeout, takes the library's ``LOCK TABLE ... IN EXCLUSIVE MODE`` (what
    keeps positions in commit order, see ``store/__init__``), sends the library's
    NOTIFY, checks the fences (their lease rows locked FOR SHARE until the commit;
    :data:`FENCE_SQLSTATE` if one does not hold), inserts the events, passed as four
    arrays (ids, versions, topics, states), and commits: one round trip.

    The events table lock serialises the appends of every node of a cluster, so
    what matters is how long each append holds it. Done as a client-side
    transaction (BEGIN; lock and NOTIFY; fence check; INSERT; COMMIT) it was held
    across three round trips in which the server waited for the node's next
    statement, and a node's writer thread, sharing its GIL with the accepting
    threads, is slow to send it: in ``benchmarks/cluster_bench.py`` the holder was
    waiting for its client in 34-47% of the samples and the lock was free 14% of
    the time with two nodes (BENCHMARKS.md, "Several processes"). In one statement
    the lock is held for the statement and its commit's WAL flush only.

    One statement also settles what the client-side transaction had to guard
    against: it cannot half-commit (eventsourcing 9.5's ``insert_events`` re-raises
    a non-database error only after its block has committed), and a node stopped
    (SIGSTOP, VM pause) mid-append never leaves the server waiting for it while
    holding the lock and the lease rows; a node stopped before it reads the answer
    holds nothing (the commit is done), and a lost answer is settled by the group
    commit's "already stored" check like a lost COMMIT acknowledgement.

    The table lock comes before the fence check, so the lease rows are held only
    from the check to the commit, never while the append waits for the table:
    held while waiting, they stalled the owner's own lease renewals (and
    takeovers) behind another node's long append.
    """

    append_sql: sql.Composed | None = None

    def create_append_function(self, conn: Any, leases_table: str) -> None:
        """Create :data:`APPEND_FUNCTION` in the schema unless it is there (a writable open,
        under the store's set-up advisory lock)."""
        schema = self.datastore.schema
        present = conn.execute(
            "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = %s",
            (schema, APPEND_FUNCTION),
        ).fetchone()
        if present is None:
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {s}.{fn}(ids text[], versions bigint[], topics text[], "
                    "states bytea[], fence_names text[], fence_owners text[], "
                    "fence_tokens bigint[], wait_for_lock text) "
                    "RETURNS SETOF bigint LANGUAGE plpgsql AS $body$ "
                    "DECLARE bad record; "
                    "BEGIN "
                    "PERFORM set_config('lock_timeout', wait_for_lock, true); "
                    "LOCK TABLE {s}.{events} IN EXCLUSIVE MODE; "
                    "NOTIFY {channel}; "
                    "IF cardinality(fence_names) > 0 THEN "
                    "PERFORM 1 FROM {s}.{leases} WHERE name = ANY(fence_names) FOR SHARE; "
                    "SELECT f.name, l.owner, l.expires_at > now() AS live INTO bad "
                    "FROM unnest(fence_names, fence_owners, fence_tokens) AS f(name, owner, token) "
                    "LEFT JOIN {s}.{leases} AS l ON l.name = f.name "
                    "WHERE l.name IS NULL OR l.owner <> f.owner OR l.token <> f.token "
                    "OR NOT l.expires_at > now() LIMIT 1; "
                    "IF FOUND THEN RAISE EXCEPTION USING ERRCODE = 'MKF01', MESSAGE = bad.name, "  # FENCE_SQLSTATE
                    "DETAIL = CASE WHEN bad.live THEN bad.owner ELSE '' END; END IF; "
                    "END IF; "
                    "RETURN QUERY INSERT INTO {s}.{events} "
                    "(originator_id, originator_version, topic, state) "
                    "SELECT * FROM unnest(ids, versions, topics, states) "
                    "RETURNING notification_id; "
                    "END $body$"
                ).format(
                    s=sql.Identifier(schema),
                    fn=sql.Identifier(APPEND_FUNCTION),
                    events=sql.Identifier(self.events_table_name),
                    leases=sql.Identifier(leases_table),
                    channel=sql.Identifier(self.channel_name),
                )
            )
        # The events go in binary (%b): psycopg dumps lists of str, int and bytes in C,
        # where the library's composite array was dumped in Python, escaping every
        # byte of every state with a regular expression (~80 us of client CPU per
        # accept of 2 events, against ~8; BENCHMARKS.md, section 1, "PostgreSQL").
        # psycopg picks the narrowest integer array that holds the versions: the
        # cast makes it bigint[] whatever it picked.
        self.append_sql = sql.SQL(
            "SELECT * FROM {s}.{fn}(%b::text[], %b::bigint[], %b::text[], %b::bytea[], "
            "%s::text[], %s::text[], %s::bigint[], %s)"
        ).format(s=sql.Identifier(schema), fn=sql.Identifier(APPEND_FUNCTION))

    store_timeout: float = 30.0
    _RETRIES = 3

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        """Insert, retrying a lost or refused connection up to three times within
        ``store_timeout`` seconds (each attempt waits at most a third of it for a
        connection); then :class:`StoreError`, nothing written."""
        deadline = time.monotonic() + self.store_timeout
        attempt = 1
        while True:
            try:
                return self._insert_once(stored_events, **kwargs)
            except (InterfaceError, OperationalError) as exc:
                out_of_time = time.monotonic() + _RETRY_WAIT >= deadline
                if out_of_time or attempt >= self._RETRIES:
                    raise StoreError(
                        f"PostgreSQL did not take the append within store_timeout="
                        f"{self.store_timeout:g}s ({attempt} attempt(s)): {exc}"
                    ) from exc
                attempt += 1
                time.sleep(_RETRY_WAIT)

    def _insert_once(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        if not stored_events:
            return []
        with self.datastore.get_connection() as conn:
            return self._append(conn, stored_events, kwargs.get("fences", ()))

    def _append(
        self, conn: Any, stored_events: Sequence[StoredEvent], fences: Sequence[Fence]
    ) -> list[int]:
        """One append: one statement on an autocommit connection (see the class docstring)."""
        if self.append_sql is None:
            raise StoreError("this store was opened read-only: it has no append function")
        params = (
            [str(e.originator_id) for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            [f.lease for f in fences],
            [f.owner for f in fences],
            [f.token for f in fences],
            f"{self.datastore.lock_timeout}s",
        )
        try:
            result = conn.execute(self.append_sql, params, prepare=True).fetchall()
        except psycopg.Error as exc:
            if exc.sqlstate == FENCE_SQLSTATE:
                # Live with another token: another node, or another incarnation of this
                # node id (a restart) holds it now; no owner if it expired or is gone.
                raise LeaseUnavailable(
                    exc.diag.message_primary or "", exc.diag.message_detail or None
                ) from None
            raise
        return [next(iter(r.values())) if isinstance(r, dict) else r[0] for r in result]


class PostgresEventStore(EventStore):
    """Shared store in a PostgreSQL database (tables in ``schema``, default ``public``)."""

    _unavailable_errors = (
        OperationalError,
        InterfaceError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    )
    _database_errors = (PersistenceError, psycopg.Error)

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        dbname: str,
        schema: str,
        url: str,
        codec: EventCodec,
        incarnation: str,
        options: StoreOptions,
        secrets: Sequence[str] = (),
        params: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            url=url, codec=codec, incarnation=incarnation, options=options, secrets=secrets
        )
        self.schema = schema
        s, events, snapshots = (
            sql.Identifier(schema),
            sql.Identifier(EVENTS_TABLE),
            sql.Identifier(SNAPSHOTS_TABLE),
        )
        self._select_session_sql = sql.SQL(
            "SELECT notification_id, originator_version, topic, state FROM {}.{} "
            "WHERE originator_id = %s AND originator_version > %s "
            "ORDER BY originator_version LIMIT %s"
        ).format(s, events)
        self._select_session_ids_sql = sql.SQL(
            "SELECT originator_id FROM {}.{} WHERE originator_version = 1 ORDER BY notification_id"
        ).format(s, events)
        # A snapshot is a cache of the log's fold: its commit need not wait for the WAL
        # flush (set_config(..., true) lasts to the end of the statement's own
        # transaction, so the commit reads it). A server crash may lose it; the session
        # then loads an older snapshot, or none, and folds the events after it. It holds
        # no pooled connection's setting: the next transaction is back to the default.
        self._upsert_snapshot_sql = sql.SQL(
            "INSERT INTO {s}.{t} AS old (session_id, version, state) "
            "SELECT %s::text, %s::bigint, %s::bytea FROM (SELECT set_config('synchronous_commit', 'off', true)) AS c "
            "ON CONFLICT (session_id) DO UPDATE SET version = EXCLUDED.version, "
            "state = EXCLUDED.state WHERE old.version <= EXCLUDED.version"
        ).format(s=s, t=snapshots)
        self._select_snapshot_sql = sql.SQL(
            "SELECT version, state FROM {}.{} WHERE session_id = %s"
        ).format(s, snapshots)
        self._select_sessions_sql = sql.SQL(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::text[], %s::bigint[]) AS want (sid, after) "
            "JOIN {}.{} AS e ON e.originator_id = want.sid AND e.originator_version > want.after "
            "ORDER BY e.originator_id, e.originator_version"
        ).format(s, events)
        self._select_snapshots_sql = sql.SQL(
            "SELECT session_id, version, state FROM {}.{} WHERE session_id = ANY(%s::text[])"
        ).format(s, snapshots)

        connect_timeout = max(2, math.ceil(options.connect_timeout))
        # libpq parameters from the URL (sslmode, ...); read-only stores ask the server
        # to refuse every write of their sessions, whatever the code above does.
        extra: dict[str, Any] = dict(params or {})
        if options.read_only:
            extra["options"] = " ".join(
                filter(None, [extra.get("options", ""), "-c default_transaction_read_only=on"])
            )
        self._heartbeat_lock = threading.Lock()
        self._heartbeat_conn: psycopg.Connection[Any] | None = None
        self._connect_kwargs: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "dbname": dbname,
            "connect_timeout": connect_timeout,
            **extra,
        }
        # A direct connection first: it fails fast with the server's own
        # reason (refused, bad password), where the pool would only time out.
        probe = psycopg.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout=connect_timeout,
            autocommit=True,
            **extra,
        )
        try:
            # Serialise set-up with other processes opening the same schema:
            # concurrent CREATE ... IF NOT EXISTS can still collide.
            lock_key = zlib.crc32(f"meerkat_runtime.store:{schema}".encode())
            if not options.read_only:
                probe.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
            self._check_schema(probe, options)
            self.datastore = PostgresDatastore(
                dbname,
                host,
                port,
                user,
                password,
                # Also the pool's wait for a connection: three attempts of a call
                # (the library's reads and ours retry three times) fit in store_timeout.
                connect_timeout=options.store_timeout / 3,
                pool_size=options.pool_size,
                max_overflow=options.pool_size,
                lock_timeout=math.ceil(options.lock_timeout),
                # A client that stops inside a transaction (paused, not dead: its socket
                # stays open) would hold its locks, the events table's and lease rows,
                # forever. The server ends such a transaction after half the time other
                # writers wait for a lock, so they get it before their own lock_timeout.
                idle_in_transaction_session_timeout=max(1.0, options.lock_timeout / 2),
                schema=schema,
                originator_id_type="text",
            )
            assert isinstance(self.datastore.pool.kwargs, dict)
            self.datastore.pool.kwargs.update(extra)
            try:
                self._recorder = FencedPostgresRecorder(
                    self.datastore, events_table_name=EVENTS_TABLE
                )
                self._recorder.store_timeout = options.store_timeout
                if not options.read_only:
                    self._recorder.create_table()
                    self._create_tables()
                    self._recorder.create_append_function(probe, LEASES_TABLE)
            except BaseException:
                self.datastore.close()
                raise
        finally:
            probe.close()  # also releases the advisory lock
        self._start()

    def _check_schema(self, conn: psycopg.Connection[Any], options: StoreOptions) -> None:
        """Decide, reading only, whether this schema holds a store we may open or create.

        Nothing is created here: the version table is created last (``_create_tables``),
        so an open that fails halfway leaves no ``meerkat_schema`` behind.
        """
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (self.schema,),
            ).fetchall()
        }
        if SCHEMA_TABLE in tables:
            row = conn.execute(
                sql.SQL("SELECT version FROM {}.{} WHERE component = %s").format(
                    sql.Identifier(self.schema), sql.Identifier(SCHEMA_TABLE)
                ),
                (SCHEMA_COMPONENT,),
            ).fetchone()
            if row is not None and row[0] > SCHEMA_VERSION:
                raise newer_schema_error(self.url, row[0])
            if row is not None:
                return
        if options.read_only or options.create_schema == "never":
            raise not_a_store_error(self.url, f"schema {self.schema!r} has no {SCHEMA_TABLE} table")
        others = sorted(t for t in tables if not t.startswith("meerkat_"))
        if others and options.create_schema != "force":
            raise foreign_tables_error(self.url, f"schema {self.schema!r}", others)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))

    def _create_tables(self) -> None:
        s = sql.Identifier(self.schema)
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} "
                    "(component text PRIMARY KEY, version integer NOT NULL)"
                ).format(s, sql.Identifier(SCHEMA_TABLE))
            )
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} (name text PRIMARY KEY, owner text NOT NULL, "
                    "token bigint NOT NULL, expires_at timestamptz NOT NULL, "
                    "acquired_at timestamptz NOT NULL DEFAULT now())"
                ).format(s, sql.Identifier(LEASES_TABLE))
            )
            # Added in place (older releases ignore them): the holder's process start and
            # operating-system process, see acquire_lease.
            # Only when missing: ALTER TABLE locks the table against the appends of
            # nodes already running, even when there is nothing to add.
            cur.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (self.schema, LEASES_TABLE),
            )
            present = {r["column_name"] for r in cur.fetchall()}
            for column in ("incarnation", "process"):
                if column not in present:
                    cur.execute(
                        sql.SQL(
                            "ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} text NOT NULL DEFAULT ''"
                        ).format(s, sql.Identifier(LEASES_TABLE), sql.Identifier(column))
                    )
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} (node_id text PRIMARY KEY, "
                    "incarnation text NOT NULL, started_at timestamptz NOT NULL, "
                    "heartbeat_at timestamptz NOT NULL, info jsonb NOT NULL)"
                ).format(s, sql.Identifier(NODES_TABLE))
            )
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} (session_id text PRIMARY KEY, "
                    "version bigint NOT NULL, state bytea NOT NULL)"
                ).format(s, sql.Identifier(SNAPSHOTS_TABLE))
            )
            # Partial index of first events: session_ids() reads one entry per
            # session; later versions cost nothing to insert.
            cur.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS meerkat_events_first_idx "
                    "ON {}.{} (notification_id) WHERE originator_version = 1"
                ).format(s, sql.Identifier(EVENTS_TABLE))
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {}.{} (component, version) VALUES (%s, %s) "
                    "ON CONFLICT (component) DO NOTHING"
                ).format(s, sql.Identifier(SCHEMA_TABLE)),
                (SCHEMA_COMPONENT, SCHEMA_VERSION),
            )

    def _insert(self, stored: Sequence[StoredEvent], fences: Sequence[Fence] = ()) -> list[int]:
        ids = self._recorder.insert_events(stored, fences=fences)
        assert ids is not None
        return list(ids)

    @retry(
        (InterfaceError, OperationalError, psycopg.InterfaceError, psycopg.OperationalError),
        max_attempts=3,
        wait=0.2,
    )
    def _rows(self, statement: sql.Composed, params: Sequence[Any] = ()) -> list[Any]:
        # One statement in autocommit mode: one round trip, where a
        # transaction block would add BEGIN and ROLLBACK. A read changes nothing, so a
        # pooled connection the server has since closed is retried on a fresh one, as
        # the library's own reads are.
        with self.datastore.get_connection() as conn:
            return conn.execute(statement, params, prepare=True).fetchall()

    def _select_session(self, session_id: str, after_version: int, limit: int | None) -> list[Row]:
        rows = self._rows(self._select_session_sql, (session_id, after_version, limit))
        return [
            (
                r["notification_id"],
                session_id,
                r["originator_version"],
                r["topic"],
                bytes(r["state"]),
            )
            for r in rows
        ]

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
        return [r["originator_id"] for r in self._rows(self._select_session_ids_sql)]

    def _put_snapshot(self, session_id: str, version: int, state: bytes) -> None:
        with self.datastore.get_connection() as conn:
            conn.execute(self._upsert_snapshot_sql, (session_id, version, state), prepare=True)

    def _get_snapshot(self, session_id: str) -> tuple[int, bytes] | None:
        rows = self._rows(self._select_snapshot_sql, (session_id,))
        return (rows[0]["version"], bytes(rows[0]["state"])) if rows else None

    def _select_sessions(self, after_versions: list[tuple[str, int]]) -> list[Row]:
        rows: list[Row] = []
        for start in range(0, len(after_versions), _BATCH_SESSIONS):
            chunk = after_versions[start : start + _BATCH_SESSIONS]
            params = ([sid for sid, _ in chunk], [after for _, after in chunk])
            rows.extend(
                (
                    r["notification_id"],
                    r["originator_id"],
                    r["originator_version"],
                    r["topic"],
                    bytes(r["state"]),
                )
                for r in self._rows(self._select_sessions_sql, params)
            )
        return rows

    def _get_snapshots(self, session_ids: list[str]) -> dict[str, tuple[int, bytes]]:
        out: dict[str, tuple[int, bytes]] = {}
        for start in range(0, len(session_ids), _BATCH_SESSIONS):
            chunk = session_ids[start : start + _BATCH_SESSIONS]
            for r in self._rows(self._select_snapshots_sql, (chunk,)):
                out[r["session_id"]] = (r["version"], bytes(r["state"]))
        return out

    # -- leases ----------------------------------------------------------------------------

    def _lease_sql(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(
            leases=sql.SQL("{}.{}").format(
                sql.Identifier(self.schema), sql.Identifier(LEASES_TABLE)
            ),
            nodes=sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(NODES_TABLE)),
        )

    def _lease_rows(self, template: str, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        def run() -> list[Any]:
            with self.datastore.get_connection() as conn:
                return conn.execute(self._lease_sql(template), params, prepare=True).fetchall()

        return self._guard("use leases", run)

    def _heartbeat_rows(self, template: str, params: Sequence[Any]) -> list[Any]:
        """Like :meth:`_lease_rows`, on a connection of its own, for renewals and heartbeats.

        From the pool they waited for a connection behind everything else; when the
        pool was exhausted (say by acquires waiting for a paused node's lease rows) a
        renewal came too late and the node lost its leases although it was alive.
        """

        def run() -> list[Any]:
            with self._heartbeat_lock:
                conn = self._heartbeat_conn
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        **self._connect_kwargs, autocommit=True, row_factory=dict_row
                    )
                    self._heartbeat_conn = conn
                try:
                    return conn.execute(self._lease_sql(template), params, prepare=True).fetchall()
                except psycopg.Error:
                    conn.close()  # reconnect next time
                    raise

        return self._guard("renew leases", run)

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
        # clock_timestamp(), not now() (the statement's start): an acquire that waited
        # for the row (locked by an append of the holder in flight) must neither grant a
        # lease already partly expired nor judge expiry by the time it started waiting.
        rows = self._lease_rows(
            "INSERT INTO {leases} AS l (name, owner, incarnation, process, token, expires_at) "
            "VALUES (%(name)s, %(owner)s, %(inc)s, %(proc)s, 1, "
            "clock_timestamp() + make_interval(secs => %(ttl)s)) "
            "ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, "
            "incarnation = EXCLUDED.incarnation, process = EXCLUDED.process, "
            "expires_at = clock_timestamp() + make_interval(secs => %(ttl)s), "
            "token = CASE WHEN l.owner = EXCLUDED.owner AND l.incarnation = EXCLUDED.incarnation "
            "THEN l.token ELSE l.token + 1 END, "
            "acquired_at = CASE WHEN l.owner = EXCLUDED.owner "
            "AND l.incarnation = EXCLUDED.incarnation THEN l.acquired_at ELSE now() END "
            "WHERE l.owner = EXCLUDED.owner OR l.expires_at < clock_timestamp() "
            "OR l.token = %(steal)s "
            "RETURNING token",
            {
                "name": name,
                "owner": owner,
                "inc": incarnation,
                "proc": process,
                "ttl": float(ttl),
                "steal": -1 if steal is None else steal,
            },
        )
        if rows:
            return int(rows[0]["token"])
        holder = self._lease_rows("SELECT owner FROM {leases} WHERE name = %s", (name,))
        raise LeaseUnavailable(name, holder[0]["owner"] if holder else None)

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
        # Sorted and unique: one statement may not update a row twice, and rows locked
        # in one order by every batch cannot deadlock each other.
        wanted = sorted(set(names))
        taken: dict[str, int] = {}
        for start in range(0, len(wanted), _BATCH_SESSIONS):
            rows = self._lease_rows(
                "INSERT INTO {leases} AS l (name, owner, incarnation, process, token, expires_at) "
                "SELECT n, %(owner)s, %(inc)s, %(proc)s, 1, "
                "clock_timestamp() + make_interval(secs => %(ttl)s) "
                "FROM unnest(%(names)s::text[]) AS n ORDER BY n "
                "ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, "
                "incarnation = EXCLUDED.incarnation, process = EXCLUDED.process, "
                "expires_at = clock_timestamp() + make_interval(secs => %(ttl)s), "
                "token = CASE WHEN l.owner = EXCLUDED.owner "
                "AND l.incarnation = EXCLUDED.incarnation THEN l.token ELSE l.token + 1 END, "
                "acquired_at = CASE WHEN l.owner = EXCLUDED.owner "
                "AND l.incarnation = EXCLUDED.incarnation THEN l.acquired_at ELSE now() END "
                "WHERE l.owner = EXCLUDED.owner OR l.expires_at < clock_timestamp() "
                "RETURNING name, token",
                {
                    "names": wanted[start : start + _BATCH_SESSIONS],
                    "owner": owner,
                    "inc": incarnation,
                    "proc": process,
                    "ttl": float(ttl),
                },
            )
            taken.update((r["name"], int(r["token"])) for r in rows)
        return taken

    def release_leases(self, names: Sequence[str], owner: str, *, incarnation: str = "") -> None:
        if not names:
            return
        for start in range(0, len(names), _BATCH_SESSIONS):
            self._lease_rows(
                "UPDATE {leases} SET expires_at = now() "
                "WHERE owner = %s AND incarnation = %s AND name = ANY(%s) RETURNING name",
                (owner, incarnation, list(names[start : start + _BATCH_SESSIONS])),
            )

    def renew_leases(
        self, names: Sequence[str], owner: str, ttl: float, *, incarnation: str = ""
    ) -> set[str]:
        if not names:
            return set()
        rows = self._heartbeat_rows(
            "UPDATE {leases} SET expires_at = clock_timestamp() + make_interval(secs => %s) "
            "WHERE owner = %s AND incarnation = %s AND name = ANY(%s) RETURNING name",
            (float(ttl), owner, incarnation, list(names)),
        )
        return {r["name"] for r in rows}

    def release_lease(self, name: str, owner: str, *, incarnation: str = "") -> None:
        self._lease_rows(
            "UPDATE {leases} SET expires_at = now() "
            "WHERE name = %s AND owner = %s AND incarnation = %s RETURNING name",
            (name, owner, incarnation),
        )

    def list_leases(self, prefix: str = "") -> list[Lease]:
        rows = self._lease_rows(
            "SELECT name, owner, token, expires_at, expires_at > now() AS live, incarnation, "
            "process FROM {leases} WHERE starts_with(name, %s) ORDER BY name",
            (prefix,),
        )
        return [
            Lease(
                r["name"],
                r["owner"],
                int(r["token"]),
                r["expires_at"],
                bool(r["live"]),
                r["incarnation"],
                r["process"],
            )
            for r in rows
        ]

    def heartbeat_node(
        self, node_id: str, info: dict[str, Any] | None = None, *, incarnation: str | None = None
    ) -> None:
        self._heartbeat_rows(
            "INSERT INTO {nodes} AS n (node_id, incarnation, started_at, heartbeat_at, info) "
            "VALUES (%s, %s, now(), now(), %s) ON CONFLICT (node_id) DO UPDATE SET "
            "heartbeat_at = now(), info = EXCLUDED.info, incarnation = EXCLUDED.incarnation, "
            "started_at = CASE WHEN n.incarnation = EXCLUDED.incarnation THEN n.started_at "
            "ELSE now() END RETURNING node_id",
            (node_id, incarnation or self.incarnation, Jsonb(info or {})),
        )

    def remove_node(self, node_id: str, incarnation: str | None = None) -> None:
        self._lease_rows(
            "DELETE FROM {nodes} WHERE node_id = %s AND incarnation = %s RETURNING node_id",
            (node_id, incarnation or self.incarnation),
        )

    def prune_nodes(self, retention_ttls: float) -> int:
        # A node records its lease TTL in info (Membership); 10 s when it did not.
        rows = self._heartbeat_rows(
            "DELETE FROM {nodes} WHERE heartbeat_at < now() - make_interval(secs => %s * "
            "COALESCE(CASE WHEN jsonb_typeof(info->'lease_ttl') = 'number' "
            "THEN (info->>'lease_ttl')::float8 END, 10.0)) RETURNING node_id",
            (float(retention_ttls),),
        )
        return len(rows)

    def list_nodes(self) -> list[NodeInfo]:
        rows = self._lease_rows(
            "SELECT node_id, incarnation, started_at, heartbeat_at, info FROM {nodes} "
            "ORDER BY heartbeat_at DESC",
            (),
        )
        return [
            NodeInfo(
                r["node_id"], r["incarnation"], r["started_at"], r["heartbeat_at"], dict(r["info"])
            )
            for r in rows
        ]

    def clock(self) -> datetime:
        """The database server's ``now()``: lease expiries are in its clock."""
        return cast(datetime, self._lease_rows("SELECT now() AS now", ())[0]["now"])

    def watch_commits(self, callback: Callable[[], None]) -> Callable[[], None]:
        """LISTEN on the events table's channel (every insert transaction NOTIFYs it).

        One thread and one connection per watcher; it reconnects with backoff
        after a connection loss. Returns a function that stops it.
        """
        stop = threading.Event()
        channel = self._recorder.channel_name

        def loop() -> None:
            delay = 0.1
            while not stop.is_set():
                try:
                    with psycopg.connect(**self._connect_kwargs, autocommit=True) as conn:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                        delay = 0.1
                        callback()  # anything committed while we were not listening
                        while not stop.is_set():
                            for _ in conn.notifies(timeout=0.5, stop_after=1):
                                callback()
                except Exception as exc:
                    if stop.is_set():
                        return
                    logger.warning("LISTEN on %s failed (%s); retrying in %.1fs", self.url,
                                   self._scrub(str(exc)), delay)  # fmt: skip
                    stop.wait(delay)
                    delay = min(delay * 2, 5.0)

        thread = threading.Thread(target=loop, name="meerkat-listen", daemon=True)
        thread.start()

        def stopper() -> None:
            stop.set()
            thread.join(timeout=2)

        return stopper

    @contextmanager
    def _sql_transaction(self) -> Iterator[Any]:
        """A transaction (dict rows) on the store's database."""
        with self.datastore.transaction(commit=True) as cur:
            yield cur

    @contextmanager
    def _sql_derived_transaction(self) -> Iterator[Any]:
        """A :meth:`_sql_transaction` whose commit does not wait for the WAL flush
        (``SET LOCAL synchronous_commit = off``; see :meth:`EventStore.transaction`,
        ``derived``).

        A server crash can lose the last such commits, never part of one, and only
        ones after every commit that did wait (the WAL is replayed in order): a read
        model and its offset go back together to an earlier consistent state, which
        its projection re-derives from the log. Lease and node writes stay durable:
        a lost lease grant would let a later grant reuse its fencing token.
        """
        with self.datastore.transaction(commit=True) as cur:
            cur.execute("SET LOCAL synchronous_commit = off")
            yield cur

    @contextmanager
    def _sql_read_transaction(self) -> Iterator[Any]:
        """A ``REPEATABLE READ, READ ONLY`` transaction: every statement sees the snapshot
        taken at the first one, and no writer waits for it."""
        with self.datastore.transaction(commit=False) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cur

    def _sql_cursor(self, cursor: Any) -> SQLCursor:
        return _QmarkCursor(cursor)

    def _lock_schema(self, cursor: Any) -> None:
        # Concurrent ``CREATE TABLE IF NOT EXISTS`` of one table can still fail on
        # PostgreSQL (duplicate key in ``pg_type``), e.g. when several nodes start on a
        # fresh schema: a transaction-scoped advisory lock per schema serialises them.
        key = zlib.crc32(f"meerkat_runtime.read_models:{self.schema}".encode())
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

    def table_name(self, name: str) -> str:
        """Return ``"schema"."name"``, quoted, for use in SQL."""
        return (
            sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name)).as_string()
        )

    def _close_backend(self) -> None:
        with self._heartbeat_lock:
            if self._heartbeat_conn is not None:
                self._heartbeat_conn.close()
        self.datastore.close()


class _QmarkCursor:
    """A psycopg cursor that takes ``?`` placeholders, as every store's read-model cursor does.

    Read-model statements are written once with ``?``; psycopg wants ``%s``. A
    statement must therefore not contain a literal ``?`` or ``%`` outside a parameter
    (the read models' statements never do). A composed statement (``psycopg.sql``)
    passes as it is.
    """

    __slots__ = ("_cur",)
    #: Read models may bind a page as one JSON value here (``Cursor.insert_rows``).
    dialect = "postgresql"

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, statement: Any, params: Any = None, /) -> Any:
        self._cur.execute(_qmark(statement), params)
        return self

    def executemany(self, statement: Any, params_seq: Any, /) -> Any:
        self._cur.executemany(_qmark(statement), params_seq)
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> Any:
        return self._cur.fetchall()

    @property
    def description(self) -> Any:
        return self._cur.description


def _qmark(statement: Any) -> Any:
    return statement.replace("?", "%s") if isinstance(statement, str) else statement
