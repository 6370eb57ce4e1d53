"""Waits for operations to end (``session.wait_operations``), kept outside the session actors.

As with input completions (``_completion``), a host waiting on operations never
keeps the session's actor alive: whichever incarnation of the actor makes an
operation terminal durably settles the waits on it. A wait is registered
before the session's registry is read, so an operation that ends in between
is seen by one or the other.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, InvalidStateError

from meerkat_runtime.errors import CompletionWaitError
from meerkat_runtime.events.operations import OperationRecord

__all__ = ["OperationWait", "OperationWatchers"]


class OperationWait:
    """One wait-all: resolves with the terminal records of ``ids``, in that order."""

    __slots__ = ("done", "future", "ids", "session_id")

    def __init__(self, session_id: str, ids: Sequence[str]) -> None:
        self.session_id = session_id
        self.ids = tuple(ids)
        self.done: dict[str, OperationRecord] = {}
        self.future: Future[list[OperationRecord]] = Future()

    def _resolve(self, record: OperationRecord) -> bool:
        """Record ``record``; True when this made every operation terminal."""
        if record.operation_id not in self.ids or self.future.done():
            return False
        self.done[record.operation_id] = record
        return len(self.done) == len(self.ids)


class OperationWatchers:
    """Pending operation waits keyed by (session id, operation id), shared by all actors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], list[OperationWait]] = {}
        self._closed = False

    def watch(self, session_id: str, ids: Sequence[str]) -> OperationWait:
        """Register a wait on ``ids`` (distinct) of ``session_id``."""
        wait = OperationWait(session_id, ids)
        with self._lock:
            if self._closed:
                wait.future.set_exception(_closed_error())
                return wait
            for op_id in wait.ids:
                self._pending.setdefault((session_id, op_id), []).append(wait)
        return wait

    def forget(self, wait: OperationWait) -> None:
        """Unregister ``wait`` (answered, timed out or cancelled)."""
        with self._lock:
            self._unlink(wait)

    def settle(self, session_id: str, records: Iterable[OperationRecord]) -> None:
        """Deliver durable terminal ``records`` of ``session_id`` to the waits on them."""
        finished: list[OperationWait] = []
        with self._lock:
            if not self._pending:
                return
            for record in records:
                for wait in self._pending.get((session_id, record.operation_id), ()):
                    if wait._resolve(record):
                        finished.append(wait)
            for wait in finished:
                self._unlink(wait)
        for wait in finished:
            _finish(wait)

    def resolve_known(self, wait: OperationWait, records: Iterable[OperationRecord]) -> None:
        """Resolve ``wait`` with records already read as terminal (after registering it)."""
        all_done = False
        with self._lock:
            for record in records:
                all_done = wait._resolve(record) or all_done
            if all_done:
                self._unlink(wait)
        if all_done:
            _finish(wait)

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pending.values())

    def close(self) -> None:
        """Fail every pending wait with ``channel_closed``: the runtime is going away."""
        with self._lock:
            self._closed = True
            waits = {id(w): w for ws in self._pending.values() for w in ws}
            self._pending.clear()
        for wait in waits.values():
            if not wait.future.done():
                wait.future.set_exception(_closed_error())

    def _unlink(self, wait: OperationWait) -> None:
        for op_id in wait.ids:
            key = (wait.session_id, op_id)
            waits = self._pending.get(key)
            if waits is None:
                continue
            with contextlib.suppress(ValueError):
                waits.remove(wait)
            if not waits:
                del self._pending[key]


def _finish(wait: OperationWait) -> None:
    if not wait.future.done():
        # An asyncio waiter may have cancelled the future meanwhile.
        with contextlib.suppress(InvalidStateError):
            wait.future.set_result([wait.done[i] for i in wait.ids])


def _closed_error() -> CompletionWaitError:
    return CompletionWaitError(
        "channel_closed", "the runtime was closed before the operations ended"
    )
