"""Completion handles: wait for an accepted input to reach a terminal state.

Pending completions live in a :class:`CompletionRegistry` outside the session
actors, so a host waiting on an input never keeps its session's actor alive:
the actor may be passivated and restarted, and whichever incarnation of it
records the terminal event resolves the waiters.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from meerkat_runtime.errors import CompletionWaitError
from meerkat_runtime.events.completion import CompletionOutcome

__all__ = ["CompletionHandle", "CompletionRegistry"]


class _Waiters:
    """What the handles on one input share: its outcome (or error) once known, a future once asked.

    The ``Future`` (a Python ``Condition`` inside) is only made when a host
    waits or composes (``wait()``, ``future``): most accepted inputs are
    never waited on by the accepting call.
    """

    __slots__ = ("__weakref__", "error", "future", "outcome")

    def __init__(
        self, outcome: CompletionOutcome | None = None, error: BaseException | None = None
    ) -> None:
        self.outcome = outcome
        self.error = error
        self.future: _Future | None = None


class _Future(Future[CompletionOutcome]):
    """A completion future; it keeps its input registered while a host holds only it."""

    def __init__(self, waiters: _Waiters) -> None:
        super().__init__()
        self.waiters = waiters


class CompletionHandle:
    """A waiter on one input. ``wait()`` blocks for the outcome; ``future`` composes."""

    __slots__ = ("_lock", "_waiters", "input_id")

    def __init__(self, input_id: uuid.UUID, waiters: _Waiters, lock: threading.Lock) -> None:
        self.input_id = input_id
        self._waiters = waiters
        self._lock = lock  # the registry's: settles the race of making vs resolving the future

    @property
    def future(self) -> Future[CompletionOutcome]:
        """A ``concurrent.futures.Future`` resolving to the :class:`CompletionOutcome`."""
        w = self._waiters
        with self._lock:
            fut = w.future
            if fut is None:
                fut = w.future = _Future(w)
                if w.outcome is not None:
                    fut.set_result(w.outcome)
                elif w.error is not None:
                    fut.set_exception(w.error)
        return fut

    def done(self) -> bool:
        """True once the outcome (or a wait error such as ``channel_closed``) is known."""
        w = self._waiters
        return w.outcome is not None or w.error is not None

    def wait(self, timeout: float | None = None) -> CompletionOutcome:
        """Block until the input is terminal; :class:`CompletionWaitError` on timeout or close."""
        w = self._waiters
        if w.outcome is not None:
            return w.outcome
        try:
            return self.future.result(timeout)
        except CompletionWaitError:
            raise  # channel_closed; a TimeoutError too, so it must not be taken for one
        except FutureTimeout:
            raise CompletionWaitError(
                "timeout", f"input {self.input_id} not terminal after {timeout} s"
            ) from None

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"CompletionHandle({self.input_id}, {state})"


class CompletionRegistry:
    """Pending completions keyed by (session id, input id), shared by all session actors.

    Input ids are unique within a session only: the same id accepted by two sessions
    is two inputs, each resolving its own waiters.

    Held weakly: an input's entry lives as long as some handle (or a host
    composing ``handle.future``) holds it, so inputs nobody waits for cost
    nothing once their handles are dropped. An input's outcome is always
    derivable from the log later (``session.completion(id)``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: weakref.WeakValueDictionary[tuple[str, uuid.UUID], _Waiters] = (
            weakref.WeakValueDictionary()
        )
        self._closed = False

    def handle(
        self, session_id: str, input_id: uuid.UUID, outcome: CompletionOutcome | None
    ) -> CompletionHandle:
        """A handle for ``input_id`` of ``session_id``: resolved now when ``outcome`` is
        given, else pending."""
        if outcome is not None:
            return CompletionHandle(input_id, _Waiters(outcome), self._lock)
        key = (session_id, input_id)
        with self._lock:
            waiters = self._pending.get(key)
            if waiters is None:
                if self._closed:
                    waiters = _Waiters(error=_closed_error())
                else:
                    waiters = self._pending[key] = _Waiters()
        return CompletionHandle(input_id, waiters, self._lock)

    def resolve(self, session_id: str, input_id: uuid.UUID, outcome: CompletionOutcome) -> None:
        """Deliver ``outcome`` to every waiter on ``input_id`` of ``session_id`` (a no-op
        when none wait)."""
        with self._lock:
            waiters = self._pending.pop((session_id, input_id), None)
            if waiters is None:
                return
            waiters.outcome = outcome
            fut = waiters.future
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Fail every pending waiter with ``channel_closed``: the runtime is going away."""
        futures: list[_Future] = []
        with self._lock:
            self._closed = True
            for waiters in list(self._pending.values()):
                waiters.error = _closed_error()
                if waiters.future is not None:
                    futures.append(waiters.future)
            self._pending.clear()
        for fut in futures:
            if not fut.done():
                fut.set_exception(_closed_error())


def _closed_error() -> CompletionWaitError:
    return CompletionWaitError(
        "channel_closed", "the runtime was closed before the input completed"
    )
