"""The event store: per-session event streams plus one store-wide ordered log.

Domain-agnostic: it stores JSON-native dict payloads under topics registered
in an :class:`EventCodec`, which also upcasts old payloads on read. Three
backends share one interface (:class:`EventStore`), all built on the
``eventsourcing`` library's recorders: ``memory://`` (POPO recorder),
``sqlite:///path.db`` (SQLite, WAL) and ``postgresql://...``. Open one with
:func:`open_store`::

    codec = EventCodec()
    codec.register("input.accepted")
    with open_store("sqlite:///runtime.db", codec=codec) as store:
        store.append("s-1", 0, [NewEvent("input.accepted", {"input_id": "i-1"})])
        events = store.read_session("s-1")

Durability and concurrency. ``append`` returns once its events are committed
(on SQLite with ``synchronous=FULL`` unless ``sqlite_synchronous="normal"``).
All events of one call are written in one transaction at versions
``expected_version + 1, ...``; if the session is not exactly at
``expected_version`` nothing is written and :class:`ConcurrencyConflict` is
raised. One writer thread per store commits the appends that are queued at
the same moment, across sessions, in one transaction (group commit); if that
transaction hits a version clash the appends are retried one by one, so only
the clashing one fails. Results are the same as if each append ran alone in
arrival order. A caller that sends a second append based on a first one that
has not been confirmed must itself treat a failure of the first as
invalidating the second: versions alone cannot tell. An append whose exact
events (same topics, payloads and writer) are already stored at its versions
succeeds without writing again, so retrying an append whose commit
acknowledgement was lost is safe.

Gap safety of positions. ``read_all`` pages by position (the recorder's
notification id), and a reader that has seen position *n* must never later
find a newly committed event below *n*. Positions may have gaps, but no gap
is ever filled afterwards:

* SQLite allows one writing transaction at a time on a database, and the
  position is the table's ``rowid``, chosen inside that transaction as the
  current maximum plus one; transactions therefore commit in position order.
  Events are never deleted, so no ``rowid`` is reused.
* PostgreSQL: every append is one call of the store's server-side function
  (``_postgres.APPEND_FUNCTION``), which takes eventsourcing's lock,
  ``LOCK TABLE <events> IN EXCLUSIVE MODE``, before its ``INSERT``. That
  lock conflicts with itself and with the ``ROW EXCLUSIVE`` lock of any other
  insert, and is held until commit, so each transaction draws all its
  ``bigserial`` ids and commits before the next one draws any: commit order is
  id order. Plain ``SELECT`` takes ``ACCESS SHARE``, which ``EXCLUSIVE`` allows,
  so readers never block. Ids of rolled-back transactions stay unused (gaps).
  This store never sets the datastore's ``enable_db_functions``, whose
  server-side insert function takes no table lock.
* memory: ids are assigned and appended under one lock.

Interfaces. :class:`EventStore` implements small protocols
(``store.interfaces``): :class:`SessionLog`, :class:`NotificationLog`,
:class:`EventAppender` (group commit, its own component), :class:`SnapshotStore`
and :class:`ReadModelHost`; stores shared by several processes (SQLite files,
PostgreSQL) also :class:`LeaseStore` and :class:`NodeRegistry`
(:meth:`EventStore.shared`). Backends raise the project's errors only
(:class:`~meerkat_runtime.errors.StoreUnavailable`, :class:`StoreError`).

Projections that keep read models in the same database use
:meth:`EventStore.transaction` to write their rows and their position in one
transaction (a private in-memory SQLite database on ``memory://``).
"""

from meerkat_runtime.store._base import (
    AppendTicket,
    CommitStats,
    EventStore,
    Fence,
    Lease,
    NewEvent,
    NodeInfo,
    RecordedEvent,
    Snapshot,
    SQLCursor,
    StoreOptions,
    UnreadableInLog,
)
from meerkat_runtime.store._journal import Recovered, SessionJournal
from meerkat_runtime.store._mapper import EventCodec, Upcaster
from meerkat_runtime.store._open import open_store
from meerkat_runtime.store.interfaces import (
    EventAppender,
    LeaseStore,
    NodeRegistry,
    NotificationLog,
    ReadModelHost,
    SessionLog,
    SharedStore,
    SnapshotStore,
    shared_store,
)

__all__ = [
    "AppendTicket",
    "CommitStats",
    "EventAppender",
    "EventCodec",
    "EventStore",
    "Fence",
    "Lease",
    "LeaseStore",
    "NewEvent",
    "NodeInfo",
    "NodeRegistry",
    "NotificationLog",
    "ReadModelHost",
    "RecordedEvent",
    "Recovered",
    "SQLCursor",
    "SessionJournal",
    "SessionLog",
    "SharedStore",
    "Snapshot",
    "SnapshotStore",
    "StoreOptions",
    "UnreadableInLog",
    "Upcaster",
    "open_store",
    "shared_store",
]
