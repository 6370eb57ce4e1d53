"""Routing, passivation and bounded admission for session actors.

Session actors run on a few session hosts (``_host``); the registry adds:

* **Routing.** Every message for a session (host calls, executor results,
  timers) goes through :meth:`SessionRegistry.send`, which creates the
  session's actor on first use. So a result for a passivated session simply
  restarts it; its state refolds from the log.
* **Passivation.** Idle actors (no message in flight, no run in flight) stop
  after ``idle_timeout`` seconds, and the least recently used idle one stops
  when ``max_live`` actors are live; a stopping actor drains its appends and
  releases its lease on its host, after the messages it already had. Live
  sessions cost memory only: no thread is ever started per session.
* **Bounded admission.** At most ``max_pending`` messages wait for one
  session; past that ``accept`` raises :class:`Overloaded` at once and writes
  nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from meerkat_runtime.actors._host import Hosts, default_host_count
from meerkat_runtime.actors._messages import Call, Message, Passivate, Reply
from meerkat_runtime.actors._services import Services
from meerkat_runtime.actors._session import SessionActor
from meerkat_runtime.errors import MeerkatRuntimeError, Overloaded
from meerkat_runtime.telemetry import log_ids

__all__ = ["SessionRegistry"]

log = logging.getLogger(__name__)


class _Entry:
    __slots__ = ("actor", "busy", "inflight", "last_used")

    def __init__(self, actor: SessionActor) -> None:
        self.actor = actor
        self.inflight = 0
        self.busy = False
        self.last_used = time.monotonic()


class SessionRegistry:
    """Live session actors by id, with passivation and bounded admission."""

    def __init__(
        self,
        services: Services,
        *,
        max_live: int = 1000,
        idle_timeout: float = 60.0,
        max_pending: int = 1000,
        session_threads: int | None = None,
    ) -> None:
        if max_live < 1 or max_pending < 1 or idle_timeout <= 0:
            raise ValueError("max_live and max_pending must be >= 1, idle_timeout > 0")
        self.svc = services
        self.hosts = Hosts(services.store, session_threads or default_host_count())
        self.max_live = max_live
        self.idle_timeout = idle_timeout
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._closed = False
        self.started = 0
        self.stopped = 0
        services.scheduler.every(min(idle_timeout / 2, 1.0), self.sweep_idle)

    # ------------------------------------------------------------ sending

    def send(self, session_id: str, message: Message, *, admission: bool = False) -> Future[Any]:
        """Queue a message for the session's actor (starting it if needed); the future gets the reply."""
        reply = self.post(session_id, message, admission)
        future: Future[Any] = Future()

        def settle(r: Reply) -> None:
            error = r.exception()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(r.result())

        reply.add_done_callback(settle)
        return future

    def post(self, session_id: str, message: Message, admission: bool = False) -> Reply:
        """Queue a message for the session's actor (starting it if needed); never blocks.

        ``Overloaded`` at once when ``admission`` and the session has ``max_pending``
        commands waiting. The actor settles the returned :class:`Reply`."""
        call = Call(message)
        to_stop: list[SessionActor] = []
        with self._lock:
            if self._closed:
                raise MeerkatRuntimeError("the runtime is closed")
            entry = self._entries.get(session_id)
            if entry is None:
                to_stop = self._evict_for_room()
                entry = _Entry(SessionActor(session_id, self.svc, self))
                self._entries[session_id] = entry
                self.started += 1
            elif admission and entry.inflight >= self.max_pending:
                raise Overloaded(
                    f"session {session_id!r} has {entry.inflight} pending commands "
                    f"(limit {self.max_pending}); retry later"
                )
            else:
                self._entries.move_to_end(session_id)
            entry.inflight += 1
            entry.last_used = time.monotonic()
            # Under the lock: a passivation posted later lands behind this message.
            self.hosts.post(entry.actor, call)
        for actor in to_stop:
            self._passivate(actor)
        return call.reply

    def call(self, session_id: str, message: Message, *, admission: bool = False) -> Any:
        """Send and wait for the reply; the actor's exception is raised here."""
        return self.post(session_id, message, admission).result()

    def tell(self, session_id: str, message: Message) -> None:
        """Send without waiting (executor results, timers); errors are logged."""
        try:
            reply = self.post(session_id, message)
        except MeerkatRuntimeError:
            return  # closed: the log keeps the run as started; recovery closes it later

        def report(f: Reply) -> None:
            exc = f.exception()
            if exc is not None:
                log.warning(
                    "session %s: %s failed: %s",
                    session_id,
                    type(message).__name__,
                    exc,
                    extra=log_ids(session_id),
                )

        reply.add_done_callback(report)

    def tell_if_live(self, session_id: str, message: Message) -> None:
        """Like :meth:`tell`, but only to an actor that is running now."""
        with self._lock:
            live = session_id in self._entries
        if live:
            self.tell(session_id, message)

    def post_if_live(self, session_id: str, message: Message) -> Reply | None:
        """Like :meth:`post`, but only to an actor that is in memory now (None otherwise:
        nothing is started or loaded)."""
        with self._lock:
            if self._closed:
                raise MeerkatRuntimeError("the runtime is closed")
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            call = Call(message)
            self._entries.move_to_end(session_id)
            entry.inflight += 1
            entry.last_used = time.monotonic()
            self.hosts.post(entry.actor, call)
        return call.reply

    def message_done(self, session_id: str, busy: bool) -> None:
        """Called by the actor after each message: one fewer in flight."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None:
                entry.inflight -= 1
                entry.busy = busy

    # ------------------------------------------------------------ passivation

    def _evictable(self, entry: _Entry) -> bool:
        return entry.inflight == 0 and not entry.busy

    def _evict_for_room(self) -> list[SessionActor]:
        """Remove least recently used idle entries until one more fits (lock held)."""
        out: list[SessionActor] = []
        if len(self._entries) < self.max_live:
            return out
        for sid in list(self._entries):
            entry = self._entries[sid]
            if self._evictable(entry):
                del self._entries[sid]
                out.append(entry.actor)
                self.stopped += 1
                if len(self._entries) < self.max_live:
                    break
        return out

    def sweep_idle(self) -> None:
        """Stop actors idle longer than ``idle_timeout``."""
        cutoff = time.monotonic() - self.idle_timeout
        to_stop: list[SessionActor] = []
        with self._lock:
            for sid in list(self._entries):
                entry = self._entries[sid]
                if entry.last_used > cutoff:
                    break  # LRU order: the rest were used more recently
                if self._evictable(entry):
                    del self._entries[sid]
                    to_stop.append(entry.actor)
                    self.stopped += 1
        for actor in to_stop:
            self._passivate(actor)

    def _passivate(self, actor: SessionActor) -> Reply:
        """Stop ``actor`` on its host after the messages it already has."""
        call = Call(Passivate())
        self.hosts.post(actor, call)
        return call.reply

    def live_count(self) -> int:
        with self._lock:
            return len(self._entries)

    def live_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def passivations(self) -> int:
        """Actors stopped (idle, or evicted for room) since the registry started."""
        return self.stopped

    def queued_inputs(self) -> tuple[int, int]:
        """Inputs waiting in the queue and steer lanes of the live sessions (for a gauge:
        read without the actors' cooperation, so a snapshot, not a fence)."""
        with self._lock:
            actors = [e.actor for e in self._entries.values()]
        queue = steer = 0
        for actor in actors:
            st = actor.state
            if st is not None:
                queue += len(st.queue)
                steer += len(st.steer_queue)
        return queue, steer

    # ------------------------------------------------------------ shutdown

    def close(self, timeout: float = 10.0) -> None:
        """Stop starting runs, let runs in flight finish (bounded), then stop every actor."""
        self.svc.closing.set()
        deadline = time.monotonic() + timeout
        while self.svc.active_runs and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            self._closed = True
            actors = [e.actor for e in self._entries.values()]
            self._entries.clear()
        stopping = [self._passivate(actor) for actor in actors]
        for reply in stopping:
            try:
                reply.result(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("an actor did not stop within the close timeout")
                break
        self.hosts.stop(timeout=max(0.1, deadline - time.monotonic()))
