"""A policy-driven fault-injecting wrapper around a real event store (tests only).

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

from eventsourcing.persistence import OperationalError

from meerkat_runtime.errors import StoreError
from meerkat_runtime.store import EventStore, NewEvent, RecordedEvent

__all__ = [
    "ALL_OPS",
    "Call",
    "Fault",
    "FaultInjector",
    "InjectedFault",
    "Policy",
    "fail_always",
    "fail_next",
    "fail_randomly",
    "fail_when",
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
