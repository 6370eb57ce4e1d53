"""Completion handles: wait for an accepted input to reach a terminal state.

Pending futures live in a :class:`CompletionRegistry` outside the session
actors, so a host waiting on an input never keeps its session's actor alive:
the actor may be passivated and restarted, and whichever incarnation of it
records the terminal event resolves the future.
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


class CompletionHandle:
    """A waiter on one input. ``wait()`` blocks for the outcome; ``future`` composes."""

    __slots__ = ("_future", "input_id")

    def __init__(self, input_id: uuid.UUID, future: Future[CompletionOutcome]) -> None:
        self.input_id = input_id
        self._future = future

    @property
    def future(self) -> Future[CompletionOutcome]:
        """A ``concurrent.futures.Future`` resolving to the :class:`CompletionOutcome`."""
        return self._future

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> CompletionOutcome:
        """Block until the input is terminal; :class:`CompletionWaitError` on timeout or close."""
        try:
            return self._future.result(timeout)
        except CompletionWaitError:
            raise  # channel_closed; a TimeoutError too, so it must not be taken for one
        except FutureTimeout:
            raise CompletionWaitError(
                "timeout", f"input {self.input_id} not terminal after {timeout} s"
            ) from None

    def __repr__(self) -> str:
        state = "done" if self._future.done() else "pending"
        return f"CompletionHandle({self.input_id}, {state})"


class CompletionRegistry:
    """Pending completion futures keyed by input id, shared by all session actors.

    Held weakly: a future lives as long as some handle (or a host composing
    ``handle.future``) holds it, so inputs nobody waits for cost nothing once
    their handles are dropped. An input's outcome is always derivable from
    the log later (``session.completion(id)``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: weakref.WeakValueDictionary[uuid.UUID, Future[CompletionOutcome]] = (
            weakref.WeakValueDictionary()
        )
        self._closed = False

    def handle(self, input_id: uuid.UUID, outcome: CompletionOutcome | None) -> CompletionHandle:
        """A handle for ``input_id``: resolved now when ``outcome`` is given, else pending."""
        if outcome is not None:
            done: Future[CompletionOutcome] = Future()
            done.set_result(outcome)
            return CompletionHandle(input_id, done)
        with self._lock:
            fut = self._pending.get(input_id)
            if fut is None:
                fut = Future()
                if self._closed:
                    fut.set_exception(_closed_error())
                else:
                    self._pending[input_id] = fut
        return CompletionHandle(input_id, fut)

    def resolve(self, input_id: uuid.UUID, outcome: CompletionOutcome) -> None:
        """Deliver ``outcome`` to every waiter on ``input_id`` (a no-op when none wait)."""
        with self._lock:
            fut = self._pending.pop(input_id, None)
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Fail every pending waiter with ``channel_closed``: the runtime is going away."""
        with self._lock:
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
        for fut in pending:
            if not fut.done():
                fut.set_exception(_closed_error())


def _closed_error() -> CompletionWaitError:
    return CompletionWaitError(
        "channel_closed", "the runtime was closed before the input completed"
    )
