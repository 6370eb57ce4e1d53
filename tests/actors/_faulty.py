"""A fault-injecting event store for supervision and admission tests.

:func:`faulty_store` opens a real store (memory:// or SQLite) and wraps four
of its methods on the instance (``append``, ``submit_append``, the pipelined
append of accepts, ``read_session``, ``load_snapshot``) so a test can fail or
hold them on demand, in the caller's thread, before anything is queued.
Everything else is the real backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from meerkat_runtime import EventStore, StoreError, open_store
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import NewEvent, RecordedEvent, Snapshot
from meerkat_runtime.store._base import AppendTicket


class Faults:
    """Switches for the faults of one store (all off at first)."""

    def __init__(self) -> None:
        self.fail_appends = threading.Event()
        self.fail_reads = threading.Event()
        self.fail_topics: set[str] = set()
        self.fail_topic_budget = 0
        self.hold_appends = threading.Event()
        self.hold_sessions: set[str] = set()  # empty: hold every session
        self.fail_sessions: set[str] = set()  # empty: fail_appends fails every session
        self.append_delay = 0.0  # seconds each append takes longer (a slow disk)
        self.release_appends = threading.Event()
        self.append_held = threading.Event()
        self.read_attempts = 0
        self.append_failures = 0
        self.lock = threading.Lock()

    def clear(self) -> None:
        self.fail_appends.clear()
        self.fail_reads.clear()
        self.fail_topic_budget = 0
        self.release_appends.set()


def faulty_store(url: str, **options: Any) -> tuple[EventStore, Faults]:
    """Open ``url`` as a real store and install :class:`Faults` on it."""
    store = open_store(url, codec=event_codec(), **options)
    faults = Faults()
    real_append = store.append
    real_read = store.read_session
    real_snapshot = store.load_snapshot
    real_submit = store.submit_append

    def before_append(session_id: str, events: Sequence[NewEvent]) -> None:
        if faults.append_delay:
            time.sleep(faults.append_delay)
        held = not faults.hold_sessions or session_id in faults.hold_sessions
        if faults.hold_appends.is_set() and held:
            faults.append_held.set()
            faults.release_appends.wait(30)
        with faults.lock:
            failing = not faults.fail_sessions or session_id in faults.fail_sessions
            if faults.fail_appends.is_set() and failing:
                faults.append_failures += 1
                raise StoreError("injected append failure (disk on fire)")
            if faults.fail_topic_budget > 0 and any(e.topic in faults.fail_topics for e in events):
                faults.fail_topic_budget -= 1
                faults.append_failures += 1
                raise StoreError("injected append failure for " + ",".join(faults.fail_topics))

    def append(
        session_id: str, expected_version: int, events: Sequence[NewEvent], **kw: Any
    ) -> list[RecordedEvent]:
        before_append(session_id, events)
        return real_append(session_id, expected_version, events, **kw)

    def submit_append(
        session_id: str, expected_version: int, events: Sequence[NewEvent], **kw: Any
    ) -> AppendTicket:
        before_append(session_id, events)
        return real_submit(session_id, expected_version, events, **kw)

    def read_session(
        session_id: str, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        if faults.fail_reads.is_set():
            raise StoreError("injected read failure")
        return real_read(session_id, after_version, limit)

    def load_snapshot(session_id: str) -> Snapshot | None:
        with faults.lock:
            faults.read_attempts += 1
        if faults.fail_reads.is_set():
            raise StoreError("injected snapshot read failure")
        return real_snapshot(session_id)

    store.append = append  # type: ignore[method-assign]
    store.submit_append = submit_append  # type: ignore[method-assign]
    store.read_session = read_session  # type: ignore[method-assign]
    store.load_snapshot = load_snapshot  # type: ignore[method-assign]
    return store, faults
