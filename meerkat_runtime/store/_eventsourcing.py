"""What the store uses of eventsourcing beyond its public API, in one place, and why.

The library's public API serves most of the store: datastores, connection
pools, recorders' ``insert_events`` / ``select_events`` /
``select_notifications``, their table statements. Three needs it does not
serve, each isolated here behind one function or class; the project's test
``tests/store/test_eventsourcing_seams.py`` fails loudly, naming the seam,
if a release of the library changes any of them.

1. **The raw ``sqlite3`` connection** of a pooled ``SQLiteConnection``
   (``conn._sqlite_conn``). The library offers no setting for
   ``PRAGMA synchronous`` and only deferred ``BEGIN`` transactions; the store
   needs ``synchronous=FULL`` on every connection, ``BEGIN IMMEDIATE`` for
   writers (a deferred transaction that reads, then writes, fails at once with
   "database is locked" when another writer committed in between) and a
   deferred ``BEGIN`` that it rolls back for consistent reads.
2. **Inserting inside a transaction the store opened** (SQLite's
   ``_insert_events(cursor, stored)``): a fenced append checks its leases and
   inserts in one write transaction; the public ``insert_events`` opens its own.
3. **PostgreSQL's append** (``_postgres.FencedPostgresRecorder``): the library's
   ``insert_events`` re-raises a non-database error only after its block has
   committed, which can half-commit an append, has no place for the fence
   check, and holds the events table lock across several round trips. The
   recorder appends with one server-side function of its own instead, which
   uses the library's table, table lock and NOTIFY channel (``channel_name``);
   it passes the events as plain arrays, not as the library's stored-event type.
   It lives in ``_postgres.py`` because psycopg is an optional dependency.

:func:`recorder_of` hands the recorder under a store to tests that fault it
and to benchmarks that measure the library alone; nothing in the runtime uses it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteConnection, SQLiteCursor

__all__ = ["raw_sqlite_connection", "recorder_of", "sqlite_insert_in"]


def raw_sqlite_connection(conn: SQLiteConnection) -> sqlite3.Connection:
    """The ``sqlite3.Connection`` inside one of the library's pooled connections (seam 1)."""
    raw = conn._sqlite_conn
    if not isinstance(raw, sqlite3.Connection):  # pragma: no cover - a library change
        raise TypeError(f"eventsourcing's SQLiteConnection._sqlite_conn is {type(raw).__name__}")
    return raw


def sqlite_insert_in(
    recorder: SQLiteApplicationRecorder, cursor: SQLiteCursor, stored: Sequence[StoredEvent]
) -> list[int]:
    """Insert ``stored`` with the library's statements inside the caller's transaction;
    return their notification ids (seam 2)."""
    ids: Any = recorder._insert_events(cursor, stored)
    if ids is None:  # pragma: no cover - a library change
        raise TypeError("eventsourcing's SQLite _insert_events returned no notification ids")
    return list(ids)


def recorder_of(store: object) -> ApplicationRecorder:
    """The library's recorder under a store, for tests that fault it and benchmarks that
    measure it alone. Writing through it bypasses the codec and the version checks."""
    recorder = getattr(store, "_recorder", None)
    if recorder is None:
        recorder = getattr(getattr(store, "_db", None), "events", None)
    if not isinstance(recorder, ApplicationRecorder):
        raise TypeError(f"{store!r} has no eventsourcing recorder")
    return recorder
