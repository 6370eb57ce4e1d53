"""The ``memory://`` backend: eventsourcing's POPO recorder, nothing survives the process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.popo import POPOApplicationRecorder

from meerkat_runtime.store._base import EventStore, Fence, StoreOptions
from meerkat_runtime.store._group_commit import Row
from meerkat_runtime.store._mapper import EventCodec
from meerkat_runtime.store._private_sql import PrivateSQLite

__all__ = ["MemoryEventStore"]


class _MemoryDatabase:
    """What a memory store holds; shared by the stores opened on one ``memory://<name>``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.events = POPOApplicationRecorder()
        # The POPO recorder does not give a session's positions back on select,
        # so every store on this database keeps this index while inserting.
        self.positions: dict[str, list[int]] = {}
        self.session_order: list[str] = []
        self.snapshots: dict[str, tuple[int, bytes]] = {}
        self.read_models = PrivateSQLite()


_named: Final[dict[str, _MemoryDatabase]] = {}
_named_lock: Final = threading.Lock()


def _database(name: str) -> _MemoryDatabase:
    if not name:
        return _MemoryDatabase()
    with _named_lock:
        return _named.setdefault(name, _MemoryDatabase())


class MemoryEventStore(EventStore):
    """In-process store. ``memory://`` is private to the instance; stores opened on
    ``memory://<name>`` in one process share their data until the process exits
    (like several processes on one database: handy for tests of recovery).
    """

    in_memory = True
    # The log lives in eventsourcing's POPO recorder, the read models in a private SQLite.
    _unavailable_errors = (OperationalError, InterfaceError, *PrivateSQLite.unavailable_errors)
    _database_errors = (PersistenceError, *PrivateSQLite.database_errors)

    def __init__(
        self,
        *,
        name: str,
        url: str,
        codec: EventCodec,
        incarnation: str,
        options: StoreOptions,
    ) -> None:
        super().__init__(url=url, codec=codec, incarnation=incarnation, options=options)
        self._db = _database(name)
        self._start()

    def _insert(self, stored: Sequence[StoredEvent], fences: Sequence[Fence] = ()) -> list[int]:
        db = self._db
        with db.lock:
            ids = db.events.insert_events(stored)
            assert ids is not None
            for event, position in zip(stored, ids, strict=True):
                session_id = str(event.originator_id)
                if event.originator_version == 1:
                    db.session_order.append(session_id)
                db.positions.setdefault(session_id, []).append(position)
            return list(ids)

    def _select_session(self, session_id: str, after_version: int, limit: int | None) -> list[Row]:
        db = self._db
        with db.lock:
            positions = db.positions.get(session_id)
            if positions is None:  # the POPO recorder would add an empty entry on select
                return []
            events = db.events.select_events(session_id, gt=after_version, limit=limit)
            return [
                (
                    positions[e.originator_version - 1],
                    session_id,
                    e.originator_version,
                    e.topic,
                    e.state,
                )
                for e in events
            ]

    def _select_all(self, after_position: int, limit: int, topics: list[str]) -> list[Row]:
        notifications = self._db.events.select_notifications(
            after_position, limit, topics=topics, inclusive_of_start=False
        )
        return [
            (n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
            for n in notifications
        ]

    def _current_version(self, session_id: str) -> int:
        with self._db.lock:
            return len(self._db.positions.get(session_id, ()))

    def _max_position(self) -> int:
        return self._db.events.max_notification_id() or 0

    def _session_ids(self) -> list[str]:
        with self._db.lock:
            return list(self._db.session_order)

    def _put_snapshot(self, session_id: str, version: int, state: bytes) -> None:
        with self._db.lock:
            current = self._db.snapshots.get(session_id)
            if current is None or current[0] <= version:
                self._db.snapshots[session_id] = (version, state)

    def _get_snapshot(self, session_id: str) -> tuple[int, bytes] | None:
        with self._db.lock:
            return self._db.snapshots.get(session_id)

    def _sql_transaction(self) -> AbstractContextManager[Any]:
        """A transaction on this database's private in-memory SQLite read-model database."""
        return self._db.read_models.transaction()

    def _close_backend(self) -> None:
        pass  # the data belongs to the (possibly shared) database, not to this instance
