"""The live executor calls of a runtime, by session: what fences a call to its run.

Shared by every actor of a runtime (an actor may passivate and restart while a
call it started is still executing), so whether a session may start a new run
never depends on an actor instance's memory. See ``_executor`` for the
guarantees this table enforces.
"""

from __future__ import annotations

import math
import threading
import time
import uuid

from meerkat_runtime.actors._executor import Interrupt, RunRequest

__all__ = ["CallTable", "LiveCall"]


class LiveCall:
    """One executor call that has not returned yet."""

    __slots__ = ("cancelled_at", "request")

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.cancelled_at: float | None = None


class CallTable:
    """Live calls by session and run id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_session: dict[str, dict[uuid.UUID, LiveCall]] = {}

    def add(self, request: RunRequest) -> None:
        with self._lock:
            calls = self._by_session.setdefault(request.session_id, {})
            calls[request.run_id] = LiveCall(request)

    def finish(self, session_id: str, run_id: uuid.UUID) -> LiveCall | None:
        """The call returned: forget it (None if it was not live)."""
        with self._lock:
            calls = self._by_session.get(session_id)
            if calls is None:
                return None
            call = calls.pop(run_id, None)
            if not calls:
                del self._by_session[session_id]
            return call

    def live(self, session_id: str) -> bool:
        # One dict lookup (atomic in CPython); asked after every message, so no lock.
        return session_id in self._by_session

    def count(self) -> int:
        with self._lock:
            return sum(len(c) for c in self._by_session.values())

    def cancel(self, session_id: str, reason: str, keep: uuid.UUID | None = None) -> int:
        """Signal every live call of the session but ``keep``'s (the run the log still has)."""
        signalled = []
        with self._lock:
            now = time.monotonic()
            for run_id, call in self._by_session.get(session_id, {}).items():
                if run_id != keep and call.cancelled_at is None:
                    call.cancelled_at = now
                    signalled.append(call)
        for call in signalled:
            call.request.cancel.cancel(reason)
        return len(signalled)

    def cancel_all(self, reason: str) -> int:
        with self._lock:
            sessions = list(self._by_session)
        return sum(self.cancel(sid, reason) for sid in sessions)

    def wait_before_run(self, session_id: str, grace: float | None) -> float | None:
        """None when the session may start a run now; else how long to wait (``inf``: until
        a call returns). A call still live blocks new runs until it returns, or until
        ``grace`` seconds passed since it was told to cancel."""
        with self._lock:
            calls = self._by_session.get(session_id)
            if not calls:
                return None
            now = time.monotonic()
            wait = 0.0
            for call in calls.values():
                if call.cancelled_at is None or grace is None:
                    return math.inf
                wait = max(wait, call.cancelled_at + grace - now)
            return wait if wait > 0 else None

    def deliver(self, session_id: str, interrupt: Interrupt) -> bool:
        """Hand an interrupt to the session's live call that was not told to cancel."""
        with self._lock:
            live = [
                c for c in self._by_session.get(session_id, {}).values() if c.cancelled_at is None
            ]
        if len(live) != 1:
            return False
        live[0].request.interrupts.put(interrupt)
        return True
