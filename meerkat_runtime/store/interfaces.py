"""The store's interfaces: small protocols, each a few methods, each a job.

:class:`EventStore` is what :func:`open_store` returns, and every backend
implements the protocols every runtime needs (a session log, a notification
log, an appender, snapshots, a host for read models). A backend that can be
shared by several processes (SQLite files, PostgreSQL) also implements
:class:`LeaseStore` and :class:`NodeRegistry`; ``memory://`` does not, and
code that needs leases asks with :func:`shared_store` instead of calling
methods that would raise. Each protocol has its own conformance suite in the
project's tests, run on every backend that implements it.

Errors: every backend raises the project's errors only. A database that
cannot be used now (connection lost, pool or lock timeout) is
:class:`~meerkat_runtime.errors.StoreUnavailable`; any other database failure
is :class:`~meerkat_runtime.errors.StoreError`. Driver exceptions (sqlite3,
psycopg, eventsourcing's) never leave a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from meerkat_runtime.store._base import (
        AppendTicket,
        Fence,
        Lease,
        NewEvent,
        NodeInfo,
        RecordedEvent,
        Snapshot,
        SQLCursor,
    )

__all__ = [
    "EventAppender",
    "LeaseStore",
    "NodeRegistry",
    "NotificationLog",
    "ReadModelHost",
    "SessionLog",
    "SharedStore",
    "SnapshotStore",
    "shared_store",
]


@runtime_checkable
class SessionLog(Protocol):
    """Per-session event streams, read by version."""

    def read_session(
        self, session_id: str, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """A session's events with ``version > after_version``, in version order."""
        ...

    def read_sessions(self, after_versions: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """Many sessions' events at once (each id a key of the result)."""
        ...

    def session_version(self, session_id: str) -> int:
        """The session's latest version; 0 for an unknown session."""
        ...

    def session_ids(self) -> list[str]:
        """Every session with at least one event, by its first event's position."""
        ...


@runtime_checkable
class NotificationLog(Protocol):
    """The store-wide log, ordered by position: what projections and subscribers follow."""

    def read_all(
        self, after_position: int = 0, limit: int = 500, topics: Sequence[str] = ()
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events with ``position > after_position``, in position order."""
        ...

    def max_position(self) -> int:
        """The highest position; 0 when the log is empty."""
        ...

    def watch_commits(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when another process may have committed; return a stopper."""
        ...


@runtime_checkable
class EventAppender(Protocol):
    """Optimistic appends to one session, answered once durable (group commit underneath)."""

    def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        fence: Fence | None = None,
    ) -> list[RecordedEvent]:
        """Append in one transaction at ``expected_version + 1, ...``; block until durable."""
        ...

    def append_async(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        fence: Fence | None = None,
    ) -> Future[list[RecordedEvent]]:
        """Like :meth:`append`; a future resolves once durable."""
        ...

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
        """Queue an append for a pipelining caller; ``on_done`` reports how it ended."""
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    """A cache of folded session states; a missing or unreadable snapshot is only slower."""

    def save_snapshot(self, session_id: str, version: int, data: dict[str, Any]) -> None:
        """Store ``data`` as the session's state at ``version``; a newer stored one wins."""
        ...

    def load_snapshot(self, session_id: str) -> Snapshot | None:
        """The session's latest readable snapshot, or None."""
        ...

    def load_snapshots(self, session_ids: Sequence[str]) -> dict[str, Snapshot]:
        """The latest readable snapshot of each of ``session_ids`` that has one."""
        ...


@runtime_checkable
class ReadModelHost(Protocol):
    """SQL transactions for read models kept in the store's database.

    Statements take ``?`` placeholders on every backend and rows can be read
    by column name; a read model's rows and its offset written in one
    :meth:`transaction` commit together. Errors are the project's (see the
    module docstring).
    """

    def transaction(self) -> AbstractContextManager[SQLCursor]:
        """A read-write transaction: commits when the block ends, rolls back if it raises."""
        ...

    def read_transaction(self) -> AbstractContextManager[SQLCursor]:
        """A read-only transaction in which every statement sees one consistent state."""
        ...

    def schema_transaction(self) -> AbstractContextManager[SQLCursor]:
        """A :meth:`transaction` for creating tables, serialised with other processes doing
        the same (concurrent ``CREATE TABLE IF NOT EXISTS`` can fail on PostgreSQL)."""
        ...

    def table_name(self, name: str) -> str:
        """``name`` quoted (and schema-qualified where the database has schemas)."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """Leases with fencing tokens: one owner of a name at a time, across processes."""

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
        """Take or renew lease ``name``; return its fencing token (``LeaseUnavailable`` if
        another live owner holds it)."""
        ...

    def acquire_leases(
        self,
        names: Sequence[str],
        owner: str,
        ttl: float,
        *,
        incarnation: str = "",
        process: str = "",
    ) -> dict[str, int]:
        """:meth:`acquire_lease` for many names in one transaction; the fencing tokens of
        those taken or renewed. A name held by another live owner is left out (never
        stolen: the caller decides about those one at a time)."""
        ...

    def release_leases(self, names: Sequence[str], owner: str, *, incarnation: str = "") -> None:
        """:meth:`release_lease` for many names in one transaction."""
        ...

    def renew_leases(
        self, names: Sequence[str], owner: str, ttl: float, *, incarnation: str = ""
    ) -> set[str]:
        """Extend the leases ``owner`` still holds among ``names``; return those renewed."""
        ...

    def release_lease(self, name: str, owner: str, *, incarnation: str = "") -> None:
        """Let lease ``name`` expire now if ``owner`` holds it (its token is kept)."""
        ...

    def list_leases(self, prefix: str = "") -> list[Lease]:
        """Every lease whose name starts with ``prefix``."""
        ...

    def clock(self) -> datetime:
        """The time lease expiries are measured in (the database server's on PostgreSQL)."""
        ...


@runtime_checkable
class NodeRegistry(Protocol):
    """The runtime processes (nodes) sharing a store, by heartbeat."""

    def heartbeat_node(
        self, node_id: str, info: dict[str, Any] | None = None, *, incarnation: str | None = None
    ) -> None:
        """Record that node ``node_id`` is alive now."""
        ...

    def remove_node(self, node_id: str, incarnation: str | None = None) -> None:
        """Delete the node's row if it is still ``incarnation``'s (a clean exit)."""
        ...

    def prune_nodes(self, retention_ttls: float) -> int:
        """Delete the rows of nodes silent for ``retention_ttls`` lease TTLs; return how many."""
        ...

    def list_nodes(self) -> list[NodeInfo]:
        """Every node that heartbeated and was not removed or pruned, most recent first."""
        ...


@runtime_checkable
class SharedStore(LeaseStore, NodeRegistry, Protocol):
    """A store several runtime processes can share: leases and the node registry."""


def shared_store(store: object) -> SharedStore | None:
    """``store`` if it offers leases and the node registry, else None (``memory://``)."""
    return store if isinstance(store, SharedStore) else None
