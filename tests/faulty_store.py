"""The test suite's one fault-injecting event store: a real backend with hooks (tests only).

Every test that makes the store fail, stall or hold goes through here instead of
patching the store's private methods itself: :class:`FaultInjector` hooks one
real store instance, :func:`faulty_store` opens one with a :class:`Faults`
switchboard installed.

Modelled on Akka's PersistenceTestKit: every storage operation the runtime
makes is described as a :class:`Call` and handed to the current *policy*,
which answers ``None`` (let it through) or a :class:`Fault`. Policies are
plain callables, so they compose::

    faults = FaultInjector(store)                       # store: any EventStore
    faults.policy = fail_next(2, ops={"commit"})        # the next two commits fail
    faults.policy = fail_randomly(0.1, seed=7)          # any operation, 10 %
    faults.policy = fail_when(lambda c: c.session_id == "s-1", Fault("timeout", 0.05))
    with faults.using(fail_always(ops={"read"})):       # only inside the block
        ...
    faults.clear()                                      # back to the real store

Operations (``Call.op``), each hooked where the real backend does the work,
*below* the store's own error handling, so an injected fault travels the
same path as a real database error (wrapped in :class:`StoreError`, every
caller of a failed group commit told, and so on):

* ``append``: the caller-facing ``store.append`` (before anything is queued);
  raises :class:`StoreError` as the store's contract says.
* ``commit``: the insert transaction of a (group) commit, on the writer thread.
* ``read``: reading a session's events or its current version.
* ``read_all``: reading the store-wide log (projections) or its head position.
* ``load_snapshot`` / ``save_snapshot``: the snapshot table.
* ``list``: listing the sessions.
* ``projection``: a read-model transaction (``store.transaction()``).

Fault kinds (``Fault.kind``):

* ``error``: fail before doing anything (nothing written).
* ``timeout``: wait ``delay`` seconds, then fail as a statement timeout does.
* ``after``: do the operation (commit it), then fail: an acknowledgement lost
  after the commit, the case a client cannot tell from ``error``.
* ``drop``: call ``FaultInjector.on_drop`` (e.g. terminate the database
  connections), then let the operation meet whatever that left.

A policy runs in the calling thread before the operation, so it may also hold
the call (wait on an event) or slow it (sleep) before answering: that is how
:class:`Faults` holds appends and how a test holds the writer in a commit.

Errors are :class:`InjectedFault`, a subclass of eventsourcing's
``OperationalError`` (what a real database failure looks like down there),
with a message that says "injected".
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from meerkat_runtime.errors import StoreError
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import EventStore, NewEvent, RecordedEvent, open_store
from meerkat_runtime.store._eventsourcing import recorder_of

from .waiting import WAIT

__all__ = [
    "ALL_OPS",
    "Call",
    "Fault",
    "FaultInjector",
    "Faults",
    "FaultyInserts",
    "GatedCommits",
    "InjectedFault",
    "InsertFault",
    "Policy",
    "fail_always",
    "fail_next",
    "fail_randomly",
    "fail_when",
    "faulty_store",
    "first_of",
    "never",
]

Op = Literal[
    "append", "commit", "read", "read_all", "load_snapshot", "save_snapshot", "list", "projection"
]
ALL_OPS: frozenset[str] = frozenset(
    {"append", "commit", "read", "read_all", "load_snapshot", "save_snapshot", "list", "projection"}
)


class InjectedFault(OperationalError):
    """A fault injected by a :class:`FaultInjector` policy."""


@dataclass(frozen=True, slots=True)
class Call:
    """One storage operation about to happen."""

    op: str
    session_id: str | None = None
    topics: tuple[str, ...] = ()
    number: int = 0
    """1-based count of calls of this ``op`` so far (this one included)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """What happens to a call: ``error``, ``timeout`` (after ``delay``), ``after``, ``drop``."""

    kind: Literal["error", "timeout", "after", "drop"] = "error"
    delay: float = 0.0
    message: str | None = None
    """The error's text instead of the injector's own (e.g. what a driver would say)."""


Policy = Callable[[Call], Fault | None]


def never() -> Policy:
    """Every call goes through."""
    return lambda call: None


def fail_always(ops: Collection[str] = ALL_OPS, fault: Fault = Fault()) -> Policy:
    """Every call of ``ops`` fails."""
    return lambda call: fault if call.op in ops else None


def fail_next(n: int = 1, ops: Collection[str] = ALL_OPS, fault: Fault = Fault()) -> Policy:
    """The next ``n`` calls of ``ops`` fail, then everything goes through."""
    left = [n]
    lock = threading.Lock()

    def policy(call: Call) -> Fault | None:
        if call.op not in ops:
            return None
        with lock:
            if left[0] <= 0:
                return None
            left[0] -= 1
        return fault

    return policy


def fail_when(predicate: Callable[[Call], bool], fault: Fault = Fault()) -> Policy:
    """Calls matching ``predicate`` fail."""
    return lambda call: fault if predicate(call) else None


def fail_randomly(
    p: float,
    *,
    seed: int | str = 0,
    ops: Collection[str] = ALL_OPS,
    faults: Sequence[Fault] = (Fault(),),
) -> Policy:
    """Each call of ``ops`` fails with probability ``p``, with a fault drawn from ``faults``."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def policy(call: Call) -> Fault | None:
        if call.op not in ops:
            return None
        with lock:
            if rng.random() >= p:
                return None
            return rng.choice(list(faults))

    return policy


def first_of(*policies: Policy) -> Policy:
    """The first fault any of ``policies`` answers."""

    def policy(call: Call) -> Fault | None:
        for p in policies:
            fault = p(call)
            if fault is not None:
                return fault
        return None

    return policy


@dataclass
class _Stats:
    calls: Counter[str] = field(default_factory=Counter)
    injected: Counter[tuple[str, str]] = field(default_factory=Counter)


class FaultInjector:
    """Installs fault hooks on one store instance; ``policy`` decides each call."""

    def __init__(self, store: EventStore, policy: Policy | None = None) -> None:
        self.store = store
        self.policy: Policy = policy or never()
        self.on_drop: Callable[[], object] = lambda: None
        self.stats = _Stats()
        self._lock = threading.Lock()
        self._install()

    # -- control ----------------------------------------------------------------------------

    def clear(self) -> None:
        """Back to the real store: every call goes through."""
        self.policy = never()

    @contextmanager
    def using(self, policy: Policy) -> Iterator[FaultInjector]:
        """Apply ``policy`` inside the block only."""
        previous, self.policy = self.policy, policy
        try:
            yield self
        finally:
            self.policy = previous

    def injected(self, op: str | None = None, kind: str | None = None) -> int:
        """How many faults were injected (optionally of one op and/or kind)."""
        with self._lock:
            return sum(
                n
                for (o, k), n in self.stats.injected.items()
                if (op is None or o == op) and (kind is None or k == kind)
            )

    def calls(self, op: str) -> int:
        with self._lock:
            return self.stats.calls[op]

    # -- machinery --------------------------------------------------------------------------

    def _decide(
        self, op: str, session_id: str | None = None, topics: tuple[str, ...] = ()
    ) -> Fault | None:
        with self._lock:
            self.stats.calls[op] += 1
            number = self.stats.calls[op]
        fault = self.policy(Call(op, session_id, topics, number))
        if fault is not None:
            with self._lock:
                self.stats.injected[(op, fault.kind)] += 1
        return fault

    @staticmethod
    def _error(op: str, fault: Fault) -> InjectedFault:
        if fault.message is not None:
            return InjectedFault(fault.message)
        if fault.kind == "timeout":
            return InjectedFault(
                f"injected fault: {op} canceling statement due to statement timeout "
                f"(after {fault.delay} s)"
            )
        if fault.kind == "after":
            return InjectedFault(f"injected fault: {op} connection lost after the commit")
        return InjectedFault(f"injected fault: {op} failed ({fault.kind})")

    def _strike(
        self, op: str, session_id: str | None = None, topics: tuple[str, ...] = ()
    ) -> Fault | None:
        """The fault the operation must fail with, or None to go on. A "drop" has
        already dropped the connections and goes on; a "timeout" has waited."""
        fault = self._decide(op, session_id, topics)
        if fault is None or fault.kind == "drop":
            if fault is not None:
                self.on_drop()
            return None
        if fault.kind == "timeout":
            time.sleep(fault.delay)
        return fault

    def _wrap(
        self, op: str, real: Callable[..., Any], session_arg: bool = False
    ) -> Callable[..., Any]:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            session_id = args[0] if session_arg and args else None
            fault = self._strike(op, session_id)
            if fault is None:
                return real(*args, **kwargs)
            if fault.kind == "after":
                real(*args, **kwargs)
            raise self._error(op, fault)

        return hooked

    def _install(self) -> None:
        s: Any = self.store
        real_append = s.append
        real_submit = s.submit_append
        real_insert = s._insert
        real_transaction = s._sql_transaction

        def append(
            session_id: str, expected_version: int, events: Sequence[NewEvent], **kw: Any
        ) -> list[RecordedEvent]:
            fault = self._strike("append", session_id, tuple(e.topic for e in events))
            if fault is not None:
                if fault.kind == "after":
                    real_append(session_id, expected_version, events, **kw)
                raise StoreError(str(self._error("append", fault)))
            result: list[RecordedEvent] = real_append(session_id, expected_version, events, **kw)
            return result

        def submit_append(
            session_id: str, expected_version: int, events: Sequence[NewEvent], **kw: Any
        ) -> Any:
            # The pipelined accept path: the same "append" faults as append() above.
            fault = self._strike("append", session_id, tuple(e.topic for e in events))
            if fault is None:
                return real_submit(session_id, expected_version, events, **kw)
            error = StoreError(str(self._error("append", fault)))
            if fault.kind == "after":  # durable, but the caller hears it failed
                on_done: Callable[[BaseException | None], None] = kw.pop("on_done")
                return real_submit(
                    session_id,
                    expected_version,
                    events,
                    on_done=lambda e: on_done(e if e is not None else error),
                    **kw,
                )
            raise error

        def insert(stored: Sequence[Any], fences: Sequence[Any] = ()) -> list[int]:
            sessions = {str(e.originator_id) for e in stored}
            fault = self._strike(
                "commit",
                next(iter(sessions)) if len(sessions) == 1 else None,
                tuple(e.topic for e in stored),
            )
            if fault is not None:
                if fault.kind == "after":
                    real_insert(stored, fences)
                raise self._error("commit", fault)
            positions: list[int] = real_insert(stored, fences)
            return positions

        @contextmanager
        def transaction() -> Iterator[Any]:
            fault = self._decide("projection")
            if fault is not None and fault.kind in ("error", "timeout"):
                if fault.kind == "timeout":
                    time.sleep(fault.delay)
                raise self._error("projection", fault)
            if fault is not None and fault.kind == "drop":
                self.on_drop()
            with real_transaction() as cur:
                yield cur
            if fault is not None and fault.kind == "after":
                raise self._error("projection", fault)

        s.append = append
        s.submit_append = submit_append
        s._insert = insert
        # The backend's own transaction: the store maps the fault like a real driver error.
        s._sql_transaction = transaction
        s._select_session = self._wrap("read", s._select_session, session_arg=True)
        s._current_version = self._wrap("read", s._current_version, session_arg=True)
        s._select_all = self._wrap("read_all", s._select_all)
        s._max_position = self._wrap("read_all", s._max_position)
        s._session_ids = self._wrap("list", s._session_ids)
        s._get_snapshot = self._wrap("load_snapshot", s._get_snapshot, session_arg=True)
        s._put_snapshot = self._wrap("save_snapshot", s._put_snapshot, session_arg=True)


class Faults:
    """Switches for the faults of one store (all off at first), read by its policy.

    ``hold_appends`` blocks every append (of ``hold_sessions``, or of all sessions)
    in the caller's thread until ``release_appends`` is set, and sets ``append_held``
    meanwhile; ``fail_appends`` fails appends (of ``fail_sessions``, or all);
    ``fail_topics`` with ``fail_topic_budget`` fails that many appends carrying one
    of the topics; ``append_delay`` slows each append (a slow disk); ``fail_reads``
    fails session reads and snapshot loads.
    """

    def __init__(self) -> None:
        self.fail_appends = threading.Event()
        self.fail_reads = threading.Event()
        self.fail_topics: set[str] = set()
        self.fail_topic_budget = 0
        self.hold_appends = threading.Event()
        self.hold_sessions: set[str] = set()  # empty: hold every session
        self.fail_sessions: set[str] = set()  # empty: fail_appends fails every session
        self.append_delay = 0.0
        self.release_appends = threading.Event()
        self.append_held = threading.Event()
        self.lock = threading.Lock()
        self.injector: FaultInjector | None = None

    def clear(self) -> None:
        self.fail_appends.clear()
        self.fail_reads.clear()
        self.fail_topic_budget = 0
        self.release_appends.set()

    @property
    def append_failures(self) -> int:
        """Appends failed so far."""
        return self.injector.injected("append") if self.injector is not None else 0

    @property
    def read_attempts(self) -> int:
        """Snapshot loads attempted so far (each load of a session starts with one)."""
        return self.injector.calls("load_snapshot") if self.injector is not None else 0

    def __call__(self, call: Call) -> Fault | None:
        if call.op in ("read", "load_snapshot"):
            return Fault() if self.fail_reads.is_set() else None
        if call.op != "append":
            return None
        if self.append_delay:
            time.sleep(self.append_delay)
        held = not self.hold_sessions or call.session_id in self.hold_sessions
        if self.hold_appends.is_set() and held:
            self.append_held.set()
            self.release_appends.wait(WAIT)
        with self.lock:
            failing = not self.fail_sessions or call.session_id in self.fail_sessions
            if self.fail_appends.is_set() and failing:
                return Fault()
            if self.fail_topic_budget > 0 and set(call.topics) & self.fail_topics:
                self.fail_topic_budget -= 1
                return Fault()
        return None


def faulty_store(url: str, **options: Any) -> tuple[EventStore, Faults]:
    """Open ``url`` as a real runtime store with a :class:`Faults` switchboard on it."""
    store = open_store(url, codec=event_codec(), **options)
    faults = Faults()
    faults.injector = FaultInjector(store, faults)
    return store, faults


class GatedCommits:
    """Holds the store's writer in its first commit until :meth:`release`.

    While the writer is held, appends queue up and then go into one group.
    ``sizes`` records the number of events of every commit.
    """

    def __init__(self, store: EventStore) -> None:
        self.entered = threading.Event()
        self._released = threading.Event()
        self.sizes: list[int] = []
        FaultInjector(store, self._policy)

    def _policy(self, call: Call) -> Fault | None:
        if call.op == "commit":
            self.sizes.append(len(call.topics))
            if len(self.sizes) == 1:
                self.entered.set()
                assert self._released.wait(WAIT), "the test never released the writer"
        return None

    def release(self) -> None:
        self._released.set()


class InsertFault(RuntimeError):
    """What :class:`FaultyInserts` raises: a failure the store must not retry (no outage)."""


class FaultyInserts:
    """Makes the recorder fail inside its insert transaction while ``armed``.

    The one hook below the store's own transaction, on the eventsourcing recorder
    (reached through the ``recorder_of`` seam): it proves the store's transaction,
    not the recorder, decides what a failed commit leaves behind.

    On SQL backends it first really inserts half of the batch in the open
    transaction (and records how many rows that transaction then saw), so the
    test proves those rows are rolled back, not merely never written.
    Batches that do not touch a ``doomed-`` session pass untouched.
    """

    def __init__(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = threading.Event()
        self.rows_seen_in_transaction: list[int] = []
        recorder: Any = recorder_of(store)
        table = store.table_name("meerkat_events")
        count = f"SELECT count(*) AS n FROM {table} WHERE originator_id LIKE 'doomed-%'"

        def hit(stored_events: Sequence[StoredEvent]) -> bool:
            return self.armed.is_set() and any(
                str(e.originator_id).startswith("doomed-") for e in stored_events
            )

        if isinstance(recorder, SQLiteApplicationRecorder):
            sqlite_original = recorder._insert_events

            def sqlite_insert(c: Any, stored_events: Sequence[StoredEvent], **kw: Any) -> Any:
                if not hit(stored_events):
                    return sqlite_original(c, stored_events, **kw)
                sqlite_original(c, stored_events[: len(stored_events) // 2], **kw)
                c.execute(count)
                self.rows_seen_in_transaction.append(c.fetchone()[0])
                raise InsertFault("injected fault after some rows")

            monkeypatch.setattr(recorder, "_insert_events", sqlite_insert)
        elif isinstance(recorder, PostgresApplicationRecorder):
            # An append is one statement on an autocommit connection (FencedPostgresRecorder):
            # here, for a doomed batch, half of it really goes in through that statement inside
            # a transaction that then fails, as a failure inside the statement would.
            from meerkat_runtime.store._postgres import FencedPostgresRecorder

            assert isinstance(recorder, FencedPostgresRecorder)
            pg_original = recorder._append

            def pg_append(conn: Any, stored_events: Sequence[StoredEvent], fences: Any) -> Any:
                if not hit(stored_events):
                    return pg_original(conn, stored_events, fences)
                with conn.transaction():
                    pg_original(conn, stored_events[: len(stored_events) // 2], fences)
                    self.rows_seen_in_transaction.append(conn.execute(count).fetchone()["n"])
                    raise InsertFault("injected fault after some rows")

            monkeypatch.setattr(recorder, "_append", pg_append)
        else:
            assert isinstance(recorder, POPOApplicationRecorder)
            popo_original = recorder._assert_uniqueness

            # The POPO recorder has no transaction: it checks, then appends.
            def popo_check(stored_events: Sequence[StoredEvent], **kw: Any) -> None:
                if hit(stored_events):
                    raise InsertFault("injected fault before the write")
                popo_original(stored_events, **kw)

            monkeypatch.setattr(recorder, "_assert_uniqueness", popo_check)
