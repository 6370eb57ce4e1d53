"""The event store interface and the machinery every backend shares (validation, group commit)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal, ParamSpec, Protocol, Self, TypeVar, cast

from eventsourcing.persistence import StoredEvent

from meerkat_runtime.errors import StoreError, StoreUnavailable, UndecodableEvent
from meerkat_runtime.store._group_commit import DURABLE, AppendTicket, CommitStats, GroupCommit, Row
from meerkat_runtime.store._mapper import EventCodec, MalformedEvent, Serializer
from meerkat_runtime.store.interfaces import SharedStore

__all__ = [
    "AppendTicket",
    "CommitStats",
    "EventStore",
    "NewEvent",
    "RecordedEvent",
    "SQLCursor",
    "Snapshot",
    "StoreOptions",
    "UnreadableInLog",
]

logger = logging.getLogger("meerkat_runtime.store")

MAX_SESSION_ID_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: a registered ``topic`` and a JSON-native ``data`` dict."""

    topic: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored.

    ``version`` is its 1-based place in the session's stream; ``position`` its
    place in the store-wide log (ordered, possibly with gaps); ``data`` is
    upcast to the topic's current schema; ``writer`` is the incarnation id of
    the store instance that appended it.
    """

    session_id: str
    version: int
    position: int
    topic: str
    data: dict[str, Any]
    writer: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A session's folded state ``data`` as of session ``version``."""

    session_id: str
    version: int
    data: dict[str, Any]


class SQLCursor(Protocol):
    """The DB-API cursor :meth:`EventStore.transaction` yields.

    Statements take ``?`` placeholders on every backend; rows can be indexed by column
    name.
    """

    def execute(self, statement: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, statement: Any, params_seq: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Validated keyword options of :func:`open_store` (see its docstring)."""

    snapshot_interval: int = 100
    sqlite_synchronous: Literal["full", "normal"] = "full"
    group_commit: bool = True
    max_batch_events: int = 1000
    max_batch_wait: float = 0.0
    cipher_key: str | None = field(default=None, repr=False)
    compress: bool = False
    pool_size: int = 5
    lock_timeout: float = 10.0
    connect_timeout: float = 5.0
    store_timeout: float = 30.0
    read_only: bool = False
    create_schema: Literal["auto", "force", "never"] = "auto"

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> StoreOptions:
        """Build options from keyword arguments; ``StoreError`` names any bad one."""
        known = cls.__dataclass_fields__
        if unknown := sorted(set(options) - set(known)):
            raise StoreError(
                f"unknown store option(s) {', '.join(map(repr, unknown))}; "
                f"known options are {', '.join(sorted(known))}"
            )
        for name in ("group_commit", "compress", "read_only"):
            if name in options and type(options[name]) is not bool:
                raise StoreError(f"store option {name!r} must be True or False")
        for name, minimum in (("snapshot_interval", 0), ("max_batch_events", 1), ("pool_size", 1)):
            value = options.get(name, minimum)
            if type(value) is not int or value < minimum:
                raise StoreError(f"store option {name!r} must be an int >= {minimum}")
        for name in ("max_batch_wait", "lock_timeout", "connect_timeout"):
            value = options.get(name, 0.0)
            if type(value) not in (int, float) or not value >= 0:
                raise StoreError(f"store option {name!r} must be a number of seconds >= 0")
        value = options.get("store_timeout", 1.0)
        if type(value) not in (int, float) or not 0 < value < float("inf"):
            raise StoreError("store option 'store_timeout' must be a number of seconds > 0")
        if options.get("sqlite_synchronous", "full") not in ("full", "normal"):
            raise StoreError("store option 'sqlite_synchronous' must be 'full' or 'normal'")
        if options.get("create_schema", "auto") not in ("auto", "force", "never"):
            raise StoreError(
                "store option 'create_schema' must be 'auto' (create the tables in an empty "
                "database or one that has them), 'force' (also add them to a database "
                "holding other tables) or 'never'"
            )
        if options.get("cipher_key") is not None and not isinstance(options["cipher_key"], str):
            raise StoreError("store option 'cipher_key' must be a str")
        return cls(**options)


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease an append must still hold when it commits (stores with ``supports_leases``).

    Checked inside the append's own transaction, with the lease row locked
    against a takeover until the commit: an owner that lost its lease cannot write.
    """

    lease: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease row: who holds ``name``, with which fencing token, until when.

    ``owner`` is the node id; ``incarnation`` the holder's process start (a new one
    each time a node starts, so a restarted node fences its previous life);
    ``process`` identifies the holder's operating-system process (see
    ``meerkat_runtime.cluster.process_key``), so a holder on this host that is
    known dead need not be waited for.
    """

    name: str
    owner: str
    token: int
    expires_at: datetime
    live: bool
    incarnation: str = ""
    process: str = ""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A runtime node as recorded in the store."""

    node_id: str
    incarnation: str
    started_at: datetime
    heartbeat_at: datetime
    info: dict[str, Any]


class UnreadableInLog(UndecodableEvent):
    """:meth:`EventStore.read_all` met an event it cannot read: the error names it, and
    ``before`` holds the events of the page that precede it (readers go on from them)."""

    def __init__(self, cause: UndecodableEvent, before: list[RecordedEvent]) -> None:
        super().__init__(cause.session_id, cause.version, cause.position, cause.topic, cause.detail)
        self.before = before


_P = ParamSpec("_P")
_T = TypeVar("_T")


class EventStore(ABC):
    """An append-only store of per-session event streams plus a store-wide ordered log.

    Open one with :func:`open_store`. Appends are optimistic: each names the
    version its writer folded (``expected_version``) and fails with
    :class:`ConcurrencyConflict` if the session has moved on, writing nothing.
    Appends of one store instance go through a single writer thread that
    commits the appends queued together from many sessions in one
    transaction ("group commit", :mod:`~meerkat_runtime.store._group_commit`);
    each caller is answered after the commit. Appends behave as if executed one
    by one in arrival order.

    It implements the protocols of :mod:`meerkat_runtime.store.interfaces`
    (session log, notification log, appender, snapshots, read-model host); a
    backend shared by several processes adds leases and nodes (:meth:`shared`).
    A backend supplies row operations (the ``_insert`` / ``_select_*`` hooks),
    its SQL transactions and its driver's error classes; this class does the
    validation, encoding, error mapping and the rest.

    Thread-safe; use as a context manager or call :meth:`close`.
    """

    url: str
    """The store URL with any password masked."""
    incarnation: str
    """Writer id recorded on every event this instance appends."""
    snapshot_interval: int
    """Callers take a snapshot every this many events (0 = never)."""
    codec: EventCodec
    """The topics this store can write and read."""
    serializer: Serializer
    """The byte chain of stored events and snapshots (codec, zlib, AES-GCM)."""
    in_memory: bool = False
    """Whether the store lives in this process's memory (``memory://``): nothing of it
    outlives the process, and reading its log costs no I/O."""
    _unavailable_errors: tuple[type[Exception], ...] = ()
    """The backend driver's errors that mean the database cannot be used now."""
    _database_errors: tuple[type[Exception], ...] = ()
    """Every other error of the backend's driver (mapped to :class:`StoreError`)."""

    def __init__(
        self,
        *,
        url: str,
        codec: EventCodec,
        incarnation: str,
        options: StoreOptions,
        secrets: Sequence[str] = (),
    ) -> None:
        self.url = url
        self.incarnation = incarnation
        self.read_only = options.read_only
        self.snapshot_interval = options.snapshot_interval
        self.codec = codec
        self.serializer = Serializer(
            codec, compress=options.compress, cipher_key=options.cipher_key
        )
        self._secrets = tuple(s for s in secrets if s)
        self._closed = False
        self.supports_leases = isinstance(self, SharedStore)
        """True when this store offers leases, the node registry and fenced appends
        (SQLite files, PostgreSQL): it is a :class:`~meerkat_runtime.store.SharedStore`."""
        self._commits = GroupCommit(
            self,
            url=url,
            enabled=options.group_commit,
            max_batch_events=options.max_batch_events,
            max_batch_wait=options.max_batch_wait,
            recorded=self._recorded,
            unseal=self.serializer.unseal,
            scrub=self._scrub,
        )

    def _start(self) -> None:
        """Start the writer thread; backends call this once their database is ready."""
        self._commits.start()

    # -- public API -----------------------------------------------------------------------

    def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        fence: Fence | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to a session in one transaction; return them once durable.

        Their versions are ``expected_version + 1``, ``+ 2``, ... Raises
        :class:`ConcurrencyConflict` (nothing written) if the session is not at
        ``expected_version``, :class:`LeaseUnavailable` (nothing written) if
        ``fence`` no longer holds, :class:`StoreError` on any other failure.
        """
        if self._commits.on_writer_thread():
            raise StoreError("append from a store listener would wait for itself: use append_async")
        return self.append_async(session_id, expected_version, events, fence=fence).result()

    def append_async(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        fence: Fence | None = None,
    ) -> Future[list[RecordedEvent]]:
        """Like :meth:`append`, but return a future that resolves once the events are durable.

        Argument errors (bad id, unregistered topic, payload that is not
        JSON-native) raise :class:`StoreError` at once.
        """
        future: Future[list[RecordedEvent]] = Future()
        if not events:
            self._check_args(session_id, expected_version, fence)
            future.set_result([])
            return future
        self._queue_append(session_id, expected_version, events, fence, future, None, None)
        return future

    def submit_append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        on_done: Callable[[BaseException | None], None],
        fence: Fence | None = None,
        after: AppendTicket | None = None,
        verified: bool = False,
    ) -> AppendTicket:
        """Queue an append for a caller that pipelines; ``on_done`` reports how it ended.

        ``on_done(None)`` once the events are durable, ``on_done(error)`` once it
        is known that nothing of them was written (the errors of :meth:`append`).
        It runs on the committing thread (the writer thread under group commit,
        else this one, before this returns), so it must be quick and must not
        wait for an append. Cheaper than :meth:`append_async`: no future and no
        :class:`RecordedEvent` objects are built.

        ``after`` is the ticket of the caller's previous append if that one may
        still be in flight: when it fails, this one is not attempted and fails
        with :class:`StoreError`, so events decided on top of events that never
        became durable are never written, whatever the session's version is by
        then. Argument errors raise :class:`StoreError` at once.

        ``verified``: the caller vouches that every payload reads back into its event
        (the codec's ``check`` is skipped). The runtime's accept path sets it for
        events decided from an input it has just decoded from its wire form.
        """
        if not events:
            self._check_args(session_id, expected_version, fence)
            ticket = AppendTicket(session_id, expected_version, [], None, [], None)
            ticket.outcome = DURABLE
            on_done(None)
            return ticket
        return self._queue_append(
            session_id, expected_version, events, fence, None, on_done, after, verified
        )

    def _check_args(self, session_id: str, expected_version: int, fence: Fence | None) -> None:
        self._check_writable()
        self._check_session_id(session_id)
        if type(expected_version) is not int or expected_version < 0:
            raise StoreError(f"expected_version must be an int >= 0, got {expected_version!r}")
        if fence is not None and not self.supports_leases:
            raise StoreError(
                f"fenced appends need a store with leases (SQLite file or PostgreSQL), "
                f"not {self.url}"
            )

    def _queue_append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        fence: Fence | None,
        future: Future[list[RecordedEvent]] | None,
        on_done: Callable[[BaseException | None], None] | None,
        after: AppendTicket | None,
        verified: bool = False,
    ) -> AppendTicket:
        self._check_args(session_id, expected_version, fence)
        pending = self._encode(session_id, expected_version, events, future, verified)
        pending.fence = fence
        pending.on_done = on_done
        pending.after = after
        self._commits.submit(pending, self._check_open, may_defer=on_done is not None)
        return pending

    def read_session(
        self, session_id: str, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Return a session's events with ``version > after_version``, in version order."""
        self._check_open()
        self._check_session_id(session_id)
        rows = self._guard("read session", self._select_session, session_id, after_version, limit)
        if rows:
            self._commits.learn_version(session_id, rows[-1][2])
        return [self._decode(row) for row in rows]

    def session_version(self, session_id: str) -> int:
        """Return the session's latest version; 0 for an unknown session."""
        self._check_open()
        self._check_session_id(session_id)
        version = self._guard("read session version", self._current_version, session_id)
        self._commits.learn_version(session_id, version)
        return version

    def read_all(
        self, after_position: int = 0, limit: int = 500, topics: Sequence[str] = ()
    ) -> list[RecordedEvent]:
        """Return up to ``limit`` events of the store-wide log with ``position > after_position``.

        In position order; ``topics`` restricts the result to those topics.
        Positions may have gaps: page with the last position seen. An event that
        cannot be read raises :class:`UnreadableInLog`, which holds the page's
        events before it (every read of a session raises :class:`UndecodableEvent`).
        """
        self._check_open()
        if type(limit) is not int or limit < 1:
            raise StoreError(f"limit must be an int >= 1, got {limit!r}")
        rows = self._guard("read the log", self._select_all, after_position, limit, list(topics))
        out: list[RecordedEvent] = []
        for row in rows:
            try:
                out.append(self._decode(row))
            except UndecodableEvent as e:
                raise UnreadableInLog(e, out) from None
        return out

    def max_position(self) -> int:
        """Return the highest position in the log; 0 when the store is empty."""
        self._check_open()
        return self._guard("read the max position", self._max_position)

    def session_ids(self) -> list[str]:
        """Return every session with at least one event, ordered by its first event's position."""
        self._check_open()
        return self._guard("list sessions", self._session_ids)

    def save_snapshot(self, session_id: str, version: int, data: dict[str, Any]) -> None:
        """Store ``data`` as the session's state at ``version``; a newer stored one wins."""
        self._check_open()
        self._check_writable()
        self._check_session_id(session_id)
        if type(version) is not int or version < 1:
            raise StoreError(f"snapshot version must be an int >= 1, got {version!r}")
        state = self.serializer.encode_snapshot(data, self.incarnation)
        self._guard("save a snapshot", self._put_snapshot, session_id, version, state)

    def load_snapshot(self, session_id: str) -> Snapshot | None:
        """Return the session's latest snapshot, or None.

        An unreadable snapshot (corrupt, other cipher key) is logged as a
        warning and treated as absent: snapshots are only a cache.
        """
        self._check_open()
        self._check_session_id(session_id)
        found = self._guard("load a snapshot", self._get_snapshot, session_id)
        if found is None:
            return None
        return self._snapshot(session_id, *found)

    def read_sessions(self, after_versions: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """Many sessions' events at once: for each id, those with ``version > after_versions[id]``.

        Every requested id is a key of the result (an empty list when it has
        no such events), each list in version order. Backends read many
        sessions per query, which is what batch recovery needs.
        """
        return {sid: list(events) for sid, events in self.iter_sessions(after_versions)}

    def iter_sessions(
        self, after_versions: Mapping[str, int]
    ) -> Iterator[tuple[str, Iterator[RecordedEvent]]]:
        """:meth:`read_sessions`, one session at a time, each session's events decoded
        as they are iterated.

        The rows are read with the same few queries; decoding a session's events only
        when its turn comes keeps few decoded payloads alive at once (decoding every
        session first, then folding, costs measurably more), and an event that cannot
        be read (:class:`UndecodableEvent`) is raised while iterating its own session
        only. Sessions come in the order requested.
        """
        self._check_open()
        for session_id in after_versions:
            self._check_session_id(session_id)
        grouped: dict[str, list[Row]] = {sid: [] for sid in after_versions}
        if grouped:
            rows = self._guard("read sessions", self._select_sessions, list(after_versions.items()))
            for row in rows:
                grouped[row[1]].append(row)
        for session_id, session_rows in grouped.items():
            session_rows.sort(key=_row_version)
            if session_rows:
                self._commits.learn_version(session_id, session_rows[-1][2])
        return ((sid, map(self._decode, rows)) for sid, rows in grouped.items())

    def load_snapshots(self, session_ids: Sequence[str]) -> dict[str, Snapshot]:
        """The latest snapshot of each of ``session_ids`` that has a readable one.

        Like :meth:`load_snapshot` for many sessions with few queries; an
        unreadable snapshot is logged and left out.
        """
        self._check_open()
        for session_id in session_ids:
            self._check_session_id(session_id)
        found = self._guard("load snapshots", self._get_snapshots, list(dict.fromkeys(session_ids)))
        out: dict[str, Snapshot] = {}
        for session_id, (version, state) in found.items():
            snapshot = self._snapshot(session_id, version, state)
            if snapshot is not None:
                out[session_id] = snapshot
        return out

    def _snapshot(self, session_id: str, version: int, state: bytes) -> Snapshot | None:
        """A stored snapshot decoded, or None (logged) when it cannot be read: only a cache."""
        try:
            data = self.serializer.decode_snapshot(state)
        except StoreError as e:
            logger.warning(
                "ignoring unreadable snapshot of session %r at version %d in %s: %s",
                session_id,
                version,
                self.url,
                self._scrub(str(e)),
            )
            return None
        return Snapshot(session_id, version, data)

    def batch(self) -> AbstractContextManager[None]:
        """Hold the appends this thread submits with :meth:`submit_append` until the block
        ends, then hand them to the writer together: one group commit for a whole turn
        of work. Any other append, and :meth:`flush_batch`, queue the held ones first."""
        return self._commits.batch()

    def hold_appends(self) -> None:
        """Like entering :meth:`batch` for the rest of this thread's life: its pipelined
        appends wait until :meth:`flush_batch` (what a session host does each turn)."""
        self._commits.hold_appends()

    def flush_batch(self) -> None:
        """Queue the appends held by this thread's :meth:`batch` now (before waiting)."""
        self._commits.flush_batch()

    def queued_appends(self) -> int:
        """Appends queued for the writer thread and not yet taken (approximate)."""
        return self._commits.queued()

    @property
    def commit_stats(self) -> CommitStats:
        """The group-commit writer's counters (groups committed, appends in them)."""
        return self._commits.stats

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(max_position)`` after each durable commit of this instance.

        It runs on the committing thread (the writer thread under group
        commit), before the appenders are answered, so it must be quick and
        must not wait for an append: meant to wake projections.
        """
        self._commits.add_listener(callback)

    def observe_commits(self, callback: Callable[[int, int, float], None]) -> Callable[[], None]:
        """Call ``callback(appends, events, seconds)`` after each commit of this instance's
        writer (one transaction; for metrics); return a function that stops it."""
        return self._commits.observe(callback)

    def shared(self) -> SharedStore:
        """This store's leases and node registry; :class:`StoreError` on a store that has
        none (``memory://``: one process only)."""
        if not isinstance(self, SharedStore):
            raise StoreError(
                f"leases need a shared store (SQLite file or PostgreSQL), not {self.url}"
            )
        return self

    def watch_commits(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when another process may have committed events; return a stopper.

        Commits of this instance are already reported by :meth:`add_listener`.
        Backends that can hear other processes (PostgreSQL's LISTEN/NOTIFY)
        override this; elsewhere it does nothing and readers poll. A missed
        notification only delays a reader until its next poll.
        """
        return _no_op

    # -- read models (ReadModelHost) --------------------------------------------------------

    @contextmanager
    def transaction(self, *, derived: bool = False) -> Iterator[SQLCursor]:
        """Open a read-write transaction in the store's database and yield its cursor.

        Commits when the block ends, rolls back if it raises. Statements take ``?``
        placeholders and rows can be read by column name on every backend; database
        errors raise :class:`StoreUnavailable` or :class:`StoreError`, other exceptions
        pass unchanged. For projections that write their read-model tables and
        tracking position atomically. On ``memory://`` stores it is a private
        in-memory SQLite database that lives as long as the store's data.

        ``derived=True`` says that everything the transaction writes can be derived
        again from the log (a read model's rows and its offset, together): the
        backend may then commit it without waiting for the disk. On a SQLite file
        with ``synchronous=FULL`` it commits with ``synchronous=NORMAL``: still
        atomic, and every later ``FULL`` commit (any append) makes it durable as
        well, but a power loss before one may roll it back, to an earlier
        consistent state that the projection re-derives from the log.
        """
        begin = self._sql_derived_transaction if derived else self._sql_transaction
        with self._mapped("use the read models"), begin() as cur:
            yield self._sql_cursor(cur)

    @contextmanager
    def read_transaction(self) -> Iterator[SQLCursor]:
        """Open a read-only transaction that sees one consistent state of the database.

        Every statement in it reads the same committed state (a snapshot), so a
        read model's offset and its rows read together agree with each other even
        while writers go on; nothing written in it is kept. For ``verify``.
        """
        with self._mapped("read the read models"), self._sql_read_transaction() as cur:
            yield self._sql_cursor(cur)

    @contextmanager
    def schema_transaction(self) -> Iterator[SQLCursor]:
        """A :meth:`transaction` for creating read-model tables, serialised with other
        processes doing the same."""
        with self._mapped("create read-model tables"), self._sql_transaction() as cur:
            self._lock_schema(cur)
            yield self._sql_cursor(cur)

    def table_name(self, name: str) -> str:
        """Return ``name`` quoted (and schema-qualified on PostgreSQL) for use in SQL."""
        return _quote_identifier(name)

    @abstractmethod
    def _sql_transaction(self) -> AbstractContextManager[Any]:
        """The backend's read-write transaction, yielding its driver's cursor."""

    def _sql_derived_transaction(self) -> AbstractContextManager[Any]:
        """The backend's read-write transaction for rows derived from the log (see
        :meth:`transaction`); by default the same as any other."""
        return self._sql_transaction()

    def _sql_read_transaction(self) -> AbstractContextManager[Any]:
        """The backend's consistent read-only transaction (default: a read-write one,
        consistent where the backend serialises transactions)."""
        return self._sql_transaction()

    def _sql_cursor(self, cursor: Any) -> SQLCursor:
        """The driver's cursor as callers use it (``?`` placeholders); backends adapt."""
        return cast(SQLCursor, cursor)

    def _lock_schema(self, cursor: Any) -> None:
        """Serialise schema creation with other processes until the commit (backends
        whose transactions do not already serialise it)."""
        return None  # SQLite and memory: a write transaction already excludes the others

    def _mapped(self, what: str) -> AbstractContextManager[None]:
        """Raise the driver's errors as the project's: the one place they are mapped."""
        return mapped_errors(
            what, self.url, self._unavailable_errors, self._database_errors, self._scrub
        )

    def close(self) -> None:
        """Commit what is queued, stop the writer thread and release the database. Idempotent."""
        self._closed = True
        if not self._commits.close():
            return
        try:
            self._close_backend()
        except Exception:
            logger.exception("error while closing store %s", self.url)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # -- backend hooks ----------------------------------------------------------------------

    @abstractmethod
    def _insert(self, stored: Sequence[StoredEvent], fences: Sequence[Fence] = ()) -> list[int]:
        """Insert in one transaction; return the positions in order.

        Raises eventsourcing's ``IntegrityError`` if any (session, version) exists,
        :class:`LeaseUnavailable` if any fence does not hold (backends with leases).
        """

    @abstractmethod
    def _select_session(self, session_id: str, after_version: int, limit: int | None) -> list[Row]:
        """Return a session's rows with version > after_version, in version order."""

    @abstractmethod
    def _select_all(self, after_position: int, limit: int, topics: list[str]) -> list[Row]:
        """Return log rows with position > after_position, in position order."""

    @abstractmethod
    def _current_version(self, session_id: str) -> int:
        """Return the session's highest version, 0 if none."""

    @abstractmethod
    def _max_position(self) -> int:
        """Return the highest position, 0 if none."""

    @abstractmethod
    def _session_ids(self) -> list[str]:
        """Return the sessions in order of their first event's position."""

    @abstractmethod
    def _put_snapshot(self, session_id: str, version: int, state: bytes) -> None:
        """Upsert the session's snapshot unless a newer one is stored."""

    @abstractmethod
    def _get_snapshot(self, session_id: str) -> tuple[int, bytes] | None:
        """Return the session's stored snapshot as (version, bytes)."""

    @abstractmethod
    def _close_backend(self) -> None:
        """Release connections."""

    def _select_sessions(self, after_versions: list[tuple[str, int]]) -> list[Row]:
        """Rows of many sessions, each with version > its bound (any order; backends batch)."""
        rows: list[Row] = []
        for session_id, after_version in after_versions:
            rows.extend(self._select_session(session_id, after_version, None))
        return rows

    def _get_snapshots(self, session_ids: list[str]) -> dict[str, tuple[int, bytes]]:
        """Stored snapshots of many sessions as {id: (version, bytes)} (backends batch)."""
        out: dict[str, tuple[int, bytes]] = {}
        for session_id in session_ids:
            found = self._get_snapshot(session_id)
            if found is not None:
                out[session_id] = found
        return out

    # -- encoding and decoding --------------------------------------------------------------

    def _encode(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        future: Future[list[RecordedEvent]] | None,
        verified: bool = False,
    ) -> AppendTicket:
        topics: list[str] = []
        stored: list[StoredEvent] = []
        serializer, writer = self.serializer, self.incarnation
        # The payload as read back is only needed for the RecordedEvents a future returns.
        datas: list[dict[str, Any]] | None = [] if future is not None else None
        for offset, event in enumerate(events, start=1):
            if not isinstance(event, NewEvent):
                raise StoreError(f"events must be NewEvent objects, got {type(event).__name__}")
            if datas is not None:
                state, as_read = serializer.encode_event(event.topic, event.data, writer)
                datas.append(as_read)
            else:
                state = serializer.encode_event_bytes(
                    event.topic, event.data, writer, check=not verified
                )
            topics.append(event.topic)
            stored.append(StoredEvent(session_id, expected_version + offset, event.topic, state))
        return AppendTicket(session_id, expected_version, topics, datas, stored, future)

    def _decode(self, row: Row) -> RecordedEvent:
        position, session_id, version, topic, state = row
        try:
            data, writer = self.serializer.decode_event(topic, state)
        except MalformedEvent as e:
            raise UndecodableEvent(session_id, version, position, topic, str(e)) from None
        except StoreError as e:
            raise StoreError(
                f"cannot read event {version} of session {session_id!r} (topic {topic!r}) "
                f"in store {self.url}: {e}"
            ) from e
        return RecordedEvent(session_id, version, position, topic, data, writer)

    def _recorded(self, pending: AppendTicket, positions: Sequence[int]) -> list[RecordedEvent]:
        assert pending.datas is not None
        return [
            RecordedEvent(
                pending.session_id,
                pending.expected_version + offset,
                position,
                topic,
                data,
                self.incarnation,
            )
            for offset, (position, topic, data) in enumerate(
                zip(positions, pending.topics, pending.datas, strict=True), start=1
            )
        ]

    # -- helpers ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.url} is closed")

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"store {self.url} is open read-only: nothing can be written")

    @staticmethod
    def _check_session_id(session_id: str) -> None:
        if not isinstance(session_id, str) or not 1 <= len(session_id) <= MAX_SESSION_ID_LENGTH:
            raise StoreError(
                f"session id must be a str of 1 to {MAX_SESSION_ID_LENGTH} characters, "
                f"got {session_id!r:.80}"
            )
        if "\x00" in session_id:
            raise StoreError("session id must not contain NUL characters")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _guard(self, what: str, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except self._unavailable_errors as e:
            raise store_error(StoreUnavailable, what, self.url, e, self._scrub) from None
        except Exception as e:
            raise store_error(StoreError, what, self.url, e, self._scrub) from None


@contextmanager
def mapped_errors(
    what: str,
    where: str,
    unavailable: tuple[type[Exception], ...],
    database: tuple[type[Exception], ...],
    scrub: Callable[[str], str],
) -> Iterator[None]:
    """Raise a driver's ``unavailable`` errors as :class:`StoreUnavailable` and its other
    ``database`` errors as :class:`StoreError`, naming ``what`` failed ``where``; every
    other exception passes unchanged."""
    try:
        yield
    except StoreError:
        raise
    except unavailable as e:
        raise store_error(StoreUnavailable, what, where, e, scrub) from None
    except database as e:
        raise store_error(StoreError, what, where, e, scrub) from None


def store_error(
    kind: type[StoreError],
    what: str,
    where: str,
    cause: BaseException,
    scrub: Callable[[str], str],
) -> StoreError:
    """``kind`` naming ``what`` failed in store ``where`` and why, secrets masked; chained to
    ``cause`` unless its text shows a secret (a logged traceback would print it)."""
    detail = scrub(str(cause))
    error = kind(f"cannot {what} in store {where}: {type(cause).__name__}: {detail}")
    if detail == str(cause):
        error.__cause__ = cause
    error.__suppress_context__ = True
    return error


def _row_version(row: Row) -> int:
    return row[2]


def _no_op() -> None:
    return None


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
